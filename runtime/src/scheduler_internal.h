// struct Scheduler: one runtime's state, shared by its workers, sysmon and
// the threads that enter it from outside; and the running runtime, g_sched.
// For the scheduler's own files only:
//
//   scheduler.cc  the worker loop, finding and stealing work, the switch,
//                 park and ready, spawn, arming timers, recycling fiber
//                 records, stats
//   idle.cc       the idle protocol: sleeping, waking, the timer role (idle.h)
//   records.cc    fiber records: allocating, reclaiming at teardown
//                 (records.h)
//   sysmon.cc     the monitor thread: watchdog, stuck work, timer backstop
//   registry.cc   the fiber registry (registry.h)
//   dump.cc       stopping the world, fiber dumps, SIGQUIT, deadlocks
//   lifecycle.cc  run_main: start-up, shutdown and teardown
// with run_queue.h and worker.h.
//
// Everything here is internal to the library: in weft::detail, in no
// installed header, and data hidden from the dynamic symbol table.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "chaos.h"
#include "fiber.h"
#include "idle.h"
#include "netpoll.h"
#include "records.h"
#include "run_queue.h"
#include "scheduler.h"
#include "timer.h"
#include "weft/poller.h"
#include "worker.h"

namespace weft::detail {

// How long a thief watches a worker whose runnext it would take (steal_from,
// Idle::any_runnext_behind_a_busy_fiber): one that did not switch meanwhile
// is held by one fiber and will not run its runnext soon.
constexpr std::uint64_t kRunnextStealWaitNs = 3'000;

inline std::uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1'000'000'000ULL +
         static_cast<std::uint64_t>(ts.tv_nsec);
}

inline void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                       const timespec* timeout = nullptr) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, timeout,
          nullptr, 0);
}

inline void futex_wake(std::atomic<std::uint32_t>* word, int count) {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr,
          nullptr, 0);
}

struct Scheduler {
  Scheduler(int n, std::uint32_t generation, std::int32_t coop_budget);  // lifecycle.cc

  // Sleeping, waking and the timer role (idle.h). First, so that its
  // address is the scheduler's: every ready and spawn calls idle.wakep()
  // with the pointer it has, as it called the scheduler's own wakep().
  Idle idle;

  const int nworkers;
  // Which runtime of this process this is: fibers carry it, so that a fiber
  // abandoned by an earlier runtime is dropped if something readies it.
  const std::uint32_t gen;
  std::vector<std::unique_ptr<Worker>> workers;

  // Hot fields that different workers write sit on their own cache lines.
  alignas(64) GlobalQueue gq;

  alignas(64) std::atomic<bool> stopping{false};
  // Stop-the-world for a dump (dump.cc): while `stw` is set, a worker runs
  // no fiber. It stops on g0 at its next scheduling point (Worker::
  // stop_for_world) and counts itself in stw_stopped; a worker running a
  // fiber that never yields is not waited for beyond a bound. Read on every
  // switch (relaxed), written only by a dump.
  std::atomic<bool> stw{false};
  std::atomic<int> stw_stopped{0};
  std::atomic<std::uint32_t> stw_word{0};  // 1 while stopped workers wait
  std::mutex stw_mu;                       // one dump at a time

  std::unique_ptr<poll::Poller> poller;
  std::atomic<std::int64_t> last_poll{0};

  // Non-blocking poll for I/O readiness, when nobody is blocked in the poller.
  void poll_now() {
    if (netpoll_waiters() == 0 || idle.poller_blocked()) return;
    chaos::at(chaos::Point::poll);
    poll::Event events[64];
    const int n = poller->wait(events, 64, 0);
    const std::int64_t now = mono_now_ns();
    last_poll.store(now, std::memory_order_relaxed);
    if (n > 0) netpoll_dispatch(events, n, now);
  }

  // Queues a fiber from a thread that is not one of this runtime's workers
  // (inside a ForeignEntry).
  void submit_foreign(Fiber* f) {
    global_put(f);
    idle.wakep();
  }

  RecordDepot depot;  // free fiber-record batches (records.h)

  std::atomic<std::uint64_t> next_id{1};
  std::atomic<std::uint64_t> foreign_spawned{0};
  std::atomic<std::uint64_t> watchdog_reports{0};
  std::atomic<std::uint64_t> timer_rescues{0};
  std::atomic<std::uint64_t> sysmon_wakeups{0};

  // Deadlock detection (sysmon.cc, Go's checkdead): off when RunOptions
  // says so, and from the first call into the runtime by a thread that is
  // not its own (ForeignEntry).
  bool detect_deadlocks = true;
  std::atomic<bool> foreign_used{false};
  // True if no fiber can ever be made runnable again: every worker idle,
  // no timer, no fiber waiting for I/O, no blocking job, no foreign thread.
  bool nothing_can_wake() const;
  bool anything_queued() const;  // any fiber in a run queue, runnext or the global queue
  void check_deadlock();         // sysmon.cc

