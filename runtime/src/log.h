// The runtime's logger. Level from WEFT_LOG (trace, debug, info, warn, error,
// critical, off); default warn. spdlog checks the level before formatting,
// so a disabled level costs one branch.
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace weft::detail {
spdlog::logger& log();

// The exception being handled, as "type: what()" (just the type when it is
// not a std::exception), or empty when none is.
std::string current_exception_text();
}  // namespace weft::detail
