// host:port splitting and joining, port parsing and address resolution, with
// Go's error texts ("address 1.2.3.4: missing port in address").
#pragma once

#include <chrono>
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

// Go's ResolveTCPAddr/ResolveUDPAddr/ResolveUnixAddr: the first address of
// the right family. `network` is tcp, tcp4, tcp6, udp, udp4, udp6, unix,
// unixgram or unixpacket.
Result<Addr> resolve_addr(std::string_view network, std::string_view address);
// Every address for a dial, in resolver order (Go's internetAddrList).
Result<std::vector<Addr>> resolve_addr_list(std::string_view network, std::string_view address);

}  // namespace weft::net
