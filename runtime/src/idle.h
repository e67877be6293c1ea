// The idle protocol: how workers with nothing to run go to sleep and are
// woken, and which of them watches the timers and the poller (the timer
// role, also called the poll role). One object per runtime
// (Scheduler::idle). Internal to the runtime; the code is in idle.cc, but for
// the checks the timer and find-work paths make inline, below.
//
// Terms. A worker is *idle* while it is on the idle list (counted in nidle_).
// It is *spinning* while it looks for work to steal (counted in nspinning_);
// a worker woken by wakep() starts out spinning. A spinner that found
// nothing for a few microseconds while other workers run fibers *naps*
// (nap(): the napper_, at most one) between its looks: still counted as
// spinning, but off the CPU (a busy spinner on a core that shares its
// pipeline with a busy worker's cost a 2-worker ping-pong a third of its
// speed under Go's wake-up rule, invariant 3); while no other worker runs
// fibers it keeps looking, but offers its CPU between looks after the first
// few microseconds, so that a thread that shares the CPU (a client on the
// server's cores) runs first, and less often after an offer nobody took
// (find_runnable). A worker holds the *timer
// role* while it is timer_sleeper_: it then sleeps in the poller until I/O,
// the earliest timer across all workers' heaps (timer_sleep_until_), or a
// wake-up. Every other idle worker sleeps on its own wake word (a futex)
// until woken. Busy workers run their own heaps every 16 switches.
//
// Invariants.
// 1. At most one worker holds the timer role, so at most one blocks in the
//    poller: the role is taken by CAS from null, and given up by its holder.
// 2. While any worker is idle and any timer or I/O waiter exists, one worker
//    holds the role and sleeps no later than the earliest timer across all
//    heaps, or a spinner is about to take it (a spinner that finds no work
//    sleeps, and takes a vacant role), or a busy worker watches in its place
//    (the watcher_, invariant 7). timer_added() keeps this as timers come:
//    one earlier than timer_sleep_until_ (0 while the holder decides) pokes
//    the holder, which then recomputes; with no holder and no watcher,
//    wakep().
// 3. A fiber made runnable while a worker is idle and none spins wakes one,
//    but for what a poll readied that its poller keeps (invariant 7).
//    Every ready and spawn calls wakep() once the fiber is queued (a
//    ReadyBatch once for its batch, a thread once it has put the fiber in
//    the global queue); wakep() fences before it reads nidle_. A sleeper
//    increments nidle_, then looks at every queue once more (its last look)
//    before it sleeps. A Dekker pair: one of them sees the other. wakep()
//    wakes nobody while a worker spins: the spinner finds the work, or
//    sleeps and makes that last look itself, and the last spinner to find
//    work wakes another (found_work(), Go's rule). A yield requeues its
//    fiber without wakep(): it was runnable already. A napping spinner is
//    poked by wakep() for work any worker may take (Work::stealable); a
//    fiber put only in its readier's empty runnext (Work::runnext) waits
//    for the napper's next look (a nap lasts 50 us at most, and the whole
//    napping phase 2 ms before the spinner sleeps), and is stolen then if
//    its worker has not switched since the nap began: its worker runs it
//    next unless the fiber running there holds on, and a ping-pong that
//    poked a napper on every ready would keep it awake.
// 4. A worker leaving the role (woken, poked, or its poll returned) hands it
//    on once it is busy: found_work() calls wakep() if anything is left to
//    watch. One that finds nothing goes back to sleep and takes the role
//    again.
// 5. A pinned fiber handed to its worker (Worker::hand_to_home) is found
//    by that worker alone: hand_to_home pushes it onto the worker's inbox
//    and then wakes that worker (wake_pinned_home) if it sleeps, or pokes
//    it if it naps. A sleeper looks at its own inbox in its last look, and
//    a napper before it waits: the same Dekker pairs as invariant 3's.
// 6. sysmon is the backstop: a timer overdue by over 1 ms while the role is
//    lost (timer_role_lost: idle workers, and no holder planning to wake for
//    it) on two of its rounds in a row gets a worker woken (wake_for_timers).
// 7. The keep-up rule. A worker whose poll readied fewer than kKeepUpQueue
//    fibers, all into its own run queue, runs them itself and wakes nobody
//    for them: it reaches them sooner than a woken worker would arrive (a
//    wake-up costs 30-70 us on the 2-core VM, a request's fiber ~5-10 us),
//    and a second worker that takes half of a short batch costs more than it
//    brings while a client shares the cores (RESP PING under redis-benchmark,
//    2 cores: a third of the server's CPU, and answers that trickle out one
//    or two at a time instead of in runs, which costs the client too). So
//    its ReadyBatch does not call wakep(); as the last spinner it does not
//    wake another (found_work); and leaving the timer role it does not hand
//    the role on but becomes the watcher_: at every kTimerCheckTicks-th
//    switch it runs every heap's due timers and polls, as find_runnable does
//    whenever its queue runs dry, and it takes the role back when it goes
//    to sleep. A watcher held by one fiber for a whole sysmon round (a
//    stuck worker) is relieved: sysmon clears watcher_ and wakes an idle
//    worker, which takes the role when it finds nothing to run; the fibers
//    queued behind the stuck one are sysmon's already (a stuck worker with
//    queued work wakes a worker to steal it). What this trades: behind a
//    fiber that holds its worker, a kept batch, and I/O and timers on idle
//    workers' heaps, wait up to two sysmon rounds (4 ms) instead of a
//    wake-up. Readies that are not a poll's (a channel, a cancel) wake as
//    in invariant 3.
//
// Memory orders (every pair named again where it is used):
// - napper_ and the queues: nap() publishes napper_ (seq_cst CAS) and then
//   looks at the run queues and the global queue (seq_cst loads), and at
//   stopping and stw; wakep() fences after the caller's queue store and
//   then reads napper_ (seq_cst), as shutdown and a dump read it after
//   their seq_cst stores: one of them sees the other. nap_word is armed
//   before napper_ is published, so a poke that found the napper disarms it.
// - nidle_ and the queues: the fence in wakep() after the caller's queue
//   store, against the sleeper's seq_cst nidle_ increment and the seq_cst
//   loads of its last look (RunQueue::empty_seq_cst,
//   GlobalQueue::size_seq_cst, runnext, its own pinned_inbox). The same
//   fence in wake_pinned_home, after hand_to_home's seq_cst push, against
//   the same increment and the load of the inbox; and against nap()'s
//   store of napper_ and its load of the inbox.
// - A worker's wake_word and in_poll: a waker stores wake_word (kWoken under
//   mu_, or kPoked by CAS) and then reads in_poll; the holder of the role
//   stores in_poll and then reads wake_word; all seq_cst. The waker then
//   wakes the poller or the futex, whichever the sleeper waits on; a sleeper
//   that saw the word changed does not wait.
// - timer_sleeper_ and timer_sleep_until_ against the heaps: the holder
//   publishes itself, then reads every heap's min_when, then publishes
//   until; timer_added() runs after the heap's seq_cst store of min_when and
//   reads timer_sleeper_ and then until; all seq_cst. No holder: one to come
//   reads the heap with the new timer in it. until == 0: it pokes the
//   holder. Any other until may have been computed without the new timer,
//   so it is compared with the timer's time, and a sooner timer pokes.
// - watcher_ against the heaps: timer_added() runs after the heap's seq_cst
//   store of min_when and reads watcher_ (seq_cst); the watcher, going to
//   sleep, clears watcher_ (seq_cst) and then takes the role and reads
//   every heap's min_when, or finds work and runs it: one of them sees the
//   other, so a timer added as the watcher stops watching is never left
//   without someone to wake for it. The watcher's own reads of watcher_
//   (pick_local) are relaxed: a stale one costs a look, or skips one that
//   sysmon has just taken over.
// - sysmon's sleep through an idle runtime: sysmon stores sysmon_sleeping
//   and then checks all_idle(); wakep() decrements nidle_ and then reads
//   sysmon_sleeping; all seq_cst: a worker woken while sysmon goes to sleep
//   wakes sysmon too.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "worker.h"