  std::mutex done_mu;
  std::condition_variable done_cv;
  bool done = false;

  std::thread sysmon;
  std::int64_t lost_timer_seen = kNever;  // sysmon's, for the two-round rule
  // sysmon sleeps on this word; Idle::wakep() and shutdown() wake it.
  std::atomic<std::uint32_t> sysmon_word{0};
  std::atomic<bool> sysmon_sleeping{false};

  void global_put(Fiber* f) { gq.put(&f, 1); }

  std::int64_t earliest_timer() const {
    std::int64_t next = kNever;
    for (const auto& w : workers) {
      next = std::min(next, w->timers.min_when.load(std::memory_order_seq_cst));
    }
    return next;
  }

  // Ends the runtime: run_main returns once the workers and sysmon are out.
  void shutdown();  // lifecycle.cc

  void sysmon_loop();  // sysmon.cc
};

// Data the scheduler's files share is hidden: it binds within the library,
// as it did in one file's anonymous namespace (no load from the GOT).

// The running runtime, or null (lifecycle.cc).
[[gnu::visibility("hidden")]] extern std::atomic<Scheduler*> g_sched;
// ready() calls that found their fiber's runtime gone (late_readies_dropped()).
[[gnu::visibility("hidden")]] extern std::atomic<std::uint64_t> g_late_readies_dropped;
// Threads other than the runtime's workers inside an entry point (ready, go,
// add_timer, a ReadyBatch flush) that uses the scheduler: teardown waits for
// them before freeing it.
[[gnu::visibility("hidden")]] extern std::atomic<int> g_foreign_entries;

// Counts the calling thread in before it reads the scheduler, so that
// teardown, which clears g_sched and then waits for the count to drop,
// either frees it after this entry is done or is seen as gone (null) here.
// A Dekker pair: our increment then load of g_sched, and teardown's store
// of null then load of the count, all seq_cst.
class ForeignEntry {
 public:
  ForeignEntry() noexcept {
    g_foreign_entries.fetch_add(1, std::memory_order_seq_cst);
    sched_ = g_sched.load(std::memory_order_seq_cst);
    // A thread of the program's own may call in again at any time: from
    // now on no deadlock can be declared (sysmon.cc).
    if (sched_ && !sched_->foreign_used.load(std::memory_order_relaxed) && !is_runtime_thread()) {
      sched_->foreign_used.store(true, std::memory_order_seq_cst);
    }
  }
  ~ForeignEntry() { g_foreign_entries.fetch_sub(1, std::memory_order_release); }
  ForeignEntry(const ForeignEntry&) = delete;
  ForeignEntry& operator=(const ForeignEntry&) = delete;
  Scheduler* sched() const noexcept { return sched_; }

 private:
  Scheduler* sched_;
};

// The running runtime as the calling thread may use it until this object
// dies: a worker's own scheduler (it outlives its workers), or from any other
// thread through a ForeignEntry. sched() is null when no runtime runs.
class RuntimeRef {
 public:
  RuntimeRef() noexcept : worker_(current_worker()) {
    if (worker_) {
      sched_ = worker_->sched;
    } else {
      entry_.emplace();
      sched_ = entry_->sched();
    }
  }
  Worker* worker() const noexcept { return worker_; }  // null on other threads
  Scheduler* sched() const noexcept { return sched_; }

 private:
  Worker* worker_;
  Scheduler* sched_ = nullptr;
  std::optional<ForeignEntry> entry_;
};

// Writes every fiber of `s` to `out`, stopping the world meanwhile
// (dump.cc; weft::dump_fibers).
void dump_fibers_of(Scheduler* s, std::FILE* out);
// SIGQUIT writes a dump and exits with status 2, as Go: the handler marks it
// pending and wakes sysmon, which calls sigquit_if_pending (dump.cc).
void install_sigquit_handler();
void restore_sigquit_handler();
void sigquit_if_pending(Scheduler* s);
// "all fibers are asleep - deadlock!", a dump (unless WEFT_TRACEBACK=none),
// and exit status 2, as Go.
[[noreturn]] void die_of_deadlock(Scheduler* s);
// For a fiber that is about to end the process (an uncaught exception):
// its stack, and every fiber's with WEFT_TRACEBACK=all (dump.cc).
void traceback_on_crash();

// A fiber of a runtime that has ended, readied now: whoever readied it made
// its last touch (ready() always is one), and it will never run again, so
// its stack and record are reclaimed here.
inline void drop_late_ready(Fiber* f) noexcept {
  g_late_readies_dropped.fetch_add(1, std::memory_order_relaxed);
  free_abandoned(f);
}

}  // namespace weft::detail
