// The idle protocol (idle.h states its invariants): sleeping, waking, and the
// timer role.
#include "idle.h"

#include <algorithm>
#include <mutex>

#include "chaos.h"
#include "netpoll.h"
#include "registry.h"
#include "scheduler_internal.h"
#include "timer.h"

namespace weft::detail {

bool Idle::wake_one() {
  int zero = 0;
  if (!nspinning_.compare_exchange_strong(zero, 1, std::memory_order_seq_cst)) return false;
  Worker* w = nullptr;
  {
    std::lock_guard lock(mu_);
    w = head_;
    if (w) {
      unlink_locked(w);
      w->wake_word.store(kWoken, std::memory_order_seq_cst);
    }
  }
  if (!w) {
    nspinning_.fetch_sub(1, std::memory_order_seq_cst);
    return false;
  }
  wake_worker(w);
  wakeups_.fetch_add(1, std::memory_order_relaxed);
  wake_sysmon();
  return true;
}

void Idle::wake_sysmon() {
  // Our nidle_ decrement (seq_cst) before this load pairs with sysmon's
  // store of sysmon_sleeping then all_idle() (sysmon.cc): one of us sees
  // the other, so a worker that leaves the list never finds sysmon asleep
  // without waking it.
  if (sched_.sysmon_sleeping.load(std::memory_order_seq_cst)) {
    sched_.sysmon_word.store(1, std::memory_order_release);
    futex_wake(&sched_.sysmon_word, 1);
  }
}

void Idle::unlink_locked(Worker* w) {
  Worker** link = &head_;
  while (*link != w) link = &(*link)->next_idle;
  *link = w->next_idle;
  w->on_idle_list = false;
  nidle_.fetch_sub(1, std::memory_order_seq_cst);
}

bool Idle::take_off_list(Worker* w) {
  std::lock_guard lock(mu_);
  if (!w->on_idle_list) return false;
  unlink_locked(w);
  // As wake_one's: it wakes counted as spinning (Idle::sleep).
  nspinning_.fetch_add(1, std::memory_order_seq_cst);
  w->wake_word.store(kWoken, std::memory_order_seq_cst);
  return true;
}

void Idle::leave_to_dispatch(Worker* w) {
  // Not on the list: wakep() took us off meanwhile, and woke sysmon then.
  if (take_off_list(w)) wake_sysmon();  // we run fibers now, which it watches
}

void Idle::wake_pinned_home(Worker* home) {
  // After hand_to_home's seq_cst push: pairs with the sleeper's nidle_
  // increment and its last look at its inbox (any_queued_work), and with
  // nap()'s store of napper_ and its look. One of us sees the other.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (nidle_.load(std::memory_order_seq_cst) != 0 && take_off_list(home)) {
    wake_worker(home);
    wakeups_.fetch_add(1, std::memory_order_relaxed);
    wake_sysmon();
    return;
  }
  if (napper_.load(std::memory_order_seq_cst) == home) poke_napper();
}

