// Network addresses: IP (v4, v6 with an optional zone), IP endpoints (Go's
// TCPAddr/UDPAddr) and Unix socket names (paths and Linux abstract names,
// written "@name"), printed in Go's formats: 127.0.0.1:80, [::1]:80,
// [fe80::1%eth0]:80, /run/x.sock, @name.
#pragma once

#include "weft/detail/cxx20.h"

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

namespace weft::net {

class IP {
 public:
  IP() = default;  // the invalid (empty) IP; see valid()
  static IP v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) noexcept;
  // `zone` should be one parse() accepts; to_sockaddr() refuses any other.
  static IP v6(const std::array<std::uint8_t, 16>& bytes, std::string zone = {});
  static IP loopback_v4() noexcept { return v4(127, 0, 0, 1); }
  static IP loopback_v6() noexcept;
  static IP any_v4() noexcept { return v4(0, 0, 0, 0); }
  static IP any_v6() noexcept;
  // Numeric forms only: dotted IPv4 (no leading zeros, as Go), IPv6 with
  // "::" and an IPv4 tail, an optional "%zone" on IPv6. A zone is an
  // interface name or a number; it must be non-empty (as Go's netip) and
  // free of NUL, other control characters, spaces, '%', '[' and ']'.
  // nullopt if invalid. What parses prints back (to_string) as a string that
  // parses to the same IP, alone or in an Addr's "[ip%zone]:port".
  static std::optional<IP> parse(std::string_view s);

  bool valid() const noexcept { return kind_ != Kind::invalid; }
  bool is_v4() const noexcept { return kind_ == Kind::v4; }
  bool is_v6() const noexcept { return kind_ == Kind::v6; }
  bool is_loopback() const noexcept;
  bool is_unspecified() const noexcept;
  // 4 bytes for v4, 16 for v6.
  const std::uint8_t* data() const noexcept { return bytes_.data(); }
  const std::string& zone() const noexcept { return zone_; }
  // "127.0.0.1", "::1", "fe80::1%eth0" (RFC 5952 compression); "<nil>" if invalid.
  std::string to_string() const;

  friend bool operator==(const IP& a, const IP& b) noexcept {
    return a.kind_ == b.kind_ && a.bytes_ == b.bytes_ && a.zone_ == b.zone_;
  }

 private:
  enum class Kind : std::uint8_t { invalid, v4, v6 };
  Kind kind_ = Kind::invalid;
  std::array<std::uint8_t, 16> bytes_{};
  std::string zone_;
};

// Their to_string(): "127.0.0.1", "[::1]:80", "/path".
class Addr;
std::ostream& operator<<(std::ostream& os, const IP& ip);
std::ostream& operator<<(std::ostream& os, const Addr& a);

// One address of any family. `network` is Go's Network(): "tcp", "udp",
// "unix", "unixgram"; an IP address also has a port, a Unix one a name.
class Addr {
 public:
  Addr() = default;
  static Addr ip_port(std::string network, IP ip, std::uint16_t port) {
    Addr a;
    a.network_ = std::move(network);
    a.ip_ = std::move(ip);
    a.port_ = port;
    return a;
  }
  // A path, "@name" for a Linux abstract name, or empty for an unnamed socket.
  static Addr unix_name(std::string network, std::string name) {
    Addr a;
    a.network_ = std::move(network);
    a.name_ = std::move(name);
    a.is_unix_ = true;
    return a;
  }
  // From a kernel address; v4-mapped IPv6 reads back as IPv4 (as Go). A
  // scope id reads as its interface's name, or as its number when the name
  // is not a valid zone (see IP::parse) or there is none.
  static Addr from_sockaddr(const sockaddr* sa, socklen_t len, std::string network);

  bool is_ip() const noexcept { return !is_unix_; }
  bool is_unix() const noexcept { return is_unix_; }
  const std::string& network() const noexcept { return network_; }
  const IP& ip() const noexcept { return ip_; }
  std::uint16_t port() const noexcept { return port_; }
  const std::string& name() const noexcept { return name_; }

  // "127.0.0.1:80", "[::1]:80", ":80" (no IP), "/path", "@abstract".
  std::string to_string() const;
  // Fills `ss` for a socket of `family` (AF_INET, AF_INET6, AF_UNIX; an IPv4
  // address on an AF_INET6 socket becomes v4-mapped). A zone becomes the
  // scope id of the interface it names (a name first, as Go, then a
  // number). 0 if it cannot, with the reason in `*why` when given:
  // net_errc::no_such_interface for a zone that names no interface (never
  // scope 0), net_errc::invalid_address for a zone parse() would refuse,
  // std::errc::address_family_not_supported for the wrong family,
  // std::errc::invalid_argument for a Unix name too long.
  socklen_t to_sockaddr(sockaddr_storage* ss, int family, std::error_code* why = nullptr) const;
  // The family this address needs: AF_INET, AF_INET6 or AF_UNIX.
  int family() const noexcept;

  friend bool operator==(const Addr& a, const Addr& b) noexcept {
    return a.is_unix_ == b.is_unix_ && a.ip_ == b.ip_ && a.port_ == b.port_ && a.name_ == b.name_;
  }

 private:
  std::string network_;
  IP ip_;
  std::uint16_t port_ = 0;
  std::string name_;
  bool is_unix_ = false;
};

}  // namespace weft::net