namespace weft::detail {

struct Scheduler;

// Invariant 7: a poll's batch that leaves its poller's run queue shorter
// than this is run by that worker alone. RESP PING under redis-benchmark (2
// cores, 6 interleaved runs): 1.14x the requests a second of waking for
// every batch; an experiment's 4 gave 1.07x where its 16 gave 1.12x. A
// batch this long is ~100 us of a request server's work, about what a
// wake-up takes here.
constexpr std::uint32_t kKeepUpQueue = 16;

class Idle {
 public:
  // A sleeping worker's wake_word.
  static constexpr std::uint32_t kAsleep = 0, kWoken = 1, kPoked = 2;

  Idle(Scheduler& sched, int nworkers) : sched_(sched), nworkers_(nworkers) {}
  Idle(const Idle&) = delete;
  Idle& operator=(const Idle&) = delete;

  // Wakes one sleeping worker to look for work, unless one is already
  // looking (spinning) or none sleeps. True if it woke one. For whoever has
  // just queued work. Inline up to the check that anyone sleeps: every
  // spawn and ready makes it, and mostly nobody does.
  // What the caller of wakep() queued: a fiber only in its own runnext,
  // which its worker runs next unless the fiber running there holds on (a
  // napping spinner looks for that after its nap), or work that any worker
  // may take (a run queue, the global queue), for which a napping spinner
  // is poked at once.
  enum class Work { runnext, stealable };

