// A worker: one OS thread of the runtime and everything it owns. Internal to
// the runtime. Its code is in scheduler.cc (its sleeping in idle.{h,cc}).
//
// - Written by the owner only, unless a comment says otherwise: the run queue
//   and runnext are also taken from by thieves (run_queue.h, steal_from), the
//   wake word by wakers (idle.h), the timer heap under its lock by anyone.
// - The fiber running here never caches its worker: it may resume on another
//   after any switch, so it asks current_worker() (scheduler.h) each time.
#pragma once

#include <time.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "fiber.h"
#include "records.h"
#include "run_queue.h"
#include "timer.h"
#include "weft/detail/park.h"

namespace weft::detail {

struct Scheduler;

// What a fiber that switches away asks of whoever runs next on its worker.
enum class Action : std::uint8_t { park, yield, exit };

struct alignas(64) Worker {
  Worker(std::uint32_t generation, std::int32_t budget) : coop_budget(budget), gen(generation) {}

  Scheduler* sched = nullptr;
  int index = 0;
  RunQueue runq;
  std::atomic<Fiber*> runnext{nullptr};

  Fiber* current = nullptr;  // the fiber running here; null while on g0

  // Pinned fibers (weft::PinToWorker, SpawnOptions::pinned) runnable here
  // and nowhere else, kept out of the run queue and runnext, which thieves
  // take from. The owner's FIFO, linked through Fiber::next; local_get()
  // gives it every other turn while other work waits too.
  Fiber* pinned_head = nullptr;
  Fiber* pinned_tail = nullptr;
  bool pinned_turn = false;
  // The running fiber's stack, and the stack pointer to switch to next. A
  // fiber that runs to its end without parking never has its stack or stack
  // pointer written into its record: records move between cores (spawned on
  // one worker, run on another, reused by the first), and a line the runner
  // wrote costs the spawner a transfer of it, where one it only read costs
  // an invalidation. Parking or yielding writes both into the record.
  Stack running_stack;
  void* next_sp = nullptr;
  Stack prev_stack;         // of `prev`, when it exited
  void* dead_sp = nullptr;  // where an exiting fiber's last stack pointer goes
  // The fiber that switched away last and what it asked for; whoever runs
  // next on this worker completes it (after_switch), once off its stack.
  Fiber* prev = nullptr;
  Action prev_action = Action::park;
  ParkCommit commit = nullptr;
  void* commit_arg = nullptr;
  bool in_commit = false;

  std::atomic<std::uint32_t> schedtick{0};
  // Switches through pick_local() until its next look at the timers. Not
  // schedtick modulo a power of two: a yield that switches advances that
  // by two, and fibers yielding to each other skipped the look forever.
  std::uint32_t switches_to_timer_look = 0;
  // The look came due in pick_local(), on the way out of a fiber; it is
  // taken in after_switch(), once that fiber's park has committed. Before
  // the commit, the fiber may still hold the lock that guards its wait (a
  // channel's, released by the commit), and a due timer may need that lock
  // (a Ticker's or after()'s delivery to the same channel): taken there, it
  // spun on a lock its own worker held.
  bool timer_look_due = false;
  // Steps a stepped ReadyBatch's walk ended here (one cancel reaching
  // thousands of children): scheduling, which the watchdog counts as a
  // switch. Written by this worker only; read by sysmon.
  std::atomic<std::uint32_t> walk_steps{0};
  // The fiber running here, null on g0: for thieves (is a runnext stuck?)
  // and sysmon's watchdog. Stored with release on every switch in, so that
  // sysmon may read what the spawner wrote into the record.
  std::atomic<const Fiber*> running{nullptr};
  std::uint32_t runnext_streak = 0;
  // Budget units the running fiber may still spend before coop_spend()
  // makes it yield (weft/detail/coop.h); refilled on every switch in.
  std::int32_t coop_left = 0;
  // Operations a fiber may complete per turn before it yields (coop.h);
  // INT32_MAX when WEFT_COOP_BUDGET=0 turned the budget off.
  const std::int32_t coop_budget;
  // Scheduler::gen, read on every switch (a fiber of an earlier runtime is
  // dropped, not run).
  const std::uint32_t gen;
  std::uint32_t no_coop = 0;     // > 0 while firing timers: coop_yield must not switch
  bool spinning = false;         // looking for work, counted in Idle's nspinning
  bool left_timer_role = false;  // woke from the timer role; hand it on once busy
  // Our poll readied a short batch into our run queue and woke nobody for
  // it (Idle's invariant 7): found_work() does not wake anyone for it either.
  bool kept_poll_batch = false;
  bool solo = false;  // the runtime's only worker: nobody steals from it

  // The idle protocol's (idle.h), as are the two flags above. Sleeping:
  // Idle::kAsleep, then kWoken (by wakep, counted as spinning) or kPoked (a
  // timer now due sooner). Idle-list links under Idle's mutex.
  std::atomic<std::uint32_t> wake_word{0};  // Idle::kAsleep
  std::atomic<bool> in_poll{false};         // blocked in the poller rather than on wake_word
  std::atomic<std::uint32_t> nap_word{0};   // 1 while napping (Idle::nap); a poke clears it
  Worker* next_idle = nullptr;
  bool on_idle_list = false;

