// IP and Addr: parsing, Go's printed forms, sockaddr conversion; the net
// error category and OpError's text.
#include <net/if.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <cstdio>
#include <cstring>
#include <ostream>

#include "weft/net/addr.h"
#include "weft/net/result.h"

namespace weft::net {

// --- errors ---

namespace {

class NetCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "weft.net"; }
  std::string message(int value) const override {
    switch (static_cast<net_errc>(value)) {
      case net_errc::unexpected_eof:
        return "unexpected EOF";
      case net_errc::invalid_address:
        return "invalid address";
      case net_errc::unknown_network:
        return "unknown network";
      case net_errc::no_such_host:
        return "no such host";
      case net_errc::unknown_port:
        return "unknown port";
      case net_errc::not_pollable:
        return "not pollable";
      case net_errc::no_such_interface:
        return "no such network interface";
    }
    return "unknown net error " + std::to_string(value);
  }
};

}  // namespace

const std::error_category& net_category() noexcept {
  static const NetCategory category;
  return category;
}

std::string OpError::cause() const {
  std::string s;
  if (!syscall.empty()) {
    s += syscall;
    s += ": ";
  }
  if (!detail.empty()) {
    s += detail;
  } else if (err.category() == std::system_category() ||
             err.category() == std::generic_category()) {
    // Go's errno texts are the C library's with a lower-case first letter
    // ("connection refused", "broken pipe").
    std::string m = err.message();
    if (!m.empty() && m[0] >= 'A' && m[0] <= 'Z') m[0] = static_cast<char>(m[0] - 'A' + 'a');
    s += m;
  } else {
    s += err.message();
  }
  return s;
}

std::string OpError::to_string() const {
  if (op.empty()) return cause();
  std::string s = op;
  if (!net.empty()) {
    s += ' ';
    s += net;
  }
  if (source) {
    s += ' ';
    s += source->to_string();
  }
  if (addr) {
    s += source ? "->" : " ";
    s += addr->to_string();
  }
  s += ": ";
  s += cause();
  return s;
}

// --- IP ---

IP IP::v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) noexcept {
  IP ip;
  ip.kind_ = Kind::v4;
  ip.bytes_[0] = a;
  ip.bytes_[1] = b;
  ip.bytes_[2] = c;
  ip.bytes_[3] = d;
  return ip;
}

IP IP::v6(const std::array<std::uint8_t, 16>& bytes, std::string zone) {
  IP ip;
  ip.kind_ = Kind::v6;
  ip.bytes_ = bytes;
  ip.zone_ = std::move(zone);
  return ip;
}

IP IP::loopback_v6() noexcept {
  std::array<std::uint8_t, 16> b{};
  b[15] = 1;
  return v6(b);
}

IP IP::any_v6() noexcept {
  return v6({});
}

bool IP::is_loopback() const noexcept {
  if (is_v4()) return bytes_[0] == 127;
  if (!is_v6()) return false;
  for (int i = 0; i < 15; ++i) {
    if (bytes_[i] != 0) return false;
  }
  return bytes_[15] == 1;
}

bool IP::is_unspecified() const noexcept {
  const int n = is_v4() ? 4 : is_v6() ? 16 : 0;
  if (n == 0) return false;
  for (int i = 0; i < n; ++i) {
    if (bytes_[i] != 0) return false;
  }
  return true;
}

namespace {

// Dotted decimal, exactly four parts, each 0..255 without leading zeros.
bool parse_v4(std::string_view s, std::uint8_t* out) {
  int part = 0;
  std::size_t i = 0;
  while (part < 4) {
    if (i >= s.size() || s[i] < '0' || s[i] > '9') return false;
    const std::size_t start = i;
    int v = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      v = v * 10 + (s[i] - '0');
      if (v > 255) return false;
      ++i;
    }
    if (i - start > 1 && s[start] == '0') return false;  // Go rejects leading zeros
    out[part++] = static_cast<std::uint8_t>(v);
    if (part < 4) {
      if (i >= s.size() || s[i] != '.') return false;
      ++i;
    }
  }
  return i == s.size();
}

// The zones parse() accepts, and so the only ones to_string() prints: the
// printed form must parse back to the same zone, also inside an Addr's
// "[ip%zone]:port", and must be the name the kernel is given. Go's netip
// takes any non-empty zone, and so has the gaps this closes. Refused:
//  - NUL: a C string (if_nametoindex's argument) ends there, so "lo\0x"
//    would name "lo";
//  - other control characters and the space: no interface name has them
//    (Linux's dev_valid_name refuses whitespace), and printed they vanish
//    or split fields (an error message, /etc/hosts);
//  - '%': no interface name has one (the kernel takes it for a "%d" name
//    template), and URIs (RFC 6874) use it to escape the zone's own '%';
//  - '[' and ']': they delimit the host in "[ip%zone]:port", so the printed
//    address would not split back.
// Everything else, bytes above 0x7f included, may name an interface, and
// digits make a number.
bool valid_zone(std::string_view zone) {
  if (zone.empty()) return false;
  for (const char ch : zone) {
    const auto c = static_cast<unsigned char>(ch);
    if (c <= ' ' || c == 0x7f || c == '%' || c == '[' || c == ']') return false;
  }
  return true;
}