  bool wakep(Work work = Work::stealable) {
    // The caller has just published work (a run queue or runnext store, a
    // global-queue put) and now reads nidle; a sleeper counts itself in
    // nidle (an RMW) and then reads the queues (any_queued_work). A Dekker
    // pair: without a fence the publisher's store may still sit in its
    // store buffer while it reads nidle == 0 (x86 allows it), the sleeper
    // reads the old queues, and the work waits for sysmon. (membarrier(2)
    // on the sleeper's side instead, with a compiler barrier here, was
    // measured: every sleep then interrupts the busy core, and a 2-worker
    // ping-pong, whose idle worker sleeps and wakes all the time, slowed
    // by a third.)
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (nidle_.load(std::memory_order_seq_cst) != 0 && wake_one()) return true;
    // Someone spins (or nobody sleeps). One that naps is poked for work it
    // should take now; the fence above, against nap()'s store of napper_
    // and its look, makes one of us see the other.
    if (work == Work::stealable && napper_.load(std::memory_order_seq_cst) != nullptr) {
      poke_napper();
    }
    return false;
  }

  // A spinner's nap, while other workers run fibers (find_runnable): for up
  // to `ns`, or until wakep() queues stealable work. False, at once, if
  // another spinner naps already (one is enough; the caller then sleeps).
  bool nap(Worker* w, std::int64_t ns);

  // `home` has just been handed a pinned fiber (its pinned_inbox): wakes it
  // if it sleeps, pokes it if it naps. Only it may run that fiber.
  void wake_pinned_home(Worker* home);

  // A timer now expires at `when`: make sure some worker will be awake then.
  void timer_added(std::int64_t when);
  // Gets a worker to run due timers: the role's holder if there is one,
  // else an idle worker, who then takes the role.
  void wake_for_timers();
  // True if no worker will wake for a timer due at `when` by itself: some
  // worker is idle (so the role should be held), and the role's holder, if
  // any, sleeps past it. Busy workers run their own heaps.
  bool timer_role_lost(std::int64_t when) const;