  std::uint64_t rng = 0;
  std::uint32_t last_stack_spill_ms = 0;  // coarse_now_ms(); see find_runnable
  std::uint64_t id_next = 0, id_end = 0;
  // Every worker's schedtick, for a thief deciding whether a runnext is
  // stuck (Idle::sleep's last look, a spinner's nap).
  std::vector<std::uint32_t> tick_snapshot;
  void snapshot_ticks(const std::vector<std::unique_ptr<Worker>>& workers) {
    for (std::size_t i = 0; i < workers.size(); ++i) {
      tick_snapshot[i] = workers[i]->schedtick.load(std::memory_order_relaxed);
    }
  }
  // True if this worker holds a fiber in runnext and has not switched since
  // its schedtick read `tick`, while running a fiber: that fiber holds it,
  // and runnext will not run soon (Go steals runnext only then).
  bool runnext_stuck_since(std::uint32_t tick) const {
    return runnext.load(std::memory_order_relaxed) != nullptr &&
           schedtick.load(std::memory_order_relaxed) == tick &&
           running.load(std::memory_order_relaxed) != nullptr;
  }

  TimerHeap timers;

  // Pinned fibers that other workers picked (they were readied or stolen
  // there) and handed back: a stack pushed by CAS and taken whole by the
  // owner, with an exchange, so no pop races a push (no ABA). A line of
  // its own: the owner reads it on every local_get(), others write it
  // rarely. seq_cst: the pusher's CAS and its later read of the idle state
  // (Idle::wake_pinned_home) pair with the owner's idle count and its
  // seq_cst look at the inbox before it sleeps or naps (Idle::sleep, nap).
  alignas(64) std::atomic<Fiber*> pinned_inbox{nullptr};
  // Pinned fibers queued here (inbox and FIFO), for metrics and sysmon.
  std::atomic<std::uint32_t> pinned_queued{0};

  // Recycled fiber records of the pooled size class (owner only), oldest
  // first (records.h).
  Fiber* free_records[2 * kRecordBatch];
  std::uint32_t free_record_count = 0;

  // Counters written by the owner only, read by stats.
  std::atomic<std::uint64_t> spawned{0}, exited{0}, steals{0}, coop_yields{0};
  // Latency samples (weft::metrics): runnable -> running, and poller
  // wake-up -> running; log2 buckets of ns, owner-written.
  static constexpr int kLatencyBuckets = 40;
  std::atomic<std::uint64_t> sched_latency[kLatencyBuckets] = {};
  std::atomic<std::uint64_t> poll_latency[kLatencyBuckets] = {};
  std::uint32_t latency_sample_tick = 0;
  // One ready in 64 is timed (a clock read each). The record is touched
  // only then: on another core's fiber it is a cache miss on the readier.
  // One already stamped (a poller wake-up) keeps its stamp.
  void maybe_stamp_ready(Fiber* f) {
    if ((++latency_sample_tick & 63) == 0 && f->ready_ns == 0) f->ready_ns = mono_now_ns();
  }

  void* g0_sp = nullptr;
  void* tsan_g0 = nullptr;
  void* g0_fake_stack = nullptr;
  const void* g0_stack_bottom = nullptr;
  std::size_t g0_stack_size = 0;

  // sysmon's view of this worker.
  std::uint32_t seen_tick = 0;
  std::uint32_t seen_walk_steps = 0;
  std::uint64_t seen_since = 0;
  std::int64_t seen_cpu_ns = 0;
  bool reported = false;
  // This thread's CPU clock: the watchdog blames a fiber only for time it
  // really ran, not for time the OS kept its thread off the CPU.
  std::atomic<clockid_t> cpu_clock{-1};
  std::int64_t cpu_ns() const noexcept {
    const clockid_t c = cpu_clock.load(std::memory_order_acquire);
    timespec ts;
    if (c == -1 || clock_gettime(c, &ts) != 0) return -1;
    return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }

  std::thread thread;

  void loop();
  // Waits on g0 while a dump stops the world (Scheduler::stw).
  void stop_for_world();
  std::atomic<bool> stopped_for_world{false};
  Fiber* find_runnable();
  Fiber* found(Fiber* f);
  inline Fiber* local_get();  // as enter
  bool has_pinned() const {
    return pinned_head != nullptr || pinned_inbox.load(std::memory_order_relaxed) != nullptr;
  }
  void pinned_put(Fiber* f);
  Fiber* pinned_pop();
  // `f`, picked to run here, carries more than this runtime's generation:
  // true if it may run here (pinned here, or pinned to whichever worker runs
  // it first); otherwise it is dropped (an earlier runtime's) or handed to
  // its own worker, and false.
  bool runs_here(Fiber* f);
  void hand_to_home(Fiber* f);
  // `rounds` passes over the other workers, each from a random one.
  // `watch_runnext`: the last round may wait kRunnextStealWaitNs to see
  // whether a victim's runnext is stuck, and take it.
  Fiber* steal_work(bool watch_runnext, int rounds = 4);
  Fiber* steal_from(Worker* victim, bool take_runnext);
  // The victim's runnext, if it stayed stuck since its schedtick read `tick`.
  Fiber* take_stuck_runnext(Worker* victim, std::uint32_t tick);
  bool others_running() const;
  std::int64_t nap_length() const;
  Fiber* look_after_nap();
  inline Fiber* pick_local();  // as enter
  void coop_yield();
  bool run_timers(bool others_too);
  inline void enter(Fiber* f);  // scheduler.cc, its only user, inlines it
  void record_latency(Fiber* f);
  inline void leave(Fiber* self, Action action);  // as enter
  void after_switch();
  void settle_previous();
  void look_at_timers();
  void run_from_g0(Fiber* f);
  void prepare(Fiber* f);
  inline void ready_local(Fiber* f);  // as enter
  void runq_put(Fiber* f);
  std::uint64_t next_fiber_id();
  void finish(Fiber* f);  // records.h: recycling
  Fiber* take_record();

  std::uint32_t random() {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return static_cast<std::uint32_t>(rng);
  }
  static void bump(std::atomic<std::uint64_t>& c) {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
};

}  // namespace weft::detail