bool Idle::nap(Worker* w, std::int64_t ns) {
  // Armed before we are published: a poke that finds us then disarms it.
  w->nap_word.store(1, std::memory_order_relaxed);
  Worker* none = nullptr;
  if (!napper_.compare_exchange_strong(none, w, std::memory_order_seq_cst)) return false;
  chaos::at(chaos::Point::sleep);  // between publishing ourselves and the last look
  // Stealable work queued before we published ourselves found no napper to
  // poke: look once more (seq_cst, against wakep()'s fence), as a sleeper's
  // last look does; and at shutdown and a dump's stop, which poke a napper
  // after they are flagged (wake_all, poke_all).
  // A pinned fiber handed to us before we published ourselves found no
  // napper to poke: the same look (wake_pinned_home's fence).
  const bool look_now =
      any_stealable_work() || w->pinned_inbox.load(std::memory_order_seq_cst) != nullptr ||
      sched_.stopping.load(std::memory_order_seq_cst) || sched_.stw.load(std::memory_order_seq_cst);
  if (!look_now) {
    const timespec timeout{static_cast<time_t>(ns / 1'000'000'000),
                           static_cast<long>(ns % 1'000'000'000)};
    futex_wait(&w->nap_word, 1, &timeout);
  }
  Worker* self = w;
  napper_.compare_exchange_strong(self, nullptr, std::memory_order_seq_cst);
  return true;
}

void Idle::poke_napper() {
  if (Worker* w = napper_.exchange(nullptr, std::memory_order_seq_cst)) {
    w->nap_word.store(0, std::memory_order_release);
    futex_wake(&w->nap_word, 1);
  }
}

// The caller has stored w's wake_word with seq_cst: that store and our load
// of in_poll pair with the sleeper's store of in_poll and load of wake_word
// (Dekker), which a release store does not guarantee (on x86 it may still
// sit in the store buffer while in_poll is read).
void Idle::wake_worker(Worker* w) {
  if (w->in_poll.load(std::memory_order_seq_cst)) {
    sched_.poller->wake();
  } else {
    futex_wake(&w->wake_word, 1);
  }
}

bool Idle::timer_role_lost(std::int64_t when) const {
  if (nidle_.load(std::memory_order_seq_cst) == 0) return false;
  if (!timer_sleeper_.load(std::memory_order_seq_cst)) return true;
  const std::int64_t until = timer_sleep_until_.load(std::memory_order_seq_cst);
  return until != 0 && until > when;
}

void Idle::wake_for_timers() {
  if (Worker* sleeper = timer_sleeper_.load(std::memory_order_seq_cst)) {
    std::uint32_t asleep = kAsleep;
    if (sleeper->wake_word.compare_exchange_strong(asleep, kPoked)) {
      wake_worker(sleeper);
    }
    return;
  }
  wakep();
}

bool Idle::anything_to_watch() const {
  return sched_.earliest_timer() != kNever || netpoll_waiters() > 0;
}

// Every load is seq_cst: the publishers' halves are the fence in wakep().
bool Idle::any_stealable_work() const {
  if (sched_.gq.size_seq_cst() != 0) return true;
  for (const auto& w : sched_.workers) {
    if (!w->runq.empty_seq_cst()) return true;
  }
  return false;
}

bool Idle::any_queued_work(Worker* self) const {
  if (any_stealable_work()) return true;
  // Pinned fibers handed to us (wake_pinned_home's pair). Our own FIFO is
  // empty: local_get() returns from it before we look for work elsewhere.
  if (self->pinned_inbox.load(std::memory_order_seq_cst) != nullptr) return true;
  bool runnext_elsewhere = false;
  for (const auto& w : sched_.workers) {
    if (w.get() != self && w->runnext.load(std::memory_order_seq_cst)) runnext_elsewhere = true;
  }
  // A fiber in another worker's runnext runs next there, unless that
  // worker is held by one fiber: then it is work for us (Go counts runnext
  // as queued work, and steals it from a worker that does not switch).
  return runnext_elsewhere && any_runnext_behind_a_busy_fiber(self);
}

// Watches every other worker's switch count for as long as a thief waits
// before taking runnext (steal_from): a worker that did not switch meanwhile
// is held by one fiber and will not run its runnext soon.
bool Idle::any_runnext_behind_a_busy_fiber(Worker* self) const {
  const auto& workers = sched_.workers;
  self->snapshot_ticks(workers);
  const std::uint64_t until = now_ns() + kRunnextStealWaitNs;
  while (now_ns() < until) cpu_relax();
  for (std::size_t i = 0; i < workers.size(); ++i) {
    if (workers[i].get() != self && workers[i]->runnext_stuck_since(self->tick_snapshot[i])) {
      return true;
    }
  }
  return false;
}

void Idle::sleep(Worker* w, std::int64_t wake_by) {
  w->left_timer_role = false;
  // We stop watching in the role's place (invariant 7) and take the role
  // below if it is vacant, reading every heap after this store: a timer
  // added meanwhile saw no watcher and woke for itself, or we see it.
  Worker* self = w;
  watcher_.compare_exchange_strong(self, nullptr, std::memory_order_seq_cst);
  {
    std::lock_guard lock(mu_);
    if (sched_.stopping.load(std::memory_order_acquire)) return;
    w->wake_word.store(kAsleep, std::memory_order_relaxed);
    w->next_idle = head_;
    head_ = w;
    w->on_idle_list = true;
    nidle_.fetch_add(1, std::memory_order_seq_cst);
  }
  if (w->spinning) {
    w->spinning = false;
    nspinning_.fetch_sub(1, std::memory_order_seq_cst);
  }
  chaos::at(chaos::Point::sleep);  // between counting ourselves idle and the last look
  // Work published before our nidle increment found nobody to wake (its
  // wakep saw nidle == 0 or a spinner that was us): look once more.
  // A dump stopping the world poked the idle workers before we joined them
  // (it stored stw, then took mu_ to walk the list): stop instead.
  const bool work_queued = any_queued_work(w);
  if (work_queued) sleeps_refused_.fetch_add(1, std::memory_order_relaxed);
  bool wait = !work_queued && !sched_.stw.load(std::memory_order_acquire);
  // One idle worker waits for the earliest timer; the others until woken.
  bool timer_role = false;
  bool dispatched = false;
  std::int64_t deadline = kNever;
  if (wait) {
    Worker* none = nullptr;
    timer_role = timer_sleeper_.compare_exchange_strong(none, w, std::memory_order_seq_cst);
    if (timer_role) {
      deadline = sched_.earliest_timer();
      timer_sleep_until_.store(deadline, std::memory_order_seq_cst);
    }
  }
  const std::int64_t wake_at = std::min(deadline, wake_by);
  if (timer_role) {
    // Blocked in the poller until I/O, the earliest timer, or a wake-up. A
    // waker stores wake_word then reads in_poll; we store in_poll then read
    // wake_word: one of us sees the other.
    w->in_poll.store(true, std::memory_order_seq_cst);
    blocked_in_poll_.store(true, std::memory_order_relaxed);
    chaos::at(chaos::Point::poll);
    if (w->wake_word.load(std::memory_order_seq_cst) == kAsleep) {
      std::int64_t timeout = -1;
      if (wake_at != kNever) timeout = std::max<std::int64_t>(0, wake_at - mono_now_ns());
      poll::Event events[128];
      const int n = sched_.poller->wait(events, 128, timeout);
      const std::int64_t polled_at = mono_now_ns();
      sched_.last_poll.store(polled_at, std::memory_order_relaxed);
      blocked_in_poll_.store(false, std::memory_order_relaxed);
      w->in_poll.store(false, std::memory_order_seq_cst);
      if (n > 0) {
        // Counted idle while readying what the poll returned: until the
        // count drops below, a deadlock check must not mistake this for
        // nothing left to run (Scheduler::nothing_can_wake).
        dispatching_.fetch_add(1, std::memory_order_seq_cst);
        dispatched = true;
        leave_to_dispatch(w);
        netpoll_dispatch(events, n, polled_at);
      }
    }
    blocked_in_poll_.store(false, std::memory_order_relaxed);
    w->in_poll.store(false, std::memory_order_seq_cst);
  }
  while (wait && !timer_role && w->wake_word.load(std::memory_order_acquire) == kAsleep) {
    if (wake_at == kNever) {
      futex_wait(&w->wake_word, kAsleep);
      continue;
    }
    const std::int64_t left = wake_at - mono_now_ns();
    if (left <= 0) break;  // still listed: leaves the list below, as a timer role does
    timespec timeout{static_cast<time_t>(left / 1'000'000'000),
                     static_cast<long>(left % 1'000'000'000)};
    futex_wait(&w->wake_word, kAsleep, &timeout);
  }
  if (timer_role) {
    timer_sleep_until_.store(0, std::memory_order_seq_cst);
    timer_sleeper_.store(nullptr, std::memory_order_seq_cst);
    w->left_timer_role = true;
  }
  {
    std::lock_guard lock(mu_);
    if (w->on_idle_list) {  // timer due, wake_by, poked, or work found: nobody counted us
      unlink_locked(w);
      if (dispatched) dispatching_.fetch_sub(1, std::memory_order_seq_cst);
      advance_coarse_clock();
      return;
    }
  }
  // wakep took us off the idle list and counted us as spinning.
  if (dispatched) dispatching_.fetch_sub(1, std::memory_order_seq_cst);
  advance_coarse_clock();  // sysmon may have slept as long as we did
  w->spinning = !sched_.stopping.load(std::memory_order_acquire);
}

void Idle::relieve_stuck_watcher(Worker* w) {
  Worker* self = w;
  if (!watcher_.compare_exchange_strong(self, nullptr, std::memory_order_seq_cst)) return;
  watchers_relieved_.fetch_add(1, std::memory_order_relaxed);
  wakep();
}

void Idle::poke_all() {
  poke_napper();  // it then sees stw in its loop
  std::lock_guard lock(mu_);
  for (Worker* w = head_; w; w = w->next_idle) {
    std::uint32_t asleep = kAsleep;
    if (w->wake_word.compare_exchange_strong(asleep, kPoked, std::memory_order_seq_cst)) {
      wake_worker(w);
    }
  }
}

void Idle::wake_all() {
  poke_napper();  // it then sees stopping in its loop
  std::lock_guard lock(mu_);
  while (Worker* w = head_) {
    unlink_locked(w);
    w->wake_word.store(kWoken, std::memory_order_seq_cst);
    wake_worker(w);
  }
}

}  // namespace weft::detail