// The scope id `zone` names: an interface's name (tried first, as Go's
// zoneCache), else a decimal number that fits 32 bits. An unknown name is
// an error and never scope 0, which would make a link-local address fail
// with EINVAL far from the cause, or leave through any interface.
std::error_code zone_index(const std::string& zone, std::uint32_t* index) {
  if (!valid_zone(zone)) return net_errc::invalid_address;
  if (const unsigned i = if_nametoindex(zone.c_str()); i != 0) {
    *index = i;
    return {};
  }
  std::uint64_t v = 0;
  for (const char c : zone) {
    if (c < '0' || c > '9') return net_errc::no_such_interface;
    v = v * 10 + static_cast<unsigned>(c - '0');
    if (v > UINT32_MAX) return net_errc::no_such_interface;
  }
  *index = static_cast<std::uint32_t>(v);
  return {};
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool parse_v6(std::string_view s, std::array<std::uint8_t, 16>* out) {
  std::array<std::uint8_t, 16> b{};
  int ellipsis = -1;  // byte index where "::" was
  std::size_t i = 0;
  int n = 0;  // bytes filled
  if (s.size() >= 2 && s[0] == ':' && s[1] == ':') {
    ellipsis = 0;
    i = 2;
    if (i == s.size()) {
      *out = b;
      return true;
    }
  }
  while (n < 16) {
    // A hex group, or an IPv4 tail.
    std::size_t j = i;
    int v = 0;
    while (j < s.size() && j - i < 5 && hex_value(s[j]) >= 0) {
      v = v * 16 + hex_value(s[j]);
      ++j;
    }
    if (j == i || j - i > 4) return false;
    if (j < s.size() && s[j] == '.') {
      if (ellipsis < 0 && n != 12) return false;
      if (n + 4 > 16) return false;
      if (!parse_v4(s.substr(i), b.data() + n)) return false;
      n += 4;
      i = s.size();
      break;
    }
    b[n] = static_cast<std::uint8_t>(v >> 8);
    b[n + 1] = static_cast<std::uint8_t>(v);
    n += 2;
    i = j;
    if (i == s.size()) break;
    if (s[i] != ':' || i + 1 == s.size()) return false;
    ++i;
    if (s[i] == ':') {
      if (ellipsis >= 0) return false;  // a second "::"
      ellipsis = n;
      ++i;
      if (i == s.size()) break;
    }
  }
  if (i != s.size()) return false;
  if (n < 16) {
    if (ellipsis < 0) return false;
    const int shift = 16 - n;
    for (int k = n - 1; k >= ellipsis; --k) b[k + shift] = b[k];
    for (int k = ellipsis; k < ellipsis + shift; ++k) b[k] = 0;
  } else if (ellipsis >= 0) {
    return false;  // "::" must stand for at least one group
  }
  *out = b;
  return true;
}

}  // namespace

std::optional<IP> IP::parse(std::string_view s) {
  if (s.find(':') == std::string_view::npos) {
    IP ip;
    ip.kind_ = Kind::v4;
    if (!parse_v4(s, ip.bytes_.data())) return std::nullopt;
    return ip;
  }
  std::string zone;
  if (const auto pct = s.find('%'); pct != std::string_view::npos) {
    zone = std::string(s.substr(pct + 1));
    if (!valid_zone(zone)) return std::nullopt;
    s = s.substr(0, pct);
  }
  std::array<std::uint8_t, 16> b{};
  if (!parse_v6(s, &b)) return std::nullopt;
  static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (zone.empty() && std::memcmp(b.data(), kMapped, 12) == 0) {
    return IP::v4(b[12], b[13], b[14], b[15]);  // Go prints ::ffff:a.b.c.d as IPv4
  }
  return v6(b, std::move(zone));
}

std::string IP::to_string() const {
  char buf[64];
  if (is_v4()) {
    std::snprintf(buf, sizeof buf, "%u.%u.%u.%u", bytes_[0], bytes_[1], bytes_[2], bytes_[3]);
    return buf;
  }
  if (!is_v6()) return "<nil>";
  std::uint16_t g[8];
  for (int i = 0; i < 8; ++i)
    g[i] = static_cast<std::uint16_t>(bytes_[2 * i] << 8 | bytes_[2 * i + 1]);
  // RFC 5952: the longest run of two or more zero groups becomes "::".
  int best = -1, best_len = 1;
  for (int i = 0; i < 8;) {
    if (g[i] != 0) {
      ++i;
      continue;
    }
    int j = i;
    while (j < 8 && g[j] == 0) ++j;
    if (j - i > best_len) {
      best = i;
      best_len = j - i;
    }
    i = j;
  }
  std::string s;
  for (int i = 0; i < 8; ++i) {
    if (i == best) {
      s += "::";
      i += best_len - 1;
      continue;
    }
    if (!s.empty() && s.back() != ':') s += ':';
    std::snprintf(buf, sizeof buf, "%x", g[i]);
    s += buf;
  }
  if (!zone_.empty()) {
    s += '%';
    s += zone_;
  }
  return s;
}

