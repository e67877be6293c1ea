// struct Scheduler: one runtime's state, shared by its workers, sysmon and
// the threads that enter it from outside; and the running runtime, g_sched.
// For the scheduler's own files only:
//
//   scheduler.cc  the worker loop, finding and stealing work, the switch,
//                 park and ready, spawn, arming timers, recycling fiber
//                 records, sleeping and waking, stats
//   records.cc    fiber records: allocating, reclaiming at teardown
//                 (records.h)
//   sysmon.cc     the monitor thread: watchdog, stuck work, timer backstop
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
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "chaos.h"
#include "fiber.h"
#include "netpoll.h"
#include "records.h"
#include "run_queue.h"
#include "timer.h"
#include "weft/poller.h"
#include "worker.h"

namespace weft::detail {

// How long a thief watches a worker whose runnext it would take (steal_from,
// Scheduler::any_runnext_behind_a_busy_fiber): one that did not switch meanwhile
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
  Scheduler(int n, std::uint32_t generation);  // lifecycle.cc

  const int nworkers;
  // Which runtime of this process this is: fibers carry it, so that a fiber
  // abandoned by an earlier runtime is dropped if something readies it.
  const std::uint32_t gen;
  std::vector<std::unique_ptr<Worker>> workers;

  // Hot fields that different workers write sit on their own cache lines.
  alignas(64) GlobalQueue gq;

  alignas(64) std::mutex idle_mu;
  Worker* idle_head = nullptr;
  alignas(64) std::atomic<int> nidle{0};
  alignas(64) std::atomic<int> nspinning{0};
  alignas(64) std::atomic<bool> stopping{false};

  // The one idle worker that sleeps until the earliest timer, blocked in the
  // poller (the others sleep until woken), and that time (0 while it is
  // being decided).
  alignas(64) std::atomic<Worker*> timer_sleeper{nullptr};
  std::atomic<std::int64_t> timer_sleep_until{0};

  std::unique_ptr<poll::Poller> poller;
  std::atomic<bool> blocked_in_poll{false};
  std::atomic<std::int64_t> last_poll{0};

  // Non-blocking poll for I/O readiness, when nobody is blocked in the poller.
  void poll_now() {
    if (netpoll_waiters() == 0 || blocked_in_poll.load(std::memory_order_relaxed)) return;
    chaos::at(chaos::Point::poll);
    poll::Event events[64];
    const int n = poller->wait(events, 64, 0);
    last_poll.store(mono_now_ns(), std::memory_order_relaxed);
    if (n > 0) netpoll_dispatch(events, n);
  }

  // Wakes a worker that sleeps (on its futex, or in the poller). The caller
  // has stored its wake_word with seq_cst: that store and our load of in_poll
  // pair with the sleeper's store of in_poll and load of wake_word (Dekker),
  // which a release store does not guarantee (on x86 it may still sit in the
  // store buffer while in_poll is read).
  void wake_worker(Worker* w) {
    if (w->in_poll.load(std::memory_order_seq_cst)) {
      poller->wake();
    } else {
      futex_wake(&w->wake_word, 1);
    }
  }

  // Queues a fiber from a thread that is not one of this runtime's workers
  // (inside a ForeignEntry).
  void submit_foreign(Fiber* f) {
    global_put(f);
    wakep();
  }

  RecordDepot depot;  // free fiber-record batches (records.h)

  std::atomic<std::uint64_t> next_id{1};
  std::atomic<std::uint64_t> foreign_spawned{0};
  std::atomic<std::uint64_t> wakeups{0};
  std::atomic<std::uint64_t> watchdog_reports{0};
  std::atomic<std::uint64_t> timer_rescues{0};
  std::atomic<std::uint64_t> sysmon_wakeups{0};

  std::mutex done_mu;
  std::condition_variable done_cv;
  bool done = false;

  std::thread sysmon;
  std::int64_t lost_timer_seen = kNever;  // sysmon's, for the two-round rule
  std::atomic<std::uint32_t> sysmon_word{0};
  std::atomic<bool> sysmon_sleeping{false};

  void global_put(Fiber* f) { gq.put(&f, 1); }

