// host:port splitting and joining, port parsing and address resolution, with
// Go's error texts ("address 1.2.3.4: missing port in address").
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "weft/context.h"
#include "weft/net/addr.h"
#include "weft/net/result.h"

namespace weft::net {

// Go's SplitHostPort: "host:port", "[v6]:port", "[v6%zone]:port". Errors are
// bare AddrErrors: "address X: missing port in address", "... too many colons
// in address", "... missing ']' in address", "... unexpected '[' in address".
Result<std::pair<std::string, std::string>> split_host_port(std::string_view hostport);
// Go's JoinHostPort: brackets a host that contains a colon.
std::string join_host_port(std::string_view host, std::string_view port);
// A decimal port ("" is 0) or a service name from /etc/services for
// `network`; "address 70000: invalid port", "lookup tcp/foo: unknown port".
Result<std::uint16_t> parse_port(std::string_view network, std::string_view port);

// IP addresses of `host`, in the resolver's order: a numeric address is
// itself; then /etc/hosts (in file order); then getaddrinfo on the blocking
// pool (AI_ADDRCONFIG off; results in the order it gives). `family` filters:
// AF_INET, AF_INET6 or AF_UNSPEC. Errors are bare: "lookup x: no such host".
// Where no runtime runs, a host that needs getaddrinfo fails with
// errc::no_runtime ("lookup x: no weft runtime is running ...").
Result<std::vector<IP>> lookup_ip(std::string_view host, int family = AF_UNSPEC);
// The same, bounded by ctx: once ctx is done the call returns at once with
// "lookup HOST: operation was canceled" (is_canceled()), or "... i/o
// timeout" (is_timeout()) for a deadline, as Go; a getaddrinfo already
// running finishes on the blocking pool and its answer is dropped.
Result<std::vector<IP>> lookup_ip(const Context& ctx, std::string_view host,
                                  int family = AF_UNSPEC);

// Go's net.Resolver, reduced to its hook: a custom lookup of a host's IP
// addresses, so that a program or a test can make any name resolve to any
// addresses (Go's Resolver with a custom Dial, or its lookupIP test hook).
// A Dialer or ListenConfig whose `resolver` is set resolves names through
// it; one with no `lookup` resolves as lookup_ip() does.
//
//   auto r = std::make_shared<weft::net::Resolver>();
//   r->lookup = [](const weft::Context&, std::string_view host, int) {
//     return std::vector<weft::net::IP>{weft::net::IP::loopback_v6(),
//                                       weft::net::IP::loopback_v4()};
//   };
//   weft::net::Dialer d;
//   d.resolver = r;  // d.dial(ctx, "tcp", "example.test:80") races ::1 and 127.0.0.1
//
// What `lookup` is given and what becomes of its answer:
//  - It sees host names only: a numeric host (an IP literal, with or
//    without a zone) and an empty host never reach it, as in Go. Every name
//    does, "localhost" included: /etc/hosts is not read first.
//  - `family` is AF_INET, AF_INET6 (tcp4/tcp6, udp4/udp6) or AF_UNSPEC.
//    The answer may hold either family: addresses of the other one are
//    dropped, the order of the rest is kept (and duplicates removed), and
//    the list then takes the default resolver's path: a dial races the
//    families in Happy Eyeballs (the first address's family is the
//    primary), a listen takes the first IPv4 address.
//  - An empty answer (after the family filter) is "lookup HOST: no such
//    host". An error is reported as "lookup HOST: " and the error's own text
//    (OpError::cause()), its code kept, so a dial prints "dial tcp: lookup
//    HOST: ..."; an error that already reads "lookup HOST: ..." (the
//    default lookup_ip's, from a hook that delegates to it) is kept as is.
//  - It runs in a fiber of its own, and the caller waits for its answer or
//    for ctx to be done, whichever comes first (Go's lookupIPAddr); with a
//    context that can never be done (background) the caller runs it. So a
//    cancel or a deadline ends the dial or listen at once ("lookup HOST:
//    operation was canceled", "... i/o timeout") even if the hook ignores
//    ctx; the hook is given ctx and should return once ctx is done, as it
//    is otherwise left running, and its late answer is dropped. It may
//    therefore outlive the call that started it: it runs on a copy of
//    `lookup`, and what it captures must outlive it (capture by value, or
//    shared handles such as weft::Channel). It must not throw: an
//    exception escaping a fiber ends the process.
//  - A context already done fails before the hook is called. Where no
//    runtime runs (outside weft::run) the hook is called on the caller's
//    thread, unbounded by ctx.
struct Resolver {
  using LookupFn =
      std::function<Result<std::vector<IP>>(const Context& ctx, std::string_view host, int family)>;
  LookupFn lookup;  // empty: the default lookup (lookup_ip)

  // The addresses of `host`, through `lookup` when it is set; as the free
  // lookup_ip() otherwise, errors and ctx rules included.
  Result<std::vector<IP>> lookup_ip(const Context& ctx, std::string_view host,
                                    int family = AF_UNSPEC) const;
  Result<std::vector<IP>> lookup_ip(std::string_view host, int family = AF_UNSPEC) const;
};

// Go's ResolveTCPAddr/ResolveUDPAddr/ResolveUnixAddr: the first address of
// the right family. `network` is tcp, tcp4, tcp6, udp, udp4, udp6, unix,
// unixgram or unixpacket.
Result<Addr> resolve_addr(std::string_view network, std::string_view address);
// Every address for a dial, in resolver order (Go's internetAddrList).
Result<std::vector<Addr>> resolve_addr_list(std::string_view network, std::string_view address);

}  // namespace weft::net
