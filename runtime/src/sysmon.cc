// sysmon: a thread beside the workers (Go's sysmon), asleep whenever every
// worker is. Every 2 ms while the runtime is busy it
// - logs a fiber that has held its worker for over 10 ms of CPU time
//   without parking or yielding (the watchdog; a cancel() walking its
//   children, a stepped ReadyBatch's steps, is scheduling, not computing);
// - wakes an idle worker for work or timers queued behind such a fiber;
// - polls for I/O when nobody has for 10 ms;
// - gives back the stacks of fibers idle on a socket (idle_stack.h), at
//   the stack scavenger's pace;
// - is the timer role's backstop (idle.h, invariant 6): it wakes a worker
//   for a timer overdue on any heap that nobody plans to wake for.
#include <malloc.h>
#include <time.h>

#include <cstdint>
#include <string>

#include "idle_stack.h"
#include "log.h"
#include "netpoll.h"
#include "registry.h"
#include "scheduler_internal.h"
#include "stack.h"

namespace weft::detail {

namespace {

constexpr std::uint64_t kWatchdogNs = 10'000'000;
constexpr std::uint64_t kSysmonPeriodNs = 2'000'000;
// The stack scavenger's pace: while any worker runs, at most 256 stacks'
// pages (a few hundred microseconds of madvise) every 100 ms; when all are
// idle, up to 16k a round.
constexpr std::uint32_t kScavengePeriodMs = 100;
constexpr std::size_t kScavengeBusyStacks = 256;
constexpr std::size_t kScavengeIdleStacks = 16384;
// Stacks whose pages went back stay mapped, this many of each size, once
// every worker sleeps; the rest of a burst's are unmapped (their two VMAs
// count against vm.max_map_count, and the pool's lists against the heap).
constexpr std::size_t kColdStacksKept = 256;
// Pages of socket descs all freed this long ago go back (slot_arena.h).
constexpr std::uint32_t kPollDescIdleMs = 5000;
// sysmon wakes a worker for a timer this late: the timer role lost track of
// it, or the OS kept its worker off the CPU.
constexpr std::int64_t kTimerOverdueNs = 1'000'000;

}  // namespace

// Every worker counted idle is not enough: a worker counts itself idle a
// moment before it looks at the queues for the last time and a moment after
// it readies what its poll returned, and a thread the OS keeps off its CPU
// there for 10 ms (a loaded machine; TSan with schedule perturbation did)
// looked like a deadlock with a fiber runnable.
bool Scheduler::nothing_can_wake() const {
  return idle.all_idle() && !stopping.load(std::memory_order_acquire) && !idle.dispatching() &&
         !anything_queued() && earliest_timer() == kNever && netpoll_waiters() == 0 &&
         blocking_jobs_in_flight() == 0 && !foreign_used.load(std::memory_order_seq_cst);
}

bool Scheduler::anything_queued() const {
  if (gq.size() != 0) return true;
  for (const auto& w : workers) {
    if (w->runnext.load(std::memory_order_acquire) != nullptr || !w->runq.empty() ||
        w->pinned_queued.load(std::memory_order_acquire) != 0) {
      return true;
    }
  }
  return false;
}

namespace {

std::uint64_t total_schedticks(const Scheduler& s) {
  std::uint64_t sum = 0;
  for (const auto& w : s.workers) sum += w->schedtick.load(std::memory_order_relaxed);
  return sum;
}

}  // namespace

// Go's checkdead. Every worker idle and nothing left that could ready a
// fiber: but a ready may be on its way (a blocking job's fiber readied just
// before its count drops, a wake-up not yet taken), so the state must hold
// twice, 10 ms apart, with no worker woken and nothing run in between.
void Scheduler::check_deadlock() {
  if (!detect_deadlocks || !nothing_can_wake()) return;
  const std::uint64_t ticks = total_schedticks(*this);
  const std::uint64_t wakes = idle.wakeups();
  timespec pause{0, 10'000'000};
  nanosleep(&pause, nullptr);
  if (!nothing_can_wake() || total_schedticks(*this) != ticks || idle.wakeups() != wakes) return;
  die_of_deadlock(this);
}

namespace {

// "fiber N \"name\" (created at file:line)", as every message names a
// fiber; "a fiber" if it stopped running there meanwhile.
std::string describe_running_fiber(const Worker& w, const Fiber* f) {
  if (!mark_running_fiber(w.running, f)) return "a fiber";
  std::string text;
  name_fiber(*f, [&](const char* piece) { text += piece; });
  unmark_running_fiber();
  return text;
}

}  // namespace

void Scheduler::sysmon_loop() {
  set_runtime_thread(true);
  std::uint32_t last_scavenge_ms = coarse_now_ms();
  while (!stopping.load(std::memory_order_acquire)) {
    advance_coarse_clock();
    sigquit_if_pending(this);
    // Pages of stacks pooled for a while go back to the kernel (stack.h):
    // a little at a time while workers run, all that is due once idle
    // (this loop then comes round once a second).
    const bool all_idle = idle.all_idle();
    if (all_idle || coarse_now_ms() - last_scavenge_ms >= kScavengePeriodMs) {
      last_scavenge_ms = coarse_now_ms();
      std::size_t given_back =
          scavenge_pooled_stacks(all_idle ? kScavengeIdleStacks : kScavengeBusyStacks) +
          scavenge_poll_descs(kPollDescIdleMs) +
          give_back_idle_stacks(coarse_now_ms(),
                                all_idle ? kScavengeIdleStacks : kScavengeBusyStacks);
      if (all_idle) given_back += unmap_cold_stacks(kColdStacksKept);
      // A burst's end, once every worker sleeps: the records it pooled go
      // too (sleeping workers free their own), and what the heap freed
      // (records, sockets, buffers) sits in malloc's free lists, resident,
      // until trimmed. A record kept would pin its page.
      if (all_idle && given_back != 0) {
        trim_depot(depot, 0);
        malloc_trim(0);
      } else if (!all_idle) {
        trim_unused_depot(depot);
      }
    }
    if (all_idle) {
      check_deadlock();
      // Fully idle: sleep until a worker is woken, so that an idle runtime
      // costs nothing. Our store of sysmon_sleeping then all_idle() pair
      // with wakep's nidle decrement then load of sysmon_sleeping.
      sysmon_word.store(0, std::memory_order_relaxed);
      sysmon_sleeping.store(true, std::memory_order_seq_cst);
      if (idle.all_idle()) {
        timespec limit{1, 0};
        futex_wait(&sysmon_word, 0, &limit);
      }
      sysmon_sleeping.store(false, std::memory_order_seq_cst);
      continue;
    }
    timespec period{0, static_cast<long>(kSysmonPeriodNs)};
    // Reset first: a wake meant to end the idle sleep leaves the word at 1,
    // and waiting for 0 on it would return at once, every time, making this
    // loop spin on futex calls for as long as the runtime is busy.
    sysmon_word.store(0, std::memory_order_relaxed);
    futex_wait(&sysmon_word, 0, &period);
    const std::uint64_t now = now_ns();
    // Every worker busy with long-running fibers: nobody polls, so do it here.
    if (static_cast<std::int64_t>(now) - last_poll.load(std::memory_order_relaxed) > 10'000'000) {
      poll_now();
    }
    for (auto& wp : workers) {
      Worker* w = wp.get();
      const std::uint32_t tick = w->schedtick.load(std::memory_order_relaxed);
      const std::uint32_t steps = w->walk_steps.load(std::memory_order_relaxed);
      const Fiber* running = w->running.load(std::memory_order_relaxed);
      if (running == nullptr || tick != w->seen_tick || steps != w->seen_walk_steps) {
        w->seen_tick = tick;
        w->seen_walk_steps = steps;
        w->seen_since = now;
        w->seen_cpu_ns = running == nullptr ? 0 : w->cpu_ns();
        w->reported = false;
        continue;
      }
      const std::uint64_t held = now - w->seen_since;
      const auto ran_for = [w] {
        const std::int64_t cpu = w->cpu_ns();
        return cpu < 0 || w->seen_cpu_ns < 0 ? kWatchdogNs
                                             : static_cast<std::uint64_t>(cpu - w->seen_cpu_ns);
      };
      if (!w->reported && held >= kWatchdogNs && ran_for() >= kWatchdogNs) {
        w->reported = true;
        watchdog_reports.fetch_add(1, std::memory_order_relaxed);
        log().warn("{} has held worker {} for {} ms without parking or yielding",
                   describe_running_fiber(*w, running), w->index, held / 1'000'000);
      }
      // Work or timers queued behind a stuck fiber: let an idle worker take them.
      if (w->runnext.load(std::memory_order_relaxed) || !w->runq.empty() ||
          w->timers.min_when.load(std::memory_order_relaxed) <= mono_now_ns()) {
        if (idle.wakep()) sysmon_wakeups.fetch_add(1, std::memory_order_relaxed);
      }
      // A worker that watches in the timer role's place cannot while it is
      // stuck: an idle one takes the role (idle.h, invariant 7).
      if (idle.watching(w)) idle.relieve_stuck_watcher(w);
    }
    // The backstop of the timer role: a timer overdue on any heap, an idle
    // worker's included, that nobody plans to wake for (Go's sysmon:
    // timeSleepUntil, then startm). Only when seen on two rounds in a row:
    // a role being handed on, or a worker the OS has not run yet, is not lost.
    const std::int64_t earliest = earliest_timer();
    if (earliest != kNever && mono_now_ns() - earliest > kTimerOverdueNs &&
        idle.timer_role_lost(earliest)) {
      if (lost_timer_seen == earliest) {
        timer_rescues.fetch_add(1, std::memory_order_relaxed);
        idle.wake_for_timers();
      }
      lost_timer_seen = earliest;
    } else {
      lost_timer_seen = kNever;
    }
  }
}

}  // namespace weft::detail
