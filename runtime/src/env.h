// Settings read from the environment (WEFT_LOG, WEFT_PROCS, WEFT_POLLER,
// WEFT_BLOCKING_THREADS, WEFT_CHAOS, WEFT_TRACEBACK, WEFT_COOP_BUDGET,
// WEFT_IDLE_STACK_MS), all through here, so that every one treats an empty
// value as unset, compares words without regard to case, and rejects a
// value the same way: on stderr whatever WEFT_LOG says (the log level may
// itself be the bad value, and a setting silently ignored is worse than a
// noisy one), naming what it accepts, and then the default is used, as if
// the variable were unset.
#pragma once

#include <cstdint>
#include <optional>

namespace weft::detail {

// The variable's value, or null when it is unset or empty.
const char* env_value(const char* name);

// Which of `accepted` (null-terminated) the variable names, compared
// case-insensitively; nullopt when it is unset or empty, or when it is
// rejected, which `instead` (what is used then) completes.
std::optional<int> env_word(const char* name, const char* const* accepted, const char* instead);

// The whole number in [lo, hi] the variable holds (decimal digits only);
// nullopt when it is unset, empty or rejected. `expected` names the accepted
// values in the rejection, e.g. "a worker count from 1 to 1024".
std::optional<std::uint64_t> env_number(const char* name, std::uint64_t lo, std::uint64_t hi,
                                        const char* expected, const char* instead);

}  // namespace weft::detail