  // Wakes one sleeping worker to look for work, unless one is already
  // looking (spinning) or none sleeps. True if it woke one.
  bool wakep() {
    // The caller has just published work (a run queue or runnext store, a
    // global-queue put) and now reads nidle; a sleeper counts itself in
    // nidle (an RMW) and then reads the queues (any_queued_work). A Dekker
    // pair: without this fence the publisher's store may still sit in its
    // store buffer while it reads nidle == 0 (x86 allows it), the sleeper
    // reads the old queues, and the work waits for sysmon.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (nidle.load(std::memory_order_seq_cst) == 0) return false;
    int zero = 0;
    if (!nspinning.compare_exchange_strong(zero, 1, std::memory_order_seq_cst)) return false;
    Worker* w = nullptr;
    {
      std::lock_guard lock(idle_mu);
      w = idle_head;
      if (w) {
        idle_head = w->next_idle;
        w->on_idle_list = false;
        nidle.fetch_sub(1, std::memory_order_seq_cst);
        w->wake_word.store(Worker::kWoken, std::memory_order_seq_cst);
      }
    }
    if (!w) {
      nspinning.fetch_sub(1, std::memory_order_seq_cst);
      return false;
    }
    wake_worker(w);
    wakeups.fetch_add(1, std::memory_order_relaxed);
    if (sysmon_sleeping.load(std::memory_order_seq_cst)) {
      sysmon_word.store(1, std::memory_order_release);
      futex_wake(&sysmon_word, 1);
    }
    return true;
  }

  std::int64_t earliest_timer() const {
    std::int64_t next = kNever;
    for (const auto& w : workers) {
      next = std::min(next, w->timers.min_when.load(std::memory_order_seq_cst));
    }
    return next;
  }

  // True if no worker will wake for a timer due at `when` by itself: some
  // worker is idle (so the role should be held), and the role's holder, if
  // any, sleeps past it. Busy workers run their own heaps.
  bool timer_role_lost(std::int64_t when) const {
    if (nidle.load(std::memory_order_seq_cst) == 0) return false;
    if (!timer_sleeper.load(std::memory_order_seq_cst)) return true;
    const std::int64_t until = timer_sleep_until.load(std::memory_order_seq_cst);
    return until != 0 && until > when;
  }

  // Gets a worker to run due timers: the timer sleeper if there is one,
  // else an idle worker, who then takes the role.
  void wake_for_timers() {
    if (Worker* sleeper = timer_sleeper.load(std::memory_order_seq_cst)) {
      std::uint32_t asleep = Worker::kAsleep;
      if (sleeper->wake_word.compare_exchange_strong(asleep, Worker::kPoked)) {
        wake_worker(sleeper);
      }
      return;
    }
    wakep();
  }

  // A timer now expires at `when`: make sure some worker will be awake then.
  void timer_added(std::int64_t when) {
    if (timer_sleeper.load(std::memory_order_seq_cst)) {
      // seq_cst: pairs with the sleeper's read of every heap's min_when
      // after it published itself (Worker::sleep); 0 while it decides.
      const std::int64_t until = timer_sleep_until.load(std::memory_order_seq_cst);
      if (until != 0 && until <= when) return;
    }
    wake_for_timers();
  }

  // Timers on any heap, or fibers parked on I/O: what the timer role watches.
  bool anything_to_watch() const { return earliest_timer() != kNever || netpoll_waiters() > 0; }

  // A sleeper's last look, after it counted itself idle. Every load is
  // seq_cst: the publishers' halves are the fence in wakep().
  bool any_queued_work(Worker* self) const {
    if (gq.size_seq_cst() != 0) return true;
    bool runnext_elsewhere = false;
    for (const auto& w : workers) {
      if (!w->runq.empty_seq_cst()) return true;
      if (w.get() != self && w->runnext.load(std::memory_order_seq_cst)) runnext_elsewhere = true;
    }
    // A fiber in another worker's runnext runs next there, unless that
    // worker is held by one fiber: then it is work for us (Go counts runnext
    // as queued work, and steals it from a worker that does not switch).
    return runnext_elsewhere && any_runnext_behind_a_busy_fiber(self);
  }

  bool any_runnext_behind_a_busy_fiber(Worker* self) const;  // scheduler.cc

  void shutdown() {
    {
      std::lock_guard lock(done_mu);
      done = true;
    }
    done_cv.notify_all();
    stopping.store(true, std::memory_order_seq_cst);
    {
      std::lock_guard lock(idle_mu);
      while (Worker* w = idle_head) {
        idle_head = w->next_idle;
        w->on_idle_list = false;
        nidle.fetch_sub(1, std::memory_order_seq_cst);
        w->wake_word.store(Worker::kWoken, std::memory_order_seq_cst);
        wake_worker(w);
      }
    }
    sysmon_word.store(1, std::memory_order_release);
    futex_wake(&sysmon_word, 1);
  }

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
  }
  ~ForeignEntry() { g_foreign_entries.fetch_sub(1, std::memory_order_release); }
  ForeignEntry(const ForeignEntry&) = delete;
  ForeignEntry& operator=(const ForeignEntry&) = delete;
  Scheduler* sched() const noexcept { return sched_; }

 private:
  Scheduler* sched_;
};

inline void drop_late_ready() noexcept {
  g_late_readies_dropped.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace weft::detail
