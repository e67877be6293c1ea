// Shared helpers for the suites.
#pragma once

#include <gtest/gtest.h>

#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "sanitizer.h"  // WEFT_TSAN: the runtime's own test for a TSan build
#include "weft/debug.h"
#include "weft/poller.h"
#include "weft/runtime.h"
#include "weft/time.h"

namespace weft::test {

// How many times fewer iterations stress loops run in this build. Under TSan
// every fiber that runs costs a TSan fiber of its own (__tsan_create_fiber
// maps and zeroes ~770 KiB, ~0.5-1 ms on a 2-core machine) and every access
// is checked, so a loop sized for a plain build takes minutes. A quarter
// still interleaves thousands of times, and TSan reports a racing pair from
// one occurrence, where the plain build needs the repetitions to hit it.
// ASan's slowdown (~2-3x) fits CI as it is.
#ifdef WEFT_TSAN
inline constexpr int kSanitizerDivisor = 4;
#else
inline constexpr int kSanitizerDivisor = 1;
#endif

// Stress loops run `base` times by default (base / kSanitizerDivisor under
// TSan, at least once); `./weft test --long` sets WEFT_STRESS_SCALE to run
// them many times longer, in every build.
inline int stress_iterations(int base) {
  const char* scale = std::getenv("WEFT_STRESS_SCALE");
  long factor = scale ? std::strtol(scale, nullptr, 10) : 1;
  if (factor < 1) factor = 1;
  const long n = base * factor / kSanitizerDivisor;
  return static_cast<int>(n > 0 ? n : 1);
}

// How many fibers a test whose cost is the fibers it spawns (a burst, a
// spawn loop) runs: `base` by default, a sixteenth under TSan, where each
// fiber that runs costs a TSan fiber (about 3 ms each in CI's TSan step: a
// 35,000-fiber burst test alone took 205 s there). Never below `floor`, the
// least that still shows what the test is about.
constexpr int spawn_count(int base, int floor = 1) {
#ifdef WEFT_TSAN
  const int n = base / 16;
#else
  const int n = base;
#endif
  return n > floor ? n : floor;
}

// For death tests of exceptions that escape a fiber: destroyed, ending the
// process with status 42 instead of the expected abort, only if the stack is
// unwound before the process dies, which would leave the core dump and gdb
// without the throw site.
struct ExitIfUnwound {
  ExitIfUnwound() = default;
  ExitIfUnwound(const ExitIfUnwound&) = delete;
  ExitIfUnwound& operator=(const ExitIfUnwound&) = delete;
  ~ExitIfUnwound() { std::_Exit(42); }
};

// Names parametrised cases by worker count: "w1", "w2", ...
inline std::string workers_name(const ::testing::TestParamInfo<int>& info) {
  std::string name = "w";  // built in steps: GCC 12 -O3 warns on "w" + string
  name += std::to_string(info.param);
  return name;
}

// The process's resident memory now (/proc/self/statm), for the tests that
// check memory comes back after a burst.
inline std::size_t resident_bytes() {
  std::size_t size = 0, resident = 0;
  if (std::FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%zu %zu", &size, &resident) != 2) resident = 0;
    std::fclose(f);
  }
  return resident * static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
}

// Every poller backend built into this weft.
inline std::vector<std::string> poller_backends() {
  std::vector<std::string> names;
  for (const char* const* n = weft::poll::available_backends(); *n; ++n) names.emplace_back(*n);
  return names;
}

// Fibers parked for `reason` (the text dumps show) in a metrics snapshot,
// by default one taken now.
inline std::uint64_t parked_for(std::string_view reason,
                                const weft::Metrics& snapshot = weft::metrics()) {
  for (const auto& [text, n] : snapshot.parked_by_reason) {
    if (text == reason) return n;
  }
  return 0;
}

// CPU time this thread has used: for a test that must burn a known amount
// of it (the watchdog counts CPU time, not wall time).
inline std::chrono::nanoseconds thread_cpu_time() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// Keeps the caller busy for `d` of wall time without a switch: a fiber
// doing so lets its worker run no timers meanwhile, so those due become
// overdue.
inline void busy_for(std::chrono::nanoseconds d) {
  const auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

// From a fiber: yields (then naps) until pred() holds. The bound only turns a
// broken primitive into a failure instead of a hang: generous, so that a
// slow, perturbed or sanitized schedule, or a plain thread still starting,
// only takes longer. The thread yield lets a plain thread on this core get on.
template <class Pred>
bool eventually(Pred pred) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (int i = 0; !pred(); ++i) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    if (i < 1000) {
      weft::yield();
      std::this_thread::yield();
    } else {
      weft::sleep_for(std::chrono::microseconds(200));
    }
  }
  return true;
}

}  // namespace weft::test

// SCOPED_TRACE for code in fibers that may park. gtest keeps its trace
// stack per thread, and a fiber that parks may resume on another worker: it
// would then pop another thread's stack (gtest dies in
// UnitTest::PopGTestTrace), and its failures would miss the trace. The pin,
// made first and so ended last, keeps the fiber on one thread for the
// scope. Two fibers tracing on one worker at once share that thread's
// stack, as two scopes on one thread do: a failure shows both traces.
#define WEFT_SCOPED_TRACE(message)                           \
  const ::weft::PinToWorker WEFT_TRACE_PIN_NAME(__LINE__){}; \
  SCOPED_TRACE(message)
#define WEFT_TRACE_PIN_NAME(line) WEFT_TRACE_PIN_NAME_(line)
#define WEFT_TRACE_PIN_NAME_(line) weft_scoped_trace_pin_##line
