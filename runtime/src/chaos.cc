#include "chaos.h"

#include <sched.h>
#include <time.h>

#include <cstdint>

#include "env.h"
#include "log.h"
#include "weft/detail/spinlock.h"

namespace weft::detail::chaos {
namespace {

std::uint64_t parse_seed() noexcept {
  const auto seed =
      env_number("WEFT_CHAOS", 1, UINT64_MAX, "a seed, a whole number from 1", "no perturbation");
  if (!seed) return 0;
  const std::uint64_t v = *seed;
#if defined(WEFT_CHAOS_BUILD)
  log().warn("WEFT_CHAOS={}: perturbing the schedule at interleaving points", v);
#else
  log().warn("WEFT_CHAOS is set but this build has no perturbation points (meson -Dchaos=true)");
#endif
  return v;
}

const std::uint64_t g_seed = parse_seed();

}  // namespace

std::uint64_t seed() noexcept {
  return g_seed;
}

#if defined(WEFT_CHAOS_BUILD)
std::atomic<bool> enabled{g_seed != 0};

void perturb(Point where) noexcept {
  // Per thread, seeded from the run's seed and the thread's first point, so
  // that one seed gives one family of schedules without a shared generator
  // (whose cache line would itself serialise the threads).
  thread_local std::uint64_t state = 0;
  if (state == 0) {
    static std::atomic<std::uint64_t> threads{0};
    state = (g_seed * 0x9E3779B97F4A7C15ULL) ^
            ((threads.fetch_add(1, std::memory_order_relaxed) + 1) * 0xBF58476D1CE4E5B9ULL);
    if (state == 0) state = 1;
  }
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  const std::uint64_t r = state + static_cast<std::uint64_t>(where) * 0x94D049BB133111EBULL;
  // Mostly nothing: a perturbation at every point would serialise everything
  // and hide the races as surely as none would.
  switch ((r >> 8) % 32) {
    case 0:
    case 1:
      sched_yield();
      break;
    case 2:
    case 3: {
      const std::uint64_t spins = (r >> 16) % 4096;
      for (std::uint64_t i = 0; i < spins; ++i) cpu_relax();
      break;
    }
    case 4: {
      timespec ts{0, static_cast<long>(1000 + (r >> 20) % 20000)};  // 1-21 us
      nanosleep(&ts, nullptr);
      break;
    }
    default:
      break;
  }
}
#endif

}  // namespace weft::detail::chaos
