// Shared between the net sources: network names and resolution steps.
#pragma once

#include <sys/socket.h>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "weft/net/addr.h"
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
// Whether this host can bind ::1 (checked once).
bool ipv6_supported();
// Every address for `address` on network `n` (bare errors).
Result<std::vector<Addr>> resolve_list(const NetworkInfo& n, std::string_view address);

}  // namespace weft::net::detail