  // For a worker about to sleep: true if it spins (looks for work to steal)
  // first, counted as spinning. Spinners are bounded to half the busy
  // workers, so that an idle runtime does not burn every core looking.
  bool start_spinning(Worker* w);
  // For a worker that found work: a spinner stops (the last one wakes
  // another), and one that left the timer role hands it on.
  void found_work(Worker* w);
  // Whether `w` watches the timers and the poller in the role's place
  // (invariant 7). Relaxed: for the watcher itself, and for sysmon.
  bool watching(const Worker* w) const { return watcher_.load(std::memory_order_relaxed) == w; }
  // Whether any worker watches (weft::metrics); relaxed, a snapshot.
  bool watched() const { return watcher_.load(std::memory_order_relaxed) != nullptr; }
  // sysmon, `w` held by one fiber for a round: it stops watching, and an
  // idle worker is woken to take the role.
  void relieve_stuck_watcher(Worker* w);

  // The role's holder, whose poll returned events, before it readies them:
  // it leaves the idle list as wakep() would have taken it off (counted as
  // spinning, sysmon woken if it slept), so that the batch's wakep() does
  // not find it there, at the list's head as often as not, and futex-wake
  // its own word, for nobody (with one worker, once for every poll that
  // returned anything). Its found_work() then wakes another worker if
  // there is more to do, as after any wake-up.
  void leave_to_dispatch(Worker* w);
  // The worker has found no work: it counts itself idle, looks at every
  // queue once more, then takes the timer role or sleeps on its wake word
  // until woken, and leaves the idle list. Returns with w->spinning set if
  // wakep() woke it; at once if the runtime is stopping; by `wake_by`
  // (CLOCK_MONOTONIC ns) at the latest, for chores of its own.
  void sleep(Worker* w, std::int64_t wake_by);

  // Shutdown, once Scheduler::stopping is set: wakes every sleeping worker.
  void wake_all();
  // A dump, once Scheduler::stw is set: gets every sleeping worker back to
  // its scheduling loop, where it stops (as a timer poke does: nobody counts
  // it as spinning).
  void poke_all();

  bool all_idle() const { return nidle_.load(std::memory_order_seq_cst) == nworkers_; }
  // Whether the role's holder is blocked in the poller (a hint: others then
  // need not poll).
  bool poller_blocked() const { return blocked_in_poll_.load(std::memory_order_relaxed); }
  // A sleeping worker is readying what its poll returned and is still
  // counted idle (sleep() drops this after nidle).
  bool dispatching() const { return dispatching_.load(std::memory_order_seq_cst) != 0; }
  int idle_workers() const { return nidle_.load(std::memory_order_relaxed); }
  bool napping() const { return napper_.load(std::memory_order_relaxed) != nullptr; }
  int spinning_workers() const { return nspinning_.load(std::memory_order_relaxed); }
  std::uint64_t wakeups() const { return wakeups_.load(std::memory_order_relaxed); }
  std::uint64_t watchers_relieved() const {
    return watchers_relieved_.load(std::memory_order_relaxed);
  }
  // sleep() calls whose last look found queued work, so that they went back
  // to look for it instead of sleeping.
  std::uint64_t sleeps_refused() const { return sleeps_refused_.load(std::memory_order_relaxed); }

 private:
  // wakep() once it saw a sleeper.
  bool wake_one();
  void poke_napper();
  // Wakes a worker that sleeps (on its futex, or in the poller).
  void wake_worker(Worker* w);
  // Timers on any heap, or fibers parked on I/O: what the timer role watches.
  bool anything_to_watch() const;
  // Fibers in a run queue or the global queue (seq_cst: a last look).
  bool any_stealable_work() const;
  // A sleeper's last look, after it counted itself idle.
  bool any_queued_work(Worker* self) const;
  bool any_runnext_behind_a_busy_fiber(Worker* self) const;
  // Takes w off the idle list as a wake-up does: counted as spinning, its
  // wake word kWoken. False if it was not on the list.
  bool take_off_list(Worker* w);
  // Off the list, under mu_: nidle_ drops with it.
  void unlink_locked(Worker* w);
  // For a worker that left the list to run fibers: sysmon, asleep through
  // an idle runtime, watches again.
  void wake_sysmon();

