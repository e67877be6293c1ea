// Shared between the net sources: network names and resolution steps.
#pragma once

#include <netdb.h>
#include <sys/socket.h>

#include <atomic>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "weft/context.h"

#include "weft/net/addr.h"
#include "weft/net/resolve.h"
#include "weft/net/result.h"

namespace weft::net::detail {

struct NetworkInfo {
  std::string name;        // as given: "tcp4", "unixgram", ...
  int family = AF_UNSPEC;  // AF_INET / AF_INET6 when the name pins it, AF_UNIX
  int sotype = SOCK_STREAM;
  bool ip = false;
};

std::optional<NetworkInfo> parse_network(std::string_view network);
// "unknown network X", bare (the caller wraps it in its op).
OpError unknown_network(std::string_view network);
// Go's AddrError: "address ADDR: WHY" (just WHY when addr is empty).
OpError addr_error(std::string_view addr, std::string_view why);
// errc::no_runtime when no runtime runs, else empty. Checked before the
// first step that needs one (a socket registers with the poller, a lookup
// runs on the blocking pool, a dial may race fibers or arm a deadline), so
// that such a call fails there with an error, not a socket or file left
// behind, nor an abort.
std::error_code need_runtime() noexcept;
// Whether this host can bind ::1 (checked once).
bool ipv6_supported();
// Every address for `address` on network `n` (bare errors).
// What lookups call instead of getaddrinfo (tests make it slow); null
// restores getaddrinfo.
using GetAddrInfoFn = int (*)(const char*, const char*, const addrinfo*, addrinfo**);
extern std::atomic<GetAddrInfoFn> getaddrinfo_hook;
void set_getaddrinfo_for_tests(GetAddrInfoFn fn) noexcept;

// Go's mapErr: a done context's error as a dial or lookup reports it,
// errc::operation_canceled ("operation was canceled") for a cancel and
// errc::timeout ("i/o timeout") for a deadline; both still answer
// is_canceled / is_timeout as the context's own errors do.
std::error_code map_context_error(std::error_code ctx_err) noexcept;

// With a context, a name lookup it cancels returns at once (see lookup_ip).
// Names go through `resolver` when given (null: the default lookup); the
// answer is filtered to n's family either way.
Result<std::vector<Addr>> resolve_list(const NetworkInfo& n, std::string_view address,
                                       const Context& ctx = weft::background(),
                                       const Resolver* resolver = nullptr);

}  // namespace weft::net::detail
