// The M:N scheduler: each worker's loop, finding and stealing work, the
// switch between fibers, park and ready, spawn and yield. Each worker is an
// OS thread with its own run queue (a bounded lock-free ring, owner pushes,
// anyone steals; run_queue.h) and a runnext slot for the fiber it just
// readied; a global queue takes work from outside and overflow. Idle
// workers spin briefly, then sleep (idle.h). The scheduler loop of each
// worker runs on the worker thread's own stack ("g0"). scheduler_internal.h
// says which file holds the rest.
#include "scheduler.h"

#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "chaos.h"
#include "idle_stack.h"
#include "log.h"
#include "netpoll.h"
#include "sanitizer.h"
#include "scheduler_internal.h"
#include "stack.h"
#include "timer.h"
#include "weft/detail/coop.h"
#include "weft/fiber_local.h"

extern "C" void weft_switch(void** save_sp, void* load_sp);
extern "C" void weft_fiber_trampoline();

#if defined(WEFT_TSAN) && defined(__clang__)
#define WEFT_SWITCH_FN __attribute__((noinline, disable_sanitizer_instrumentation))
#elif defined(WEFT_TSAN)
#define WEFT_SWITCH_FN __attribute__((noinline, no_sanitize_thread))
#else
#define WEFT_SWITCH_FN
#endif

