// Workers, run queues and the scheduler loop. Internal to the runtime.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#include "fiber.h"
#include "weft/detail/park.h"

namespace weft::detail {

struct Worker;

// The worker running the caller, read through a call the compiler cannot
// inline or hoist: a fiber may resume on another thread after any switch.
Worker* current_worker() noexcept;

// Where the running fiber's FiberLocal table pointer lives (its record's
// `locals`), or this thread's outside any fiber; as fresh as
// current_worker(); `*thread` (if given) says which. fiber_local.cc's, for
// creating and destroying values.
FiberLocalTable** fiber_local_home(bool* thread = nullptr) noexcept;
// Destroys every value in `*home` (a fiber's, at its end, or a thread's at
// its exit), on the calling fiber or thread, and frees the table.
void destroy_fiber_locals(FiberLocalTable*& home) noexcept;
// A fiber reclaimed without running to its end (a late ready): its table is
// kept, reachable, until the next destroy_orphaned_fiber_locals().
void orphan_fiber_locals(Fiber* f) noexcept;
// Destroys the orphaned tables, on the calling thread (weft::run's teardown,
// where no lock is held and no runtime runs).
void destroy_orphaned_fiber_locals() noexcept;

// True while this thread is inside a ReadyBatch's scope (where nothing may
// park or yield).
bool in_ready_batch() noexcept;

// The fiber running on this thread and its stack, for the fault handler
// (async-signal-safe).
const Fiber* signal_current_fiber(Stack* stack) noexcept;

// Names the calling thread `prefix` followed by `n` (none when n < 0), cut
// to the kernel's 15 characters, for top -H, gdb and /proc/PID/task/*/comm:
// weft-w0..., weft-sysmon, weft-block-N.
void name_this_thread(const char* prefix, int n) noexcept;

struct SchedulerStats {
  std::uint64_t spawned;
  std::uint64_t steals;
  std::uint64_t worker_wakeups;
  std::uint64_t watchdog_reports;
  std::uint64_t timer_rescues;      // overdue timers sysmon had to wake a worker for
  std::uint64_t sysmon_wakeups;     // workers sysmon woke for work stuck behind a busy fiber
  std::uint64_t watchers_relieved;  // stuck workers watching in the timer role's place (idle.h)
  int watcher;                      // the worker that watches now, or -1 (a snapshot)
  std::uint64_t coop_yields;        // fibers that spent their budget and yielded (coop.h)
  int idle_workers;
  int napping_workers;       // spinners napping while others run (Idle::nap)
  int spinning_workers;      // napping ones included; a listed idle one may still count
  std::uint64_t schedticks;  // summed over workers: what the watchdog watches
  std::int64_t live_fibers;
  std::uint64_t records_pooled;  // free fiber records in the depot (records.h)
};
// Which runtime of this process is running (counting from 1), or 0 when
// none is: what outlives one runtime compares it with its own.
std::uint32_t runtime_generation() noexcept;

// ready() calls that found their fiber's runtime gone (returned, or
// replaced by a later one) and were dropped; process-wide, for tests.
std::uint64_t late_readies_dropped() noexcept;

// Jobs on the blocking pool that have not yet readied their fiber
// (blocking.cc): a deadlock is not declared while one runs.
std::int64_t blocking_jobs_in_flight() noexcept;
int blocking_pool_threads();
// Marks the calling thread as the runtime's own (a blocking-pool thread,
// sysmon): its readies are not a foreign thread's use of the runtime.
void set_runtime_thread(bool yes) noexcept;
bool is_runtime_thread() noexcept;

// Counters of the running runtime (zero when none runs); for tests.
SchedulerStats scheduler_stats() noexcept;

// For tests: a dump that reads a fiber running on a worker the world did not
// stop runs `hook` first and then waits (up to the world's own wait) for
// that worker to stop, as a dump slow enough that the fiber ended or
// parked meanwhile would find it. Null: none.
void set_dump_running_read_hook(void (*hook)());
// For tests: the longest nap of a spinner while others run (Idle::nap);
// zero restores the default. Read at each nap.
void set_spin_nap(std::chrono::nanoseconds nap);

}  // namespace weft::detail