  Scheduler& sched_;
  const int nworkers_;

  // Hot fields that different workers write sit on their own cache lines.
  alignas(64) std::mutex mu_;  // the idle list: head_, and each worker's next_idle and on_idle_list
  Worker* head_ = nullptr;
  alignas(64) std::atomic<int> nidle_{0};
  alignas(64) std::atomic<int> nspinning_{0};
  // The spinner that naps (nap()), if any: written at each nap's start and
  // end, read by every wakep() that queued stealable work.
  alignas(64) std::atomic<Worker*> napper_{nullptr};

  // The one idle worker that sleeps until the earliest timer, blocked in the
  // poller (the others sleep until woken), and that time (0 while it is
  // being decided).
  alignas(64) std::atomic<Worker*> timer_sleeper_{nullptr};
  std::atomic<std::int64_t> timer_sleep_until_{0};
  // A busy worker that watches the heaps and the poller in the role's place
  // (invariant 7), if any.
  std::atomic<Worker*> watcher_{nullptr};
  std::atomic<bool> blocked_in_poll_{false};
  std::atomic<int> dispatching_{0};

  // Counters for metrics(), off the timer sleeper's line, which every
  // timer added and every poll reads.
  alignas(64) std::atomic<std::uint64_t> wakeups_{0};
  std::atomic<std::uint64_t> sleeps_refused_{0};
  std::atomic<std::uint64_t> watchers_relieved_{0};
};

static_assert(Idle::kAsleep == 0, "Worker::wake_word starts as kAsleep");

inline void Idle::timer_added(std::int64_t when) {
  if (timer_sleeper_.load(std::memory_order_seq_cst)) {
    // seq_cst: pairs with the holder's read of every heap's min_when after
    // it published itself (sleep); 0 while it decides.
    const std::int64_t until = timer_sleep_until_.load(std::memory_order_seq_cst);
    if (until != 0 && until <= when) return;
  } else if (watcher_.load(std::memory_order_seq_cst)) {
    // It looks at every heap within kTimerCheckTicks switches, and at once
    // when it goes to sleep (pairs with its clearing of watcher_ there).
    return;
  }
  wake_for_timers();
}

inline bool Idle::start_spinning(Worker* w) {
  const int busy = nworkers_ - nidle_.load(std::memory_order_relaxed);
  if (!w->spinning && 2 * nspinning_.load(std::memory_order_relaxed) >= busy) return false;
  if (!w->spinning) {
    w->spinning = true;
    nspinning_.fetch_add(1, std::memory_order_seq_cst);
  }
  return true;
}

inline void Idle::found_work(Worker* w) {
  // What we found is a batch our own poll readied, short enough to run
  // ourselves (invariant 7).
  const bool keeping_up = w->kept_poll_batch && w->runq.size() < kKeepUpQueue;
  w->kept_poll_batch = false;
  if (w->spinning) {
    w->spinning = false;
    // The last spinner found work; there may be more, so keep one looking.
    if (nspinning_.fetch_sub(1, std::memory_order_seq_cst) == 1 && !keeping_up) wakep();
  }
  if (w->left_timer_role) {
    w->left_timer_role = false;
    // We are about to run fibers, so we no longer watch the heaps from the
    // poller: an idle worker must, if anything is left to watch. It takes
    // the role when it goes back to sleep (Go: the M leaving netpoll wakes
    // a spinner). Unless we watch them ourselves, between our fibers.
    if (anything_to_watch()) {
      Worker* none = nullptr;
      if (!keeping_up || !watcher_.compare_exchange_strong(none, w, std::memory_order_seq_cst)) {
        wakep();
      }
    }
  }
}

}  // namespace weft::detail