namespace weft::detail {

void cpu_relax() noexcept {
#if defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

void spin_backoff(unsigned& spins) noexcept {
  if (++spins < 64) {
    cpu_relax();
  } else {
    sched_yield();
  }
}

namespace {

constexpr std::uint32_t kFairnessTicks = 61;     // global queue checked this often
constexpr std::uint32_t kRunnextCap = 32;        // consecutive runnext picks before the queue
constexpr std::uint64_t kSpinNs = 50'000;        // spin this long before sleeping
constexpr std::uint64_t kBusySpinNs = 5'000;     // of which on the CPU; then napping or yielding
constexpr std::uint64_t kNapSpinNs = 2'000'000;  // then napping, this long in all
// A spinner's sched_yield() that took this long ran another thread; one
// that nobody took returns in 1 to 2 us (a VM with Spectre mitigations).
constexpr std::uint64_t kYieldTakenNs = 4'000;
constexpr std::uint64_t kYieldBackoffNs = 4'000;      // CPU kept after a yield not taken
constexpr std::uint64_t kYieldBackoffMaxNs = 16'000;  // doubling up to this
constexpr std::int64_t kSpinNapNs = 50'000;           // one nap at most (set_spin_nap)
std::atomic<std::int64_t> spin_nap_ns{0};             // set_spin_nap, for tests; 0: kSpinNapNs
constexpr std::uint32_t kTimerCheckTicks = 16;  // a busy worker's own timers, every N switches
constexpr std::uint64_t kIdBatch = 64;

// initial-exec: read with one %fs-relative load instead of a __tls_get_addr
// call (libweft is linked at start-up, not dlopen'ed).
#define WEFT_TLS __attribute__((tls_model("initial-exec"))) thread_local
// The switch path's steps, inlined into park, yield and the rest: as calls,
// each saved and restored the callee-saved registers again, a sixth of a
// ping-pong's instructions.
#define WEFT_SWITCH_PATH __attribute__((always_inline)) inline
WEFT_TLS Worker* tls_worker = nullptr;
WEFT_TLS bool tls_runtime_thread = false;
WEFT_TLS const Fiber* tls_fiber = nullptr;
// FiberLocal values outside fibers (fiber_local.cc owns and frees them).
WEFT_TLS FiberLocalTable* tls_thread_locals = nullptr;
constinit const FiberLocalTable kNoFiberLocals{};

Fiber* thread_waiter() {
  WEFT_TLS Fiber record;
  record.is_thread = true;
  return &record;
}

[[noreturn]] void fiber_main(Fiber* f);

// A commit runs on whichever fiber resumed next, on g0, or inside park() on a
// thread: nowhere that an exception could reach the code that parked.
bool run_park_commit(ParkCommit commit, Fiber* waiter, void* arg) noexcept {
  try {
    return commit(waiter, arg);
  } catch (...) {
    die_of_exception("a park commit");
  }
}

// The TSan switch must be made from code TSan does not instrument, or its
// shadow call stack is attributed to the wrong fiber.
WEFT_SWITCH_FN void switch_from_g0(Worker* w, Fiber* to) {
  san::asan_start_switch(&w->g0_fake_stack, w->running_stack.lo, w->running_stack.size);
  san::tsan_switch(to->tsan_fiber);
  weft_switch(&w->g0_sp, w->next_sp);
  san::asan_finish_switch(w->g0_fake_stack, nullptr, nullptr);
}

// From a fiber straight to another fiber, or to g0 when `to` is null. A
// dying fiber never comes back, so ASan may drop its fake stack.
WEFT_SWITCH_FN void switch_from_fiber(Worker* w, Fiber* from, Fiber* to, bool dying) {
  void** fake_stack = dying ? nullptr : &from->asan_fake_stack;
  void** save_sp = dying ? &w->dead_sp : &from->sp;
  if (to) {
    san::asan_start_switch(fake_stack, w->running_stack.lo, w->running_stack.size);
    san::tsan_switch(to->tsan_fiber);
    weft_switch(save_sp, w->next_sp);
  } else {
    san::asan_start_switch(fake_stack, w->g0_stack_bottom, w->g0_stack_size);
    san::tsan_switch(w->tsan_g0);
    weft_switch(save_sp, w->g0_sp);
  }
  san::asan_finish_switch(from->asan_fake_stack, nullptr, nullptr);
}

[[noreturn]] void fiber_main(Fiber* f) {
  san::asan_finish_switch(nullptr, nullptr, nullptr);
  current_worker()->after_switch();
  // No handler between the closure and the trampoline, whose CFI ends the
  // stack: an exception escaping the closure finds none, so __cxa_throw calls
  // std::terminate at the throw site, with the stack whole for the core dump
  // and gdb. A catch here would unwind it first, and so would a noexcept
  // boundary (GCC runs the cleanups up to it, clang's is a catch-all).
  f->closure->invoke(f->closure_storage());
  if (f->closure->destroy) f->closure->destroy(f->closure_storage());
  // After the closure: what it captured may still use FiberLocals as it goes.
  // Before leave: the values' destructors run as this fiber and may park.
  if (f->locals) [[unlikely]] {
    destroy_fiber_locals(f->locals);
  }
  current_worker()->leave(f, Action::exit);
  __builtin_unreachable();
}

}  // namespace

// For functions that read this thread's worker: out of line, and (GCC) kept
// out of interprocedural analysis so that no caller may treat one as pure and
// reuse a result across a switch.
#if defined(__clang__)
#define WEFT_READS_CURRENT_WORKER __attribute__((noinline))
#else
#define WEFT_READS_CURRENT_WORKER __attribute__((noinline, noipa))
#endif

WEFT_READS_CURRENT_WORKER Worker* current_worker() noexcept {
  Worker* w = tls_worker;
  asm volatile("" ::: "memory");
  return w;
}

// FiberLocal's fast path (weft/fiber_local.h): out of line and kept out of
// interprocedural analysis as current_worker() is, so that a fiber that
// migrated reads its table through this thread's TLS, never another's.
WEFT_READS_CURRENT_WORKER const FiberLocalTable* fiber_local_table() noexcept {
  const Fiber* f = tls_fiber;
  const FiberLocalTable* t = f ? f->locals : tls_thread_locals;
  return t ? t : &kNoFiberLocals;
}

WEFT_READS_CURRENT_WORKER FiberLocalTable** fiber_local_home(bool* thread) noexcept {
  // The record is the running fiber's own; tls_fiber is const for the
  // signal handler's sake, not because the record is.
  Fiber* f = const_cast<Fiber*>(tls_fiber);
  if (thread) *thread = f == nullptr;
  return f ? &f->locals : &tls_thread_locals;
}

WEFT_READS_CURRENT_WORKER bool current_stack_may_be_given_back() noexcept {
  const Fiber* f = tls_fiber;
  return f && f->swaps_idle_stack;
}

void set_runtime_thread(bool yes) noexcept {
  tls_runtime_thread = yes;
}
bool is_runtime_thread() noexcept {
  return tls_runtime_thread;
}

const Fiber* signal_current_fiber(Stack* stack) noexcept {
  const Fiber* f = tls_fiber;
  if (f) *stack = tls_worker->running_stack;
  return f;
}

std::uint64_t Worker::next_fiber_id() {
  if (id_next == id_end) {
    id_next = sched->next_id.fetch_add(kIdBatch, std::memory_order_relaxed);
    id_end = id_next + kIdBatch;
  }
  return id_next++;
}

void Worker::runq_put(Fiber* f) {
  while (!runq.push(f)) {
    // Full: move half of it to the global queue, as Go's runqputslow.
    Fiber* batch[RunQueue::kSize / 2];
    const std::uint32_t n = runq.grab_half(batch);
    if (n != 0) sched->gq.put(batch, n);
  }
}

namespace {

// Moves up to `max` fibers (0: no limit but the queue's share) from the
// global queue to w's run queue, which the caller found empty; returns the
// first to run now. File-local, so that the compiler sees every call.
Fiber* global_get(Scheduler* s, Worker* w, std::uint32_t max) {
  Fiber* batch[RunQueue::kSize / 2];
  if (max == 0 || max > RunQueue::kSize / 2) max = RunQueue::kSize / 2;
  const std::uint32_t n = s->gq.get(batch, max, s->nworkers);
  if (n == 0) return nullptr;
  for (std::uint32_t i = 1; i < n; ++i) w->runq.push(batch[i]);  // it was empty: room
  return batch[0];
}

}  // namespace

WEFT_SWITCH_PATH void Worker::ready_local(Fiber* f) {
  maybe_stamp_ready(f);
  // Thieves only ever empty runnext, so an empty slot stays empty until we
  // fill it: a plain store suffices. A full one may be stolen meanwhile.
  Fiber* old = runnext.load(std::memory_order_relaxed);
  Idle::Work work = Idle::Work::runnext;
  if (!old) {
    runnext.store(f, std::memory_order_release);
  } else {
    old = runnext.exchange(f, std::memory_order_acq_rel);
    if (old) {
      runq_put(old);
      work = Idle::Work::stealable;
    }
  }
  chaos::at(chaos::Point::ready);  // between publishing and the wake check
  // Always, as Go's ready(): even a fiber that this worker will run next may
  // be the only work while a worker sleeps, and that sleeper may be the one
  // that must take over the timer role (a ping-pong that only ever fills an
  // empty runnext would otherwise leave every other heap unwatched). Cheap
  // when nobody sleeps or somebody already spins; the only worker, running
  // this, has nobody to wake.
  if (!solo) sched->idle.wakep(work);
}

WEFT_SWITCH_PATH Fiber* Worker::local_get() {
  chaos::at(chaos::Point::runnext);
  // Pinned fibers take every other turn while other work waits: they have
  // no other worker to run on, and the others no other queue to be in.
  const bool pinned = has_pinned();
  if (pinned) [[unlikely]] {
    pinned_turn = !pinned_turn;
    if (pinned_turn) {
      if (Fiber* f = pinned_pop()) return f;
    }
  }
  Fiber* next = runnext.load(std::memory_order_relaxed);
  if (next && (runnext_streak < kRunnextCap || runq.empty())) {
    if (solo) {
      // The only worker: no thief can race us for runnext, so no CAS (a
      // locked instruction on every switch of a ping-pong).
      runnext.store(nullptr, std::memory_order_relaxed);
      ++runnext_streak;
      return next;
    }
    if (runnext.compare_exchange_strong(next, nullptr, std::memory_order_acq_rel)) {
      ++runnext_streak;
      return next;
    }
  }
  runnext_streak = 0;
  if (Fiber* f = runq.pop()) return f;
  if (Fiber* f = runnext.exchange(nullptr, std::memory_order_acq_rel)) return f;
  return pinned ? pinned_pop() : nullptr;
}

void Worker::pinned_put(Fiber* f) {
  f->next = nullptr;
  (pinned_tail ? pinned_tail->next : pinned_head) = f;
  pinned_tail = f;
  pinned_queued.fetch_add(1, std::memory_order_relaxed);
}

Fiber* Worker::pinned_pop() {
  if (pinned_inbox.load(std::memory_order_relaxed) != nullptr) {
    // acquire: pairs with the release half of hand_to_home's CAS, so that
    // the links (and the records) its pushers wrote are seen.
    Fiber* pushed = pinned_inbox.exchange(nullptr, std::memory_order_acquire);
    // Pushed newest first: reversed onto the FIFO's tail, oldest first.
    Fiber* oldest_first = nullptr;
    while (pushed) {
      Fiber* next = pushed->next;
      pushed->next = oldest_first;
      oldest_first = pushed;
      pushed = next;
    }
    if (oldest_first) {
      (pinned_tail ? pinned_tail->next : pinned_head) = oldest_first;
      pinned_tail = oldest_first;
      while (pinned_tail->next) pinned_tail = pinned_tail->next;
    }
  }
  Fiber* f = pinned_head;
  if (!f) return nullptr;
  pinned_head = f->next;
  if (!pinned_head) pinned_tail = nullptr;
  pinned_queued.fetch_sub(1, std::memory_order_relaxed);
  return f;
}

bool Worker::runs_here(Fiber* f) {
  if (f->run_gen == (gen | kPinnedBit)) {
    if (f->pinned_home == index) return true;
    if (f->pinned_home < 0) {  // spawned pinned from outside: its first worker keeps it
      f->pinned_home = static_cast<std::int16_t>(index);
      return true;
    }
    hand_to_home(f);
    return false;
  }
  drop_late_ready(f);  // an earlier runtime's, readied in this one
  return false;
}

void Worker::hand_to_home(Fiber* f) {
  Worker* home = sched->workers[static_cast<std::size_t>(f->pinned_home)].get();
  home->pinned_queued.fetch_add(1, std::memory_order_relaxed);
  Fiber* head = home->pinned_inbox.load(std::memory_order_relaxed);
  do {
    f->next = head;
    // seq_cst: one half of the Dekker pair with the owner's sleep or nap
    // (Idle::wake_pinned_home); its release half publishes f->next.
  } while (!home->pinned_inbox.compare_exchange_weak(head, f, std::memory_order_seq_cst,
                                                     std::memory_order_relaxed));
  chaos::at(chaos::Point::ready);  // between publishing and the wake check
  sched->idle.wake_pinned_home(home);
}

Fiber* Worker::steal_from(Worker* victim, bool take_runnext) {
  chaos::at(chaos::Point::steal);
  Fiber* batch[RunQueue::kSize / 2];
  std::uint32_t n = victim->runq.grab_half(batch);
  if (n == 0 && take_runnext && victim->runnext.load(std::memory_order_relaxed)) {
    // The victim may be about to run it (ping-pong); take it only if the
    // victim is stuck in one fiber, as Go does.
    const std::uint32_t tick = victim->schedtick.load(std::memory_order_relaxed);
    const std::uint64_t until = now_ns() + kRunnextStealWaitNs;
    while (now_ns() < until) cpu_relax();
    return take_stuck_runnext(victim, tick);
  }
  if (n == 0) return nullptr;
  bump(steals);
  for (std::uint32_t i = 0; i + 1 < n; ++i) runq.push(batch[i]);
  return batch[n - 1];
}

Fiber* Worker::steal_work(bool watch_runnext, int rounds) {
  const int n = sched->nworkers;
  for (int round = 0; round < rounds; ++round) {
    const int start = static_cast<int>(random() % static_cast<std::uint32_t>(n));
    for (int i = 0; i < n; ++i) {
      Worker* victim = sched->workers[static_cast<std::size_t>((start + i) % n)].get();
      if (victim == this) continue;
      if (Fiber* f = steal_from(victim, watch_runnext && round == rounds - 1)) return f;
    }
  }
  return nullptr;
}

bool Worker::others_running() const {
  for (const auto& w : sched->workers) {
    if (w.get() != this && w->running.load(std::memory_order_relaxed) != nullptr) return true;
  }
  return false;
}

Fiber* Worker::take_stuck_runnext(Worker* victim, std::uint32_t tick) {
  if (!victim->runnext_stuck_since(tick)) return nullptr;
  Fiber* f = victim->runnext.exchange(nullptr, std::memory_order_acq_rel);
  if (f) bump(steals);
  return f;
}

// How long a spinner naps (find_runnable): kSpinNapNs, or less, to fire the
// earliest timer on time.
std::int64_t Worker::nap_length() const {
  std::int64_t nap = spin_nap_ns.load(std::memory_order_relaxed);
  if (nap == 0) nap = kSpinNapNs;
  if (const std::int64_t due = sched->earliest_timer(); due != kNever) {
    nap = std::clamp<std::int64_t>(due - mono_now_ns(), 0, nap);
  }
  return nap;
}

// A spinner's look after its nap: what the poller and the timers have
// readied, then a runnext that stayed stuck behind one fiber for the whole
// nap (the nap is the thief's wait, as kRunnextStealWaitNs is in
// steal_from; tick_snapshot was taken before it).
Fiber* Worker::look_after_nap() {
  sched->poll_now();
  run_timers(true);
  if (Fiber* f = local_get()) return f;
  for (std::size_t i = 0; i < sched->workers.size(); ++i) {
    Worker* victim = sched->workers[i].get();
    if (victim == this) continue;
    if (Fiber* f = take_stuck_runnext(victim, tick_snapshot[i])) return f;
  }
  return nullptr;
}

Fiber* Worker::found(Fiber* f) {
  sched->idle.found_work(this);
  return f;
}

// Fires due timers: this worker's, and when `others_too`, those of every
// worker (an idle worker serves the timers of busy ones, as Go's stealWork).
bool Worker::run_timers(bool others_too) {
  std::int64_t now = 0;
  int fired = 0;
  ++no_coop;  // an expiry's channel send must not yield (coop_yield)
  const int n = others_too ? sched->nworkers : 1;
  for (int i = 0; i < n; ++i) {
    TimerHeap& heap =
        i == 0 ? timers : sched->workers[static_cast<std::size_t>((index + i) % n)]->timers;
    const std::int64_t next = heap.min_when.load(std::memory_order_relaxed);
    if (next == kNever) continue;
    if (now == 0) now = mono_now_ns();
    if (next <= now) fired += run_due_timers(heap, now);
  }
  --no_coop;
  return fired != 0;
}

void Worker::stop_for_world() {
  // release: pairs with the dump's acquire loads (dump.cc), for a dump that
  // gave up waiting on the count below before we got here.
  stopped_for_world.store(true, std::memory_order_release);
  sched->stw_stopped.fetch_add(1, std::memory_order_seq_cst);  // dump.cc waits for the count
  while (sched->stw.load(std::memory_order_acquire)) futex_wait(&sched->stw_word, 1);
  sched->stw_stopped.fetch_sub(1, std::memory_order_seq_cst);
  stopped_for_world.store(false, std::memory_order_relaxed);
}

Fiber* Worker::find_runnable() {
  // A batch kept by a poll on the switch path (pick_local) was ours to run,
  // and is: what found_work() sees below was found in this call.
  kept_poll_batch = false;
  for (;;) {
    if (sched->stopping.load(std::memory_order_acquire)) return nullptr;
    if (sched->stw.load(std::memory_order_acquire)) stop_for_world();
    run_timers(true);
    const std::uint32_t tick = schedtick.load(std::memory_order_relaxed);
    if (tick % kFairnessTicks == 0) {
      sched->poll_now();
      if (sched->gq.size() != 0) {
        if (Fiber* f = global_get(sched, this, 1)) return found(f);
      }
    }
    if (Fiber* f = local_get()) return found(f);
    if (sched->gq.size() != 0) {
      if (Fiber* f = global_get(sched, this, 0)) return found(f);
    }
    sched->poll_now();
    if (Fiber* f = local_get()) return found(f);
    if (sched->nworkers > 1 && sched->idle.start_spinning(this)) {
      // Busy at first; then, while other workers run fibers, in naps (idle.h
      // says why): a ready that only fills an empty runnext wakes a sleeping
      // worker every time (invariant 3), and a ping-pong would otherwise
      // wake one every 50 us to spin beside it.
      const std::uint64_t start = now_ns();
      std::uint64_t now = start;
      std::uint64_t yield_at = start + kBusySpinNs;
      std::uint64_t yield_backoff = kYieldBackoffNs;
      do {
        const bool nap = now - start >= kBusySpinNs && others_running();
        if (pinned_inbox.load(std::memory_order_relaxed) != nullptr) {  // handed to us
          if (Fiber* f = local_get()) return found(f);
        }
        if (Fiber* f = steal_work(!nap)) return found(f);
        if (sched->gq.size() != 0) {
          if (Fiber* f = global_get(sched, this, 0)) return found(f);
        }
        if (sched->stopping.load(std::memory_order_acquire)) return nullptr;
        if (sched->stw.load(std::memory_order_relaxed)) break;
        if (!nap) {
          // Past its first microseconds a spinner offers its CPU between
          // looks: to a thread that shares it and that it may be waiting for
          // (a client on its server's cores), which a spinner that kept the
          // CPU made wait for the spin's end (RESP under redis-benchmark in
          // the client's scheduling group, 2 cores: p99 2.0 ms against 1.1).
          // A yield that nobody took (it returned at once) costs 1 to 2 us
          // of kernel time here and shrinks nothing, so after one the
          // spinner keeps the CPU a while, twice as long each time.
          if (now < yield_at) {
            cpu_relax();
          } else {
            const std::uint64_t before = now_ns();
            sched_yield();
            const std::uint64_t after = now_ns();
            if (after - before >= kYieldTakenNs) {
              yield_at = after;
              yield_backoff = kYieldBackoffNs;
            } else {
              yield_at = after + yield_backoff;
              yield_backoff = std::min(yield_backoff * 2, kYieldBackoffMaxNs);
            }
          }
        } else {
          snapshot_ticks(sched->workers);
          if (!sched->idle.nap(this, nap_length())) break;  // another naps: sleep
          if (Fiber* f = look_after_nap()) return found(f);
        }
        now = now_ns();
        // others_running() reads every worker's `running`, which each
        // writes on every switch: not in the busy phase's tight loop.
      } while (now - start < kSpinNs || (now - start < kNapSpinNs && others_running()));
      if (sched->stw.load(std::memory_order_relaxed)) continue;  // stop at the top
    } else if (sched->nworkers > 1) {
      // Denied the spin, as enough others spin; but a worker counted as
      // spinning may hold fibers in its own queue and not run them (woken,
      // or readying what its poll returned, and off its CPU): our last look
      // before sleeping would see them and send us round again without
      // taking them, forever if need be (tests/net/idle_load_test.cc). One
      // pass over the queues takes them instead.
      if (Fiber* f = steal_work(false, 1)) return found(f);
    }
    // Once a second at most: a sleeping worker's cached stacks go to the
    // pool, where the scavenger gives their pages back if it sleeps long,
    // and its free records to the heap, where they would otherwise pin
    // pages of a burst that malloc_trim could give back (sysmon). A few
    // hundred mallocs a second at most is what it costs a worker that
    // sleeps often. One that spilled less than a second ago sleeps no
    // longer than until its next turn, so that the end of a burst is never
    // kept for good.
    std::int64_t wake_by = kNever;
    if (free_record_count != 0 || stacks_cached()) {
      const std::uint32_t since_ms = coarse_now_ms() - last_stack_spill_ms;
      if (since_ms >= 1000) {
        last_stack_spill_ms = coarse_now_ms();
        spill_stack_cache();
        free_pooled_records(free_records, free_record_count);
        free_record_count = 0;
      } else {
        wake_by = mono_now_ns() + std::int64_t{1000 - since_ms} * 1'000'000;
      }
    }
    sched->idle.sleep(this, wake_by);
  }
}

void Worker::prepare(Fiber* f) {
  acquire_stack(f->stack_request, &running_stack);
  if (f->swaps_idle_stack) [[unlikely]] {
    remember_idle_stack(f);
  }
#if defined(WEFT_TSAN)
  // Only under TSan: anywhere else this store would dirty a second line of
  // a record that the spawning worker, on another core, reuses next.
  f->tsan_fiber = san::tsan_create();
#endif
  auto top =
      reinterpret_cast<std::uintptr_t>(running_stack.hi()) & ~static_cast<std::uintptr_t>(15);
#if defined(__x86_64__)
  auto* frame = reinterpret_cast<std::uint64_t*>(top - 8 * sizeof(std::uint64_t));
  frame[0] = 0x1F80ULL | (0x037FULL << 32);                 // default MXCSR and x87 control word
  frame[1] = 0;                                             // r15
  frame[2] = 0;                                             // r14
  frame[3] = reinterpret_cast<std::uint64_t>(&fiber_main);  // r13
  frame[4] = reinterpret_cast<std::uint64_t>(f);            // r12
  frame[5] = 0;                                             // rbx
  frame[6] = 0;                                             // rbp
  frame[7] = reinterpret_cast<std::uint64_t>(&weft_fiber_trampoline);
#elif defined(__aarch64__)
  auto* frame = reinterpret_cast<std::uint64_t*>(top - 176);
  std::memset(frame, 0, 176);
  frame[0] = reinterpret_cast<std::uint64_t>(f);                        // x19
  frame[1] = reinterpret_cast<std::uint64_t>(&fiber_main);              // x20
  frame[11] = reinterpret_cast<std::uint64_t>(&weft_fiber_trampoline);  // x30
#endif
  next_sp = frame;
}

// The two per-worker halves of fiber-record recycling (records.h) live here,
// not in records.cc: the depot's SpinLock backs off through spin_backoff(),
// defined in this file and inlined into them; from records.cc it was a call,
// and the spawn path (take_record) gained a stack frame for its counter.

// The end of a fiber that ran to completion, on whichever fiber or g0 runs
// next on its worker (after_switch): its stack goes back to the pool, its
// record to this worker's free array.
void Worker::finish(Fiber* f) {
  chaos::at(chaos::Point::name_read);
  wait_until_unmarked(f);  // sysmon may be naming it (records.h)
  if (f->swaps_idle_stack) [[unlikely]] {
    forget_idle_stack(f);
  }
  release_stack(prev_stack);
  san::tsan_destroy(f->tsan_fiber);
  bump(exited);
  if (f->name) free_fiber_name(f);
  // A fiber that never parked or yielded ends without writing its record (a
  // fresh record that is neither queued nor running reads as ended); one
  // that did wrote it then, so this write finds the line in its state.
  if (f->state != FiberState::fresh) f->state = FiberState::dead;
  if (f->kind != RecordKind::pooled) {
    delete_record(f);
    return;
  }
  free_records[free_record_count++] = f;
  if (free_record_count < 2 * kRecordBatch) return;
  // Full: the oldest batch goes; the newest, warm here, stay for our spawns.
  auto* batch = new RecordBatch;
  std::memcpy(batch->records, free_records, sizeof batch->records);
  free_record_count -= kRecordBatch;
  std::memmove(free_records, free_records + kRecordBatch, free_record_count * sizeof(Fiber*));
  {
    std::lock_guard lock(sched->depot.lock);
    if (sched->depot.batches < sched->depot.max_batches) {
      (sched->depot.tail ? sched->depot.tail->next : sched->depot.head) = batch;
      sched->depot.tail = batch;
      ++sched->depot.batches;
      return;
    }
  }
  free_pooled_records(batch->records, kRecordBatch);
  delete batch;
}

Fiber* Worker::take_record() {
  if (free_record_count == 0) {
    RecordBatch* batch = nullptr;
    {
      std::lock_guard lock(sched->depot.lock);
      batch = sched->depot.head;
      if (batch) {
        sched->depot.head = batch->next;
        if (!sched->depot.head) sched->depot.tail = nullptr;
        --sched->depot.batches;
        sched->depot.low_water = std::min(sched->depot.low_water, sched->depot.batches);
      }
    }
    if (!batch) return nullptr;
    std::memcpy(free_records, batch->records, sizeof batch->records);
    delete batch;
    free_record_count = kRecordBatch;
  }
  Fiber* f = free_records[--free_record_count];
  // Fetch a record a few spawns ahead, for writing: it was most likely last
  // written on another core, and the spawn that takes it should not stall.
  if (free_record_count >= kRecordPrefetch) {
    prefetch_record(free_records[free_record_count - kRecordPrefetch]);
  }
  return f;
}

// Cheap sources only (no stealing, no sleeping): what a fiber that is about
// to park or yield can switch to directly, without a trip through g0.
WEFT_SWITCH_PATH Fiber* Worker::pick_local() {
  if (sched->stopping.load(std::memory_order_relaxed)) return nullptr;
  if (switches_to_timer_look-- == 0) {
    switches_to_timer_look = kTimerCheckTicks - 1;
    timer_look_due = true;  // taken after the switch (worker.h says why)
  }
  if (schedtick.load(std::memory_order_relaxed) % kFairnessTicks == 0) {
    sched->poll_now();  // a busy worker still notices I/O
    if (sched->gq.size() != 0) {
      if (Fiber* f = global_get(sched, this, 1)) return f;
    }
  }
  if (Fiber* f = local_get()) return f;
  if (sched->gq.size() != 0) return global_get(sched, this, 0);
  return nullptr;
}

// The budget is spent: let the poller's and the timers' fibers in, then
// give way if anything can run (weft/detail/coop.h). Polling here, not only
// every kFairnessTicks switches, is what reaches a fiber whose socket became
// ready while every worker streams: its readiness is only seen by a poll.
void Worker::coop_yield() {
  coop_left = coop_budget;
  // Never where a switch is not allowed: inside a timer's expiry (its owner
  // may be spinning on this worker for it to finish, and run_timers holds
  // this worker's pointer), a park commit, or a ReadyBatch's scope. The
  // first operation after it pays instead.
  if (no_coop != 0 || in_commit || in_ready_batch()) {
    coop_left = 1;
    return;
  }
  bump(coop_yields);
  sched->poll_now();
  run_timers(true);
  // A turn ends here even when nothing else can run, as in weft::yield: the
  // watchdog watches the tick, and a fiber that reaches this point is not
  // keeping anything from running.
  schedtick.store(schedtick.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  if (runnext.load(std::memory_order_relaxed) == nullptr && runq.empty() && !has_pinned() &&
      sched->gq.size() == 0) {
    return;
  }
  current->state = FiberState::yielded;
  leave(current, Action::yield);
}

void coop_spend(int units) noexcept {
  Worker* w = current_worker();
  if (w == nullptr || w->current == nullptr) return;
  w->coop_left -= units;
  if (w->coop_left > 0) [[likely]] {
    return;
  }
  w->coop_yield();
}

void Worker::record_latency(Fiber* f) {
  const std::int64_t waited = std::max<std::int64_t>(0, mono_now_ns() - f->ready_ns);
  const int bucket =
      waited < 2
          ? 0
          : std::min(kLatencyBuckets - 1, 63 - __builtin_clzll(static_cast<std::uint64_t>(waited)));
  bump((f->ready_from_poller ? poll_latency : sched_latency)[bucket]);
  f->ready_ns = 0;
  f->ready_from_poller = false;
}

WEFT_SWITCH_PATH void Worker::enter(Fiber* f) {
  schedtick.store(schedtick.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  coop_left = coop_budget;
  if (f->ready_ns != 0) [[unlikely]] {
    record_latency(f);
  }
  if (f->sp) {  // it parked or yielded before: resume it
    if (f->stack.given_back) [[unlikely]] {
      take_back_stack(f);  // idle_stack.h
    }
    running_stack = f->stack;
    next_sp = f->sp;
  } else {
    prepare(f);
  }
  current = f;
  tls_fiber = f;
  running.store(f, std::memory_order_release);  // pairs with mark_running_fiber
}

// Called on the fiber that stops running. Switching fiber to fiber keeps the
// return-stack predictor mostly intact and halves the switches; g0 is only
// for stealing and sleeping.
WEFT_SWITCH_PATH void Worker::leave(Fiber* self, Action action) {
  prev = self;
  prev_action = action;
  if (action == Action::exit) {
    prev_stack = running_stack;
  } else {
    self->stack = running_stack;  // its stack pointer follows in the switch
  }
  // A dump stopping the world: switch to g0, which stops there once this
  // fiber's context is saved and its park committed. acquire: pairs with
  // the release of stw by a dump that gave up waiting for this worker
  // (World's destructor), so that what the dump read of this worker's
  // fibers happens before the switch below writes them.
  Fiber* next = sched->stw.load(std::memory_order_acquire) ? nullptr : pick_local();
  while (next && next->run_gen != gen && !runs_here(next)) [[unlikely]] {
      next = pick_local();
    }
  if (next) {
    enter(next);
  } else {
    current = nullptr;
    tls_fiber = nullptr;
    // release: the park just committed happens before a dump that reads
    // nullptr here (running_on, dump.cc) reads the fiber's record.
    running.store(nullptr, std::memory_order_release);
  }
  switch_from_fiber(this, self, next, action == Action::exit);
  // Resumed, possibly on another worker.
  current_worker()->after_switch();
}

void Worker::after_switch() {
  settle_previous();
  if (timer_look_due) [[unlikely]] {
    timer_look_due = false;
    look_at_timers();
  }
}

// The look pick_local() found due, every kTimerCheckTicks switches.
void Worker::look_at_timers() {
  if (sched->idle.watching(this)) {
    // In the timer role's place (idle.h, invariant 7): every heap, and
    // the poller, whose holder would have been woken by both.
    run_timers(true);
    sched->poll_now();
  } else if (timers.min_when.load(std::memory_order_relaxed) != kNever) {
    run_timers(false);
  }
}

// Completes what the fiber that switched away asked for, off its stack.
void Worker::settle_previous() {
  Fiber* p = prev;
  if (!p) return;
  prev = nullptr;
  if (prev_action == Action::exit) {
    finish(p);
    return;
  }
  if (!p->stack.guarded && !saved_sp_in_bounds(p)) {
    report_overflow(p, p->stack, "found at a switch: the stack had no guard page");
  }
  if (prev_action == Action::yield) {
    if (p->run_gen != gen) [[unlikely]] {  // pinned: never where thieves look
      pinned_put(p);
    } else {
      runq_put(p);
    }
    return;
  }
  // Parked: the commit decides whether it really sleeps.
  chaos::at(chaos::Point::park_commit);
  in_commit = true;
  const bool slept = run_park_commit(commit, p, commit_arg);
  in_commit = false;
  if (!slept) ready_local(p);
}

void Worker::run_from_g0(Fiber* f) {
  // Abandoned by an earlier runtime and readied in this one (a socket or
  // channel that outlived it): it never runs again. Pinned to another
  // worker: handed to it.
  if (f->run_gen != gen && !runs_here(f)) return;
  if (sched->stw.load(std::memory_order_relaxed)) {  // found just as a dump began
    if (f->run_gen != gen) {
      pinned_put(f);
    } else {
      runq_put(f);
    }
    return;
  }
  enter(f);
  switch_from_g0(this, f);
  // Back on g0: a fiber here had nothing local to switch to.
  after_switch();
}

void Worker::loop() {
  tls_worker = this;
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  if (clockid_t c; pthread_getcpuclockid(pthread_self(), &c) == 0) {
    cpu_clock.store(c, std::memory_order_release);
  }
  void* altstack = enter_signal_stack();
  attach_stack_cache();
  tsan_g0 = san::tsan_current();
  pthread_attr_t attr;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    void* lo = nullptr;
    std::size_t size = 0;
    pthread_attr_getstack(&attr, &lo, &size);
    g0_stack_bottom = lo;
    g0_stack_size = size;
    pthread_attr_destroy(&attr);
  }
  while (Fiber* f = find_runnable()) run_from_g0(f);
  free_pooled_records(free_records, free_record_count);
  free_record_count = 0;
  detach_stack_cache();
  leave_signal_stack(altstack);
  tls_worker = nullptr;
}

namespace {

// Parks a fiber that has never run where `commit` publishes it (see
// start_fiber_parked); false when commit refused, and the fiber is to run
// now. Its id, generation and pin are set: a waker may run it at once.
bool park_unstarted(Fiber* f, const UnstartedPark* park) {
  if (!park) return false;
  f->state = FiberState::parked;
  f->wait_reason = park->reason;
  f->wait_detail = park->detail;
  f->parked_since_ms = coarse_now_ms();
  if (run_park_commit(park->commit, f, park->arg)) return true;
  f->state = FiberState::fresh;  // runnable now, and never parked
  return false;
}

// Inlined into both callers: a plain spawn (every go()) gets its own copy,
// with `park` null and its branches folded away.
__attribute__((always_inline)) inline std::uint64_t launch(Fiber* f, const Closure* vtable,
                                                           const UnstartedPark* park) {
  Scheduler* s = g_sched.load(std::memory_order_acquire);
  f->closure = vtable;
  Worker* w = current_worker();
  const std::uint32_t pinned = f->run_gen & kPinnedBit;  // SpawnOptions::pinned
  if (w && w->sched == s) {
    f->run_gen = s->gen;
    f->id = w->next_fiber_id();
    Worker::bump(w->spawned);
    const std::uint64_t id = f->id;
    if (pinned) [[unlikely]] {  // to this worker, and nobody else to wake
      f->run_gen |= kPinnedBit;
      f->pinned_home = static_cast<std::int16_t>(w->index);
      if (!park_unstarted(f, park)) {
        w->maybe_stamp_ready(f);
        w->pinned_put(f);
      }
      return id;
    }
    if (park_unstarted(f, park)) return id;  // f may run elsewhere already
    w->maybe_stamp_ready(f);
    // runnext only while it is free: a fiber spawning in a loop would
    // otherwise swap it (a locked instruction) on every spawn. Go gives it
    // to the newest; no order among new fibers is promised either way.
    Idle::Work work = Idle::Work::runnext;
    if (!w->runnext.load(std::memory_order_relaxed)) {
      w->runnext.store(f, std::memory_order_release);
    } else {
      w->runq_put(f);
      work = Idle::Work::stealable;
    }
    if (!w->solo) s->idle.wakep(work);  // the only worker is this one, running
    return id;
  }
  ForeignEntry entry;
  s = entry.sched();
  if (!s) {
    std::fprintf(stderr, "weft::go: the runtime ended while this thread was spawning a fiber\n");
    std::abort();
  }
  f->run_gen = s->gen | pinned;  // pinned: its first worker keeps it
  f->id = s->next_id.fetch_add(1, std::memory_order_relaxed);
  s->foreign_spawned.fetch_add(1, std::memory_order_relaxed);
  const std::uint64_t id = f->id;
  if (!park_unstarted(f, park)) s->submit_foreign(f);
  return id;
}

}  // namespace

std::uint64_t start_fiber(Fiber* f, const Closure* vtable) {
  return launch(f, vtable, nullptr);
}

std::uint64_t start_fiber_parked(Fiber* f, const Closure* vtable, const UnstartedPark& park) {
  return launch(f, vtable, &park);
}

// ---- timers --------------------------------------------------------------

void add_timer(TimerNode* node, std::int64_t when) {
  const RuntimeRef runtime;
  Worker* w = runtime.worker();
  Scheduler* s = runtime.sched();
  if (!s) {
    std::fprintf(
        stderr,
        "weft: timers, sleeps and context deadlines need a running runtime (inside weft::run)\n");
    std::abort();
  }
  TimerHeap& heap = w ? w->timers : s->workers[0]->timers;
  chaos::at(chaos::Point::timer_change);
  node->when = when;
  bool earliest;
  {
    std::lock_guard lock(heap.lock);
    heap.push(node);
    earliest = heap.nodes[0].node == node;
  }
  // The node may already have fired and be gone: only `when` from here on. A
  // timer due never (a saturated timeout) needs nobody awake for it.
  if (earliest && when != kNever) s->idle.timer_added(when);
}

// ---- parking -------------------------------------------------------------

bool on_fiber() noexcept {
  Worker* w = current_worker();
  return w && w->current;
}

Fiber* current_waiter() noexcept {
  Worker* w = current_worker();
  if (w && w->current) return w->current;
  return thread_waiter();
}

std::uint64_t waiter_id(const Fiber* waiter) noexcept {
  return waiter->is_thread ? 0 : waiter->id;
}

void park(ParkCommit commit, void* arg, WaitReason reason, std::uint64_t detail) noexcept {
  Worker* w = current_worker();
  if (w && w->current && !w->in_commit) {
    Fiber* self = w->current;
    self->state = FiberState::parked;
    self->wait_reason = reason;
    self->wait_detail = detail;
    self->parked_since_ms = coarse_now_ms();
    w->commit = commit;
    w->commit_arg = arg;
    w->leave(w->current, Action::park);
    return;
  }
  if (w) {
    std::fprintf(stderr,
                 "weft: a park commit or scheduler callback tried to wait; it runs on the worker "
                 "itself and must not block\n");
    std::abort();
  }
  Fiber* self = thread_waiter();
  self->thread_wake.store(0, std::memory_order_relaxed);
  if (!run_park_commit(commit, self, arg)) return;
  while (self->thread_wake.load(std::memory_order_acquire) == 0) futex_wait(&self->thread_wake, 0);
}

namespace {
WEFT_TLS ReadyBatch* tls_ready_batch = nullptr;
}  // namespace

bool in_ready_batch() noexcept {
  return tls_ready_batch != nullptr;
}

ReadyBatch::ReadyBatch() noexcept {
  if (!tls_ready_batch) {
    tls_ready_batch = this;
    owner_ = true;
  }
}

// Only a stepped walk counts its steps for the watchdog: a poll's batch
// does not pay for the worker's lookup.
ReadyBatch::ReadyBatch(Stepped) noexcept : ReadyBatch() {
  stepped_ = owner_;
  if (owner_) worker_ = current_worker();
}

ReadyBatch::~ReadyBatch() {
  if (!owner_) return;
  tls_ready_batch = nullptr;
  flush();
}

ReadyBatch::ReadyBatch(FromPoll) noexcept : ReadyBatch() {
  from_poll_ = owner_;
}

void ReadyBatch::step_done() noexcept {
  if (!owner_) return;
  if (worker_) {
    worker_->walk_steps.store(worker_->walk_steps.load(std::memory_order_relaxed) + 1,
                              std::memory_order_relaxed);
  }
  if (count_ >= kSlice) flush();
}

void ReadyBatch::flush() noexcept {
  Fiber* f = head_;
  if (!f) return;
  head_ = tail_ = nullptr;
  count_ = 0;
  const RuntimeRef runtime;
  Worker* w = runtime.worker();
  Scheduler* s = runtime.sched();
  if (!s) {
    while (f) {
      Fiber* next = f->next;
      drop_late_ready(f);
      f = next;
    }
    return;
  }
  if (w) {
    // Read each link before the push: once queued, a thief may run the fiber.
    while (f) {
      Fiber* next = f->next;
      if (!w->runq.push(f)) break;
      f = next;
    }
    // All of it ours, and little enough that we will run it before a worker
    // we woke would arrive (idle.h, invariant 7).
    if (!f && from_poll_ && w->runq.size() < kKeepUpQueue) {
      w->kept_poll_batch = true;
      return;
    }
  }
  // A stepped batch may hold more than a slice (one step readied many).
  while (f) {
    Fiber* rest[kSlice];
    std::uint32_t n = 0;
    for (; f && n < kSlice; f = f->next) rest[n++] = f;
    s->gq.put(rest, n);
  }
  s->idle.wakep();
}

void ready(Fiber* f) noexcept {
  if (f->is_thread) {
    f->thread_wake.store(1, std::memory_order_release);
    futex_wake(&f->thread_wake, 1);
    return;
  }
  if (ReadyBatch* b = tls_ready_batch) {
    f->next = nullptr;
    (b->tail_ ? b->tail_->next : b->head_) = f;
    b->tail_ = f;
    if (++b->count_ == ReadyBatch::kSlice && !b->stepped_) b->flush();
    return;
  }
  Worker* w = current_worker();
  if (w) {
    // A fiber of an earlier runtime is queued all the same: the worker
    // that picks it drops it (it reads the record then anyway).
    w->ready_local(f);
    return;
  }
  ForeignEntry entry;
  Scheduler* s = entry.sched();
  if (!s || generation_of(*f) != s->gen) {
    drop_late_ready(f);
    return;
  }
  s->submit_foreign(f);
}

void set_spin_nap(std::chrono::nanoseconds nap) {
  spin_nap_ns.store(nap.count(), std::memory_order_relaxed);
}

SchedulerStats scheduler_stats() noexcept {
  SchedulerStats st{};
  Scheduler* s = g_sched.load(std::memory_order_acquire);
  if (!s) return st;
  std::uint64_t spawned = s->foreign_spawned.load(), exited = 0;
  st.watcher = -1;
  for (auto& w : s->workers) {
    if (s->idle.watching(w.get())) st.watcher = w->index;
    spawned += w->spawned.load(std::memory_order_relaxed);
    exited += w->exited.load(std::memory_order_relaxed);
    st.steals += w->steals.load(std::memory_order_relaxed);
    st.schedticks += w->schedtick.load(std::memory_order_relaxed);
  }
  st.spawned = spawned;
  st.worker_wakeups = s->idle.wakeups();
  st.watchdog_reports = s->watchdog_reports.load(std::memory_order_relaxed);
  st.timer_rescues = s->timer_rescues.load(std::memory_order_relaxed);
  st.sysmon_wakeups = s->sysmon_wakeups.load(std::memory_order_relaxed);
  st.watchers_relieved = s->idle.watchers_relieved();
  for (auto& w : s->workers) st.coop_yields += w->coop_yields.load(std::memory_order_relaxed);
  st.idle_workers = s->idle.idle_workers();
  st.napping_workers = s->idle.napping() ? 1 : 0;
  st.spinning_workers = s->idle.spinning_workers();
  {
    std::lock_guard lock(s->depot.lock);
    st.records_pooled = s->depot.batches * kRecordBatch;
  }
  st.live_fibers = static_cast<std::int64_t>(spawned - exited);
  return st;
}

}  // namespace weft::detail

// ---- public API ----------------------------------------------------------

namespace weft {

void yield() noexcept {
  using namespace detail;
  Worker* w = current_worker();
  if (!w || !w->current) {
    sched_yield();
    return;
  }
  // Nothing else to run here: skip the scheduler, except on the ticks where
  // it polls for I/O and timers, which a yield loop must not starve.
  const std::uint32_t tick = w->schedtick.load(std::memory_order_relaxed) + 1;
  w->schedtick.store(tick, std::memory_order_relaxed);
  if (tick % kFairnessTicks != 0 && w->runnext.load(std::memory_order_relaxed) == nullptr &&
      w->runq.empty() && !w->has_pinned() && w->sched->gq.size() == 0) {
    return;
  }
  w->current->state = FiberState::yielded;
  w->leave(w->current, Action::yield);
}

std::uint64_t fiber_id() noexcept {
  detail::Worker* w = detail::current_worker();
  return w && w->current ? w->current->id : 0;
}

// Reads the TLS itself, as fresh as calling current_worker() and one call
// cheaper (WaitGroup asks on every add).
WEFT_READS_CURRENT_WORKER int worker_index() noexcept {
  detail::Worker* w = detail::tls_worker;
  asm volatile("" ::: "memory");
  return w ? w->index : -1;
}

int num_workers() noexcept {
  detail::Scheduler* s = detail::g_sched.load(std::memory_order_acquire);
  return s ? s->nworkers : 0;
}

// The fiber writes its own pin: nobody else reads run_gen or pinned_home
// while it runs, and whoever picks it next reads them after the queue's
// publication of it.
// A guard inside a pinned stretch (an outer guard, SpawnOptions::pinned)
// leaves the pin to whoever made it.
PinToWorker::PinToWorker() noexcept : pinned_(false) {
  detail::Worker* w = detail::current_worker();
  if (!w || !w->current) return;
  detail::Fiber* f = w->current;
  if (f->run_gen & detail::kPinnedBit) return;
  f->pinned_home = static_cast<std::int16_t>(w->index);
  f->run_gen |= detail::kPinnedBit;
  pinned_ = true;
}

PinToWorker::~PinToWorker() {
  if (!pinned_) return;
  detail::Fiber* f = detail::current_worker()->current;
  f->run_gen &= ~detail::kPinnedBit;
  f->pinned_home = -1;
}

}  // namespace weft
