// Seeing inside a running program.
#pragma once

#include "weft/detail/cxx20.h"

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace weft {

// Writes every fiber of the running runtime to `out`, as Go's goroutine
// dump: grouped by state (running, runnable, parked) and wait reason (chan
// receive, Mutex.lock, sleep, IO wait with the fd and the socket's
// addresses, ...), each with its id, name (SpawnOptions::name), how long it
// has been parked, its stack (symbolized; file and line where the library
// was built with libdw and the code has debug info) and where it was
// spawned. The world stops meanwhile: each worker stops at its next
// scheduling point, and one running a fiber that does not park or yield
// within 100 ms is left running (that fiber is listed without a stack).
// Callable from fibers and threads; SIGQUIT writes one to stderr and exits
// with status 2, as Go (WEFT_TRACEBACK=none writes no fibers).
void dump_fibers(std::FILE* out);

// Latencies in log2 buckets: bucket i counts samples of [2^i, 2^(i+1)) ns
// (bucket 0 also counts 0 and 1 ns).
struct LatencyHistogram {
  static constexpr int kBuckets = 40;
  std::array<std::uint64_t, kBuckets> buckets{};

  std::uint64_t count() const noexcept;
  // The upper edge of the bucket that holds quantile q (0 < q <= 1): the
  // true value is at most that and more than half of it. Zero if empty.
  std::chrono::nanoseconds quantile(double q) const noexcept;
};

// A snapshot of the running runtime (Go's runtime/metrics). Taking it stops
// the world briefly (as a dump does, without walking stacks): for a
// monitoring endpoint, a signal handler's fiber or shutdown, not a hot loop.
struct Metrics {
  std::uint64_t fibers_spawned = 0;  // since run() began
  std::uint64_t fibers_live = 0;
  std::uint64_t fibers_running = 0;
  std::uint64_t fibers_runnable = 0;
  std::uint64_t fibers_parked = 0;
  // Parked fibers by what they wait for ("chan receive", "IO wait (read)",
  // ... as in a dump), reasons with none left out.
  std::vector<std::pair<std::string, std::uint64_t>> parked_by_reason;
  int workers = 0;
  int workers_idle = 0;
  int workers_spinning = 0;
  // 1 while a busy worker watches the timers and the poller in place of an
  // idle one (its poll readied a short batch, which it runs itself: the
  // keep-up rule), else 0; and how often sysmon found such a worker held
  // by one fiber and woke an idle one to watch instead (timers and I/O
  // then waited for sysmon's round, up to ~4 ms).
  int workers_watching = 0;
  std::uint64_t watchers_relieved = 0;
  std::uint64_t io_waiters = 0;      // fibers parked on a socket now
  std::uint64_t poller_wakeups = 0;  // fibers the poller has readied (process total)
  // What the scheduler did since run() began, as Tokio's worker counters:
  // what a second worker costs shows here first (a wake-up of a sleeping
  // worker is a futex or poller wake and a thread switch).
  std::uint64_t switches = 0;        // fibers run (each switch to one)
  std::uint64_t steals = 0;          // batches taken from another worker's queue
  std::uint64_t worker_wakeups = 0;  // sleeping workers woken for work
  // Sleeps that a worker's last look refused, for work it saw queued: a
  // race now and then, not once per request.
  std::uint64_t sleeps_refused = 0;
  std::uint64_t coop_yields = 0;     // fibers that spent their budget (weft/detail/coop.h)
  std::uint64_t timers_pending = 0;  // sleeps, Timers, deadlines
  int blocking_threads = 0;          // the blocking pool's threads
  std::int64_t blocking_jobs = 0;    // jobs queued or running there
  // Made runnable -> running (one in 64 sampled), and a poller wake-up
  // (readiness or an I/O deadline) -> running (every one): Go's
  // /sched/latencies:seconds and the wake-up latency weft exists for.
  LatencyHistogram scheduling_latency;
  LatencyHistogram poller_latency;

  // Several lines of "name value", for logs and the examples' SIGUSR1.
  std::string to_string() const;
};

// All zero where no runtime runs.
Metrics metrics();

}  // namespace weft
