// The address round-trip property, shared by the GoogleTest corpus
// (addr_test.cc) and the libFuzzer target (tests/fuzz/addr_fuzz.cc): what
// the parsers accept, the printers print in a form the parsers take back to
// the same address, and the kernel form names the same address.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "weft/net.h"

namespace weft::test {

// `s` with its bytes outside printable ASCII escaped, for failure messages.
inline std::string escaped(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out += ch;
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out + "\"";
}

// Empty if `input` keeps the property, else what broke it:
//  - if IP::parse accepts it, the IP prints as a string that parses back to
//    the same IP (and prints the same again);
//  - as host:port, that IP prints as an address split_host_port splits back
//    into the same IP and port, and resolve_addr takes back too;
//  - its sockaddr reads back as the same address when it has no zone; with
//    a zone, to_sockaddr either refuses it or sets a scope id other than 0
//    (an unknown zone must not silently become "no scope"), unless the zone
//    is the number 0;
//  - whatever split_host_port accepts, join_host_port joins into a string
//    that splits back into the same host and port.
inline std::string addr_round_trip_failure(std::string_view input) {
  using weft::net::Addr;
  using weft::net::IP;
  if (auto ip = IP::parse(input)) {
    const std::string printed = ip->to_string();
    const auto again = IP::parse(printed);
    if (!again) return "IP " + escaped(input) + " prints as " + escaped(printed) + ", which fails";
    if (!(*again == *ip)) {
      return "IP " + escaped(input) + " prints as " + escaped(printed) + ", which parses as " +
             escaped(again->to_string());
    }
    if (again->to_string() != printed) {
      return "IP " + escaped(input) + " prints as " + escaped(printed) + " and then as " +
             escaped(again->to_string());
    }
    for (const std::uint16_t port : {0, 80, 65535}) {
      const Addr a = Addr::ip_port("tcp", *ip, port);
      const std::string hp = a.to_string();
      auto split = weft::net::split_host_port(hp);
      if (!split) return "address " + escaped(hp) + ": " + escaped(split.error().to_string());
      const auto host = IP::parse(split->first);
      if (!host || !(*host == *ip)) {
        return "address " + escaped(hp) + " splits into host " + escaped(split->first);
      }
      auto p = weft::net::parse_port("tcp", split->second);
      if (!p || *p != port) return "address " + escaped(hp) + " loses its port";
      auto resolved = weft::net::resolve_addr("tcp", hp);
      if (!resolved) {
        return "resolve_addr(" + escaped(hp) + "): " + escaped(resolved.error().to_string());
      }
      if (!(*resolved == a)) {
        return "resolve_addr(" + escaped(hp) + ") gives " + escaped(resolved->to_string());
      }
      sockaddr_storage ss{};
      const socklen_t len = a.to_sockaddr(&ss, a.family());
      if (ip->zone().empty()) {
        if (len == 0) return "address " + escaped(hp) + " has no sockaddr";
        const Addr back = Addr::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len, "tcp");
        if (!(back == a)) {
          return "address " + escaped(hp) + " reads back from the kernel as " +
                 escaped(back.to_string());
        }
      } else if (len != 0) {
        const auto scope = reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_scope_id;
        const bool zero = ip->zone().find_first_not_of('0') == std::string::npos;
        if (scope == 0 && !zero) return "zone of " + escaped(hp) + " became scope 0";
      }
    }
  }
  if (auto split = weft::net::split_host_port(input)) {
    const std::string joined = weft::net::join_host_port(split->first, split->second);
    auto again = weft::net::split_host_port(joined);
    if (!again) {
      return "split_host_port(" + escaped(input) + ") joins as " + escaped(joined) +
             ", which does not split: " + escaped(again.error().to_string());
    }
    if (*again != *split) {
      return "split_host_port(" + escaped(input) + ") joins as " + escaped(joined) +
             ", which splits differently";
    }
  }
  return {};
}

}  // namespace weft::test
