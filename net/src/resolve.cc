// host:port parsing and the resolver: numeric hosts, /etc/hosts, then
// getaddrinfo on the blocking pool.
#include "weft/net/resolve.h"

#include <netdb.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstring>
#include <fstream>
#include <sstream>

#include "net_internal.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/runtime.h"
#include "weft/select.h"

namespace weft::net {

namespace {

using detail::addr_error;

OpError dns_error(std::string_view name, std::error_code code, std::string_view why) {
  std::string s = "lookup ";
  s += name;
  s += ": ";
  s += why;
  return OpError(code, std::move(s));
}

bool iequal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

// Addresses for `host` in /etc/hosts, in file order.
std::vector<IP> lookup_hosts_file(std::string_view host) {
  std::vector<IP> out;
  std::ifstream in("/etc/hosts");
  std::string line;
  while (std::getline(in, line)) {
    if (const auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream fields(line);
    std::string addr, name;
    if (!(fields >> addr)) continue;
    auto ip = IP::parse(addr);
    if (!ip) continue;
    while (fields >> name) {
      if (!name.empty() && name.back() == '.') name.pop_back();
      if (iequal(name, host)) {
        if (std::find(out.begin(), out.end(), *ip) == out.end()) out.push_back(*ip);
        break;
      }
    }
  }
  return out;
}

}  // namespace

Result<std::pair<std::string, std::string>> split_host_port(std::string_view hp) {
  constexpr std::string_view kMissingPort = "missing port in address";
  constexpr std::string_view kTooManyColons = "too many colons in address";
  const auto i = hp.rfind(':');
  if (i == std::string_view::npos) return addr_error(hp, kMissingPort);
  std::string_view host;
  std::size_t j = 0, k = 0;
  if (hp[0] == '[') {
    const auto end = hp.find(']');
    if (end == std::string_view::npos) return addr_error(hp, "missing ']' in address");
    if (end + 1 == hp.size()) return addr_error(hp, kMissingPort);
    if (end + 1 != i) {
      if (hp[end + 1] == ':') return addr_error(hp, kTooManyColons);
      return addr_error(hp, kMissingPort);
    }
    host = hp.substr(1, end - 1);
    j = 1;
    k = end + 1;
  } else {
    host = hp.substr(0, i);
    if (host.find(':') != std::string_view::npos) return addr_error(hp, kTooManyColons);
  }
  if (hp.substr(j).find('[') != std::string_view::npos) {
    return addr_error(hp, "unexpected '[' in address");
  }
  if (hp.substr(k).find(']') != std::string_view::npos) {
    return addr_error(hp, "unexpected ']' in address");
  }
  return std::pair<std::string, std::string>(std::string(host), std::string(hp.substr(i + 1)));
}

std::string join_host_port(std::string_view host, std::string_view port) {
  // Built with append() only: GCC 12 at -O3 misreads operator=(const char*)
  // here as an overlapping memcpy (-Werror=restrict).
  const bool bracket = host.find(':') != std::string_view::npos;
  std::string s;
  s.reserve(host.size() + port.size() + 3);
  if (bracket) s.push_back('[');
  s.append(host);
  if (bracket) s.push_back(']');
  s.push_back(':');
  s.append(port);
  return s;
}

Result<std::uint16_t> parse_port(std::string_view network, std::string_view port) {
  if (port.empty()) return std::uint16_t{0};
  std::size_t i = 0;
  bool neg = false;
  if (port[0] == '+' || port[0] == '-') {
    neg = port[0] == '-';
    i = 1;
  }
  bool numeric = i < port.size();
  long long v = 0;
  for (std::size_t k = i; k < port.size() && numeric; ++k) {
    if (port[k] < '0' || port[k] > '9') {
      numeric = false;
    } else if (v <= 1'000'000) {
      v = v * 10 + (port[k] - '0');
    }
  }
  if (numeric) {
    if (neg) v = -v;
    if (v < 0 || v > 65535) return addr_error(port, "invalid port");
    return static_cast<std::uint16_t>(v);
  }
  const std::string base = network.substr(0, 3) == "udp" ? "udp" : "tcp";
  const std::string name(port);
  servent se{};
  servent* found = nullptr;
  char buf[1024];
  if (getservbyname_r(name.c_str(), base.c_str(), &se, buf, sizeof buf, &found) == 0 && found) {
    return static_cast<std::uint16_t>(ntohs(static_cast<std::uint16_t>(found->s_port)));
  }
  return dns_error(base + "/" + name, net_errc::unknown_port, "unknown port");
}

namespace {

using Ips = Result<std::vector<IP>>;

bool keep_family(const IP& ip, int family) {
  return family == AF_UNSPEC || (family == AF_INET) == ip.is_v4();
}

// Go: "lookup HOST: operation was canceled", or "... i/o timeout".
OpError context_done_error(const Context& ctx, std::string_view host) {
  const std::error_code e = detail::map_context_error(ctx.err());
  return dns_error(host, e, e.message());
}

// Runs `work` (returning Ips) in a fiber of its own and waits for its answer
// or for ctx to be done, whichever comes first. A lookup cannot be
// interrupted (getaddrinfo, or a hook that ignores ctx), so one abandoned by
// its context finishes in the background and its answer is dropped with the
// channel. A context that can never be done (background) needs no fiber:
// the caller runs `work` itself. Needs a runtime.
template <class Work>
Ips await_lookup(const Context& ctx, std::string_view host, Work work) {
  static_assert(weft::detail::channel_value<Ips>);
  if (!ctx.done()) return work();
  auto answers = std::make_shared<weft::Channel<Ips>>(1);
  // Buffered for the one answer, and never closed: the send cannot fail,
  // and a caller that gave up has only dropped its handle.
  weft::go([answers, work = std::move(work)]() mutable { (void)answers->send(work()); });
  std::optional<Ips> answer;
  weft::select(weft::on_recv(*answers, [&](std::optional<Ips> a) { answer = std::move(a); }),
               weft::on_done(ctx, [] {}));
  if (!answer) return context_done_error(ctx, host);
  return std::move(*answer);
}

// getaddrinfo on the blocking pool (AI_ADDRCONFIG off: loopback-only hosts
// must still resolve ::1).
Ips getaddrinfo_lookup(const std::string& name, int family) {
  int rc = 0;
  std::vector<IP> ips;
  weft::blocking([&] {
    addrinfo hints{};
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    rc = detail::getaddrinfo_hook.load()(name.c_str(), nullptr, &hints, &res);
    if (rc != 0) return;
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      Addr addr = Addr::from_sockaddr(ai->ai_addr, ai->ai_addrlen, "ip");
      if (addr.is_ip() && addr.ip().valid() &&
          std::find(ips.begin(), ips.end(), addr.ip()) == ips.end()) {
        ips.push_back(addr.ip());
      }
    }
    freeaddrinfo(res);
  });
  if (rc == EAI_NONAME || rc == EAI_NODATA || (rc == 0 && ips.empty())) {
    return dns_error(name, net_errc::no_such_host, "no such host");
  }
  if (rc != 0) return dns_error(name, net_errc::no_such_host, gai_strerror(rc));
  return ips;
}

// A custom lookup's answer as Resolver documents it.
Ips custom_answer(std::string_view host, int family, Ips answer) {
  if (!answer) {
    OpError& e = answer.error();
    std::string text = e.to_string();
    std::string prefix = "lookup ";
    prefix += host;
    prefix += ": ";
    if (text.compare(0, prefix.size(), prefix) == 0) return std::move(e);
    return dns_error(host, e.err, e.cause());
  }
  std::vector<IP> out;
  for (IP& ip : *answer) {
    if (keep_family(ip, family) && std::find(out.begin(), out.end(), ip) == out.end()) {
      out.push_back(std::move(ip));
    }
  }
  if (out.empty()) return dns_error(host, net_errc::no_such_host, "no such host");
  return out;
}

}  // namespace

Result<std::vector<IP>> lookup_ip(std::string_view host, int family) {
  return lookup_ip(weft::background(), host, family);
}

Result<std::vector<IP>> lookup_ip(const Context& ctx, std::string_view host, int family) {
  if (auto ip = IP::parse(host)) return std::vector<IP>{*ip};
  if (ctx.err()) return context_done_error(ctx, host);
  std::vector<IP> out;
  for (IP& ip : lookup_hosts_file(host)) {
    if (keep_family(ip, family)) out.push_back(std::move(ip));
  }
  if (!out.empty()) return out;
  if (iequal(host, "localhost")) {
    // RFC 6761: localhost is the loopback even when /etc/hosts omits it.
    if (family != AF_INET6) out.push_back(IP::loopback_v4());
    if (family != AF_INET) out.push_back(IP::loopback_v6());
    return out;
  }
  if (std::error_code e = detail::need_runtime()) return dns_error(host, e, e.message());
  return await_lookup(
      ctx, host, [name = std::string(host), family] { return getaddrinfo_lookup(name, family); });
}

Result<std::vector<IP>> Resolver::lookup_ip(std::string_view host, int family) const {
  return lookup_ip(weft::background(), host, family);
}

Result<std::vector<IP>> Resolver::lookup_ip(const Context& ctx, std::string_view host,
                                            int family) const {
  if (!lookup) return net::lookup_ip(ctx, host, family);
  // Go never asks a resolver about a literal address.
  if (auto ip = IP::parse(host)) return std::vector<IP>{*ip};
  if (ctx.err()) return context_done_error(ctx, host);
  if (detail::need_runtime()) return custom_answer(host, family, lookup(ctx, host, family));
  return await_lookup(ctx, host, [fn = lookup, ctx, name = std::string(host), family]() {
    return custom_answer(name, family, fn(ctx, name, family));
  });
}

namespace detail {

OpError addr_error(std::string_view addr, std::string_view why) {
  std::string s;
  if (!addr.empty()) {
    s = "address ";
    s += addr;
    s += ": ";
  }
  s += why;
  return OpError(net_errc::invalid_address, std::move(s));
}

std::atomic<GetAddrInfoFn> getaddrinfo_hook{&::getaddrinfo};

void set_getaddrinfo_for_tests(GetAddrInfoFn fn) noexcept {
  getaddrinfo_hook.store(fn ? fn : &::getaddrinfo);
}

std::optional<NetworkInfo> parse_network(std::string_view network) {
  NetworkInfo n;
  n.name = std::string(network);
  if (network == "tcp" || network == "tcp4" || network == "tcp6") {
    n.sotype = SOCK_STREAM;
  } else if (network == "udp" || network == "udp4" || network == "udp6") {
    n.sotype = SOCK_DGRAM;
  } else if (network == "unix") {
    n.sotype = SOCK_STREAM;
    n.family = AF_UNIX;
    return n;
  } else if (network == "unixgram") {
    n.sotype = SOCK_DGRAM;
    n.family = AF_UNIX;
    return n;
  } else if (network == "unixpacket") {
    n.sotype = SOCK_SEQPACKET;
    n.family = AF_UNIX;
    return n;
  } else {
    return std::nullopt;
  }
  n.ip = true;
  const char last = network.back();
  n.family = last == '4' ? AF_INET : last == '6' ? AF_INET6 : AF_UNSPEC;
  return n;
}

OpError unknown_network(std::string_view network) {
  std::string s = "unknown network ";
  s += network;
  return OpError(net_errc::unknown_network, std::move(s));
}

std::error_code need_runtime() noexcept {
  return weft::num_workers() == 0 ? make_error_code(weft::errc::no_runtime) : std::error_code{};
}

bool ipv6_supported() {
  static const bool ok = [] {
    const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0;
    ::close(fd);
    return bound;
  }();
  return ok;
}

Result<std::vector<Addr>> resolve_list(const NetworkInfo& n, std::string_view address,
                                       const Context& ctx, const Resolver* resolver) {
  if (n.family == AF_UNIX) {
    if (address.empty()) return OpError(weft::errc::missing_address);
    return std::vector<Addr>{Addr::unix_name(n.name, std::string(address))};
  }
  auto hp = split_host_port(address);
  if (!hp) return std::move(hp).error();
  auto port = parse_port(n.name, hp->second);
  if (!port) return std::move(port).error();
  const std::string& host = hp->first;
  if (host.empty()) {
    return std::vector<Addr>{Addr::ip_port(n.name, IP(), *port)};  // the local system
  }
  std::vector<IP> ips;
  if (auto ip = IP::parse(host)) {
    ips.push_back(*ip);
  } else {
    auto found =
        resolver ? resolver->lookup_ip(ctx, host, n.family) : lookup_ip(ctx, host, n.family);
    if (!found) return std::move(found).error();
    ips = std::move(*found);
  }
  std::vector<Addr> out;
  for (IP& ip : ips) {
    if (n.family == AF_INET && !ip.is_v4()) continue;
    if (n.family == AF_INET6 && !ip.is_v6()) continue;
    out.push_back(Addr::ip_port(n.name, std::move(ip), *port));
  }
  if (out.empty()) return addr_error(host, "no suitable address found");
  return out;
}

}  // namespace detail

Result<std::vector<Addr>> resolve_addr_list(std::string_view network, std::string_view address) {
  auto n = detail::parse_network(network);
  if (!n) return detail::unknown_network(network);
  return detail::resolve_list(*n, address);
}

Result<Addr> resolve_addr(std::string_view network, std::string_view address) {
  auto n = detail::parse_network(network);
  if (!n) return detail::unknown_network(network);
  auto list = detail::resolve_list(*n, address);
  if (!list) return std::move(list).error();
  // Go's forResolve: a literal IPv6 address prefers IPv6, else IPv4 first.
  const bool want6 = n->family == AF_UNSPEC && n->family != AF_UNIX &&
                     std::count(address.begin(), address.end(), ':') > 1;
  for (const Addr& a : *list) {
    if (!a.ip().valid() || (a.ip().is_v6() == want6)) return a;
  }
  return list->front();
}

}  // namespace weft::net