// --- Addr ---

Addr Addr::from_sockaddr(const sockaddr* sa, socklen_t len, std::string network) {
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    const auto* b = reinterpret_cast<const std::uint8_t*>(&in->sin_addr);
    return ip_port(std::move(network), IP::v4(b[0], b[1], b[2], b[3]), ntohs(in->sin_port));
  }
  if (sa->sa_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    std::array<std::uint8_t, 16> b;
    std::memcpy(b.data(), &in6->sin6_addr, 16);
    static constexpr std::uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(b.data(), kMapped, 12) == 0) {
      return ip_port(std::move(network), IP::v4(b[12], b[13], b[14], b[15]), ntohs(in6->sin6_port));
    }
    std::string zone;
    if (in6->sin6_scope_id != 0) {
      // The interface's name, unless it has a character a zone may not
      // (Linux allows '[' in one): then the number, which names it too.
      char name[IF_NAMESIZE];
      if (if_indextoname(in6->sin6_scope_id, name) && valid_zone(name)) {
        zone = name;
      } else {
        zone = std::to_string(in6->sin6_scope_id);
      }
    }
    return ip_port(std::move(network), IP::v6(b, std::move(zone)), ntohs(in6->sin6_port));
  }
  if (sa->sa_family == AF_UNIX) {
    const auto* un = reinterpret_cast<const sockaddr_un*>(sa);
    const std::size_t off = offsetof(sockaddr_un, sun_path);
    std::string name;
    if (len > static_cast<socklen_t>(off)) {
      std::size_t n = static_cast<std::size_t>(len) - off;
      const char* p = un->sun_path;
      if (p[0] == '\0') {
        name = "@";  // Linux abstract name
        name.append(p + 1, n - 1);
      } else {
        name.assign(p, strnlen(p, n));
      }
    }
    return unix_name(std::move(network), std::move(name));
  }
  return Addr{};
}

int Addr::family() const noexcept {
  if (is_unix_) return AF_UNIX;
  return ip_.is_v6() ? AF_INET6 : AF_INET;
}

socklen_t Addr::to_sockaddr(sockaddr_storage* ss, int family, std::error_code* why) const {
  std::memset(ss, 0, sizeof *ss);
  const auto fail = [why](std::error_code e) -> socklen_t {
    if (why) *why = e;
    return 0;
  };
  const auto wrong_family = std::make_error_code(std::errc::address_family_not_supported);
  if (is_unix_) {
    if (family != AF_UNIX) return fail(wrong_family);
    auto* un = reinterpret_cast<sockaddr_un*>(ss);
    un->sun_family = AF_UNIX;
    if (name_.size() >= sizeof un->sun_path) {
      return fail(std::make_error_code(std::errc::invalid_argument));  // Go: EINVAL
    }
    std::memcpy(un->sun_path, name_.data(), name_.size());
    std::size_t n = name_.size();
    if (!name_.empty() && name_[0] == '@') {
      un->sun_path[0] = '\0';  // abstract: no trailing NUL counted
    } else if (n > 0) {
      ++n;  // the path's NUL
    }
    return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + n);
  }
  if (family == AF_INET) {
    if (ip_.valid() && !ip_.is_v4()) return fail(wrong_family);
    auto* in = reinterpret_cast<sockaddr_in*>(ss);
    in->sin_family = AF_INET;
    in->sin_port = htons(port_);
    if (ip_.valid()) std::memcpy(&in->sin_addr, ip_.data(), 4);
    return sizeof(sockaddr_in);
  }
  if (family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(ss);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port_);
    if (ip_.is_v4()) {
      // v4-mapped, except that 0.0.0.0 on a dual-stack socket means "any".
      if (!ip_.is_unspecified()) {
        in6->sin6_addr.s6_addr[10] = 0xff;
        in6->sin6_addr.s6_addr[11] = 0xff;
        std::memcpy(&in6->sin6_addr.s6_addr[12], ip_.data(), 4);
      }
    } else if (ip_.is_v6()) {
      std::memcpy(&in6->sin6_addr, ip_.data(), 16);
      if (!ip_.zone().empty()) {
        if (std::error_code e = zone_index(ip_.zone(), &in6->sin6_scope_id)) return fail(e);
      }
    }
    return sizeof(sockaddr_in6);
  }
  return fail(wrong_family);
}

std::string Addr::to_string() const {
  if (is_unix_) return name_;
  std::string host = ip_.valid() ? ip_.to_string() : std::string();
  std::string s;
  if (host.find(':') != std::string::npos) {
    s = "[" + host + "]";
  } else {
    s = host;
  }
  s += ':';
  s += std::to_string(port_);
  return s;
}

std::ostream& operator<<(std::ostream& os, const OpError& e) {
  return os << e.to_string();
}
std::ostream& operator<<(std::ostream& os, net_errc e) {
  return os << make_error_code(e).message();
}
std::ostream& operator<<(std::ostream& os, const IP& ip) {
  return os << ip.to_string();
}
std::ostream& operator<<(std::ostream& os, const Addr& a) {
  return os << a.to_string();
}

}  // namespace weft::net
