// Schedule perturbation for stress tests: at the points where two threads'
// steps interleave (a park commit, a ready, a runnext handoff, a steal, a
// poll, a timer's pop or change, a cancel, a close, a fiber's name read by
// the watchdog while the fiber may be ending), a chaos build may yield
// the OS thread, spin or sleep a few microseconds, so that a 2-core machine
// reaches orders it would otherwise almost never show. Off unless the build
// has it (meson -Dchaos=true, which `./weft test` sets) and the process runs
// with WEFT_CHAOS=<seed>; each point then costs one predictable branch.
#pragma once

#include <atomic>
#include <cstdint>

namespace weft::detail::chaos {

enum class Point : std::uint8_t {
  park_commit,
  ready,
  runnext,
  steal,
  sleep,
  poll,
  timer_pop,
  timer_change,
  cancel,
  close,
  name_read,  // the watchdog reading the name of a fiber that may be ending
  scavenge,   // memory retired, its grace period over, not yet given back
  grace,      // a grace section that read the epoch, not yet counted in it
};

#if defined(WEFT_CHAOS_BUILD)
// Set once from WEFT_CHAOS before the first runtime starts.
extern std::atomic<bool> enabled;
void perturb(Point where) noexcept;
inline void at(Point where) noexcept {
  if (enabled.load(std::memory_order_relaxed)) [[unlikely]]
    perturb(where);
}
#else
inline void at(Point) noexcept {}
#endif

// The seed in use, or 0 when perturbation is off; for logs and tests.
std::uint64_t seed() noexcept;

}  // namespace weft::detail::chaos
