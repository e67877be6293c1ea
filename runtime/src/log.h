// The runtime's logger. Level from WEFT_LOG (trace, debug, info, warn, error,
// critical, off); default warn. spdlog checks the level before formatting,
// so a disabled level costs one branch.
#pragma once

#include <spdlog/spdlog.h>

namespace weft::detail {
spdlog::logger& log();
}  // namespace weft::detail
