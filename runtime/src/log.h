// The runtime's logger. Level from WEFT_LOG (trace, debug, info, warn, error,
// critical, off, in any case; default warn). spdlog checks the level before
// formatting, so a disabled level costs one branch. Nothing fatal goes
// through it: a message that ends the process is written to stderr whatever
// the level (fprintf, or write(2) in a signal handler), and so is a rejected
// setting (env.h).
#pragma once

#include <spdlog/spdlog.h>

#include <string>

namespace weft::detail {
spdlog::logger& log();

// The exception being handled, as "type: what()" (just the type when it is
// not a std::exception), or empty when none is.
std::string current_exception_text();

// For runtime callbacks that run where no caller could catch (park commits,
// timer expiries): says on stderr, whatever WEFT_LOG says, that the exception
// being handled escaped `where`, and aborts.
[[noreturn]] void die_of_exception(const char* where) noexcept;
}  // namespace weft::detail
