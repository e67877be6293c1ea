// PollDesc: Go's pollDesc semantics (runtime/netpoll.go), rule by rule:
// - rg/wg are binary semaphores: nil, ready (an unconsumed edge), wait (a
//   waiter is committing), or the parked waiter itself.
// - Waiters store "wait" first and check the error bits second; unblockers
//   publish the bits first and read the slot second, so neither misses the
//   other.
// - Deadlines are runtime timers carrying a sequence number; any change
//   bumps it, so a timer that fires late for an old deadline does nothing.
// - Tokens carry the desc's generation: readiness for a closed fd
//   never wakes the next user of the same desc.
// - A cancellation scoped to one operation (poll_op_*) is a third kind of
//   expiry beside the user's deadline and close: a per-direction "current
//   op cancelled" bit in `info`, set only while the cancelled op holds the
//   direction, and published and unblocked the way a deadline is.
// - Descs are type-stable (slot_arena.h): a desc's memory stays mapped, and
//   its generation, which tokens carry, lives where it is never given back.
//   A late event finds its generation moved on and touches nothing else;
//   dispatch runs in a grace section, so a desc it found current is not
//   given back under it; poll_close waits out a deadline expiry in flight.
//   So the pages of a burst's descs go back to the kernel once all in a
//   chunk are free.
#include "netpoll.h"

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "chaos.h"
#include "fiber.h"
#include "grace.h"
#include "idle_stack.h"
#include "registry.h"
#include "slot_arena.h"
#include "timer.h"
#include "weft/detail/park.h"
#include "weft/detail/spinlock.h"
#include "weft/error.h"

namespace weft::detail {

poll::Poller* runtime_poller();  // lifecycle.cc
std::uint32_t runtime_generation() noexcept;

namespace {

constexpr std::uintptr_t kNil = 0, kReady = 1, kWait = 2;

constexpr std::uint32_t kClosing = 1, kExpiredRead = 2, kExpiredWrite = 4, kEventErr = 8,
                        kCanceledRead = 16, kCanceledWrite = 32;

constexpr unsigned kTokenSeqShift = 48;
constexpr std::uint64_t kTokenPtrMask = (std::uint64_t{1} << kTokenSeqShift) - 1;

// The fibers parked in the poller, for the runtime whose generation tags
// the count (the high 32 bits; 0 between runtimes): a waiter abandoned
// with its runtime is never taken out of its slot, or only later, by a
// close from another thread, and it must not count for the next runtime
// (whose idle rule would keep polling for it, and whose deadlock check
// would never fire). Every change names the generation of its desc and is
// dropped if the tag differs, in the same CAS, so that a late close cannot
// take the next runtime's count down. netpoll_runtime_begins/_ends retag.
std::atomic<std::uint64_t> waiters{0};

void count_waiter(std::uint32_t gen, int delta) {
  std::uint64_t cur = waiters.load(std::memory_order_relaxed);
  do {
    if (cur >> 32 != gen) return;  // a desc of an ended runtime
  } while (!waiters.compare_exchange_weak(
      cur, cur + static_cast<std::uint64_t>(std::int64_t{delta}), std::memory_order_relaxed));
}

[[noreturn]] void fatal(const char* what) {
  std::fprintf(stderr, "weft: %s\n", what);
  std::abort();
}

SlotArena& descs();  // where every PollDesc lives, below

}  // namespace

struct PollDesc {
  int fd = -1;
  std::atomic<std::uintptr_t> rg{kNil}, wg{kNil};
  std::atomic<std::uint32_t> info{0};
  // poll::Event::error, until poll_take_error. Relaxed throughout: a waiter
  // the event wakes is ordered after it by the wake-up itself, and one that
  // was not parked may miss it either way.
  std::atomic<int> taken_error{0};
  // A read that emptied the socket must still ask the kernel first: a
  // hang-up came (poll::kHangup: an end or error waits for a read, and no
  // later edge will say so), or the poller does not report every arrival.
  // Set at poll_open and by dispatch; sticky until the desc is reused.
  std::atomic<bool> read_asks_first{true};
  std::uint32_t run_gen = 0;  // runtime_generation() at poll_open

  SpinLock lock;  // guards everything below
  bool closing = false;
  bool event_err = false;
  std::int64_t rd = 0, wd = 0;  // 0 none, -1 expired, else absolute ns
  std::uint64_t rseq = 0, wseq = 0;
  bool rt_armed = false, wt_armed = false;
  // Both deadlines were set together (poll_set_deadline with
  // PollMode::both), to the same time: rt, armed for both, is their one
  // timer. Not merely equal deadlines: two set one at a time from a coarse
  // clock are often equal, and a timer combined and split again on each
  // alternate set cost two heap operations per request.
  bool combined = false;
  // An armed timer's `when` is at or before rd (wd): a deadline moved later
  // leaves it there (poll_set_deadline). Only arm() writes it, under lock.
  TimerNode rt, wt;
  // The cancellable operation holding each direction (its PollOp::seq; 0
  // none or a plain one), whether it was cancelled, and the last number
  // handed out. A cancel for any other op leaves these alone.
  std::uint64_t rop = 0, wop = 0;
  bool rop_canceled = false, wop_canceled = false;
  std::uint64_t op_seq = 0;

  std::atomic<std::uintptr_t>& slot(PollMode mode) { return mode == PollMode::read ? rg : wg; }

  void publish_info() {  // under lock, before any unblock
    std::uint32_t bits = 0;
    if (closing) bits |= kClosing;
    if (rd < 0) bits |= kExpiredRead;
    if (wd < 0) bits |= kExpiredWrite;
    if (event_err) bits |= kEventErr;
    if (rop_canceled) bits |= kCanceledRead;
    if (wop_canceled) bits |= kCanceledWrite;
    info.store(bits, std::memory_order_seq_cst);  // Dekker pair: see unblock()
  }

  // Bumped by every free; the low 16 bits go into tokens.
  std::atomic<std::uint32_t>& generation() const { return descs().generation(this); }

  std::uint64_t token() const {
    return reinterpret_cast<std::uint64_t>(this) |
           (std::uint64_t{generation().load(std::memory_order_relaxed) & 0xFFFF} << kTokenSeqShift);
  }
};

namespace {

std::atomic<std::uint64_t> g_poller_wakeups{0};

// The poller's wake-ups are timed, every one (weft::metrics' poller latency,
// the mission's wake-up latency seen in production). Returns how many it
// stamped, for g_poller_wakeups: counted once per dispatch, since a count
// per fiber wrote that line, shared by every worker's polls, per request.
int stamp_poller_wake(Fiber* f, std::int64_t now) {
  if (!f) return 0;
  f->ready_ns = now;
  f->ready_from_poller = true;
  return 1;
}

SlotArena& descs() {
  static SlotArena* arena = new SlotArena(sizeof(PollDesc));  // outlives every runtime
  return *arena;
}

PollStatus check_error(const PollDesc* pd, PollMode mode) {
  // seq_cst: the waiter's half of the Dekker pair in unblock().
  const std::uint32_t bits = pd->info.load(std::memory_order_seq_cst);
  if (bits & kClosing) return PollStatus::closed;
  // Before the deadline: a cancelled op reports its cancel even when the
  // user's deadline has also passed.
  if ((mode == PollMode::read && (bits & kCanceledRead)) ||
      (mode == PollMode::write && (bits & kCanceledWrite))) {
    return PollStatus::canceled;
  }
  if ((mode == PollMode::read && (bits & kExpiredRead)) ||
      (mode == PollMode::write && (bits & kExpiredWrite))) {
    return PollStatus::timeout;
  }
  if (mode == PollMode::read && (bits & kEventErr)) return PollStatus::not_pollable;
  return PollStatus::ready;
}

// Moves a slot to ready (I/O) or nil (deadline, close) and returns the
// parked waiter, if one had committed.
Fiber* unblock(PollDesc* pd, PollMode mode, bool io_ready) {
  auto& slot = pd->slot(mode);
  for (;;) {
    // seq_cst: the unblocker's half of a Dekker pair. publish_info() stored
    // the bits (seq_cst) before this load; block() stores kWait (seq_cst)
    // before its load of the bits in check_error(). With acquire here, the
    // load could be ordered before the bits' store (AArch64 allows it), both
    // sides would miss each other, and a deadline or close would be lost.
    std::uintptr_t old = slot.load(std::memory_order_seq_cst);
    if (old == kReady) return nullptr;
    if (old == kNil && !io_ready) return nullptr;  // deadlines and close speak through info
    if (slot.compare_exchange_weak(old, io_ready ? kReady : kNil, std::memory_order_acq_rel)) {
      if (old == kWait || old == kNil) return nullptr;
      // The waiter leaves the count here, not when it resumes: one
      // abandoned with its runtime never resumes, and would be counted
      // (polls kept up for it) for the rest of the process.
      count_waiter(pd->run_gen, -1);
      return reinterpret_cast<Fiber*>(old);
    }
  }
}

// The end of every commit of a waiter to a slot that holds kWait (a park,
// an unstarted fiber's park, the idle-stack sweep's put-back): f goes in,
// or, if a waker moved kWait on first (readiness to kReady; a deadline,
// close or cancel to kNil), the waiter count it was given is dropped here,
// since no unblock took f out, and f is the caller's to run.
bool publish_waiter(std::atomic<std::uintptr_t>* slot, Fiber* f, std::uint32_t gen) {
  std::uintptr_t expected = kWait;
  // acq_rel: the release pairs with the acquire of whoever takes f out
  // (unblock) or holds it (netpoll_hold_parked), so what f and its
  // committer wrote comes first.
  if (slot->compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(f),
                                    std::memory_order_acq_rel)) {
    return true;
  }
  count_waiter(gen, -1);
  return false;
}

// True if woken by readiness; false for a deadline, close or spurious wake.
bool block(PollDesc* pd, PollMode mode) {
  auto& slot = pd->slot(mode);
  for (;;) {
    std::uintptr_t old = slot.load(std::memory_order_acquire);
    if (old == kReady) {
      // seq_cst: it consumes readiness, as poll_prepare's clear does.
      if (slot.compare_exchange_strong(old, kNil, std::memory_order_seq_cst)) return true;
      continue;
    }
    if (old != kNil) fatal("two fibers wait on one fd in the same direction");
    if (slot.compare_exchange_strong(old, kWait, std::memory_order_seq_cst)) break;
  }
  chaos::at(chaos::Point::park_commit);  // kWait stored, the error bits not yet read
  // Store first (kWait above), check second: see the file comment.
  if (check_error(pd, mode) == PollStatus::ready) {
    // Counted until whoever unblocks it takes it out of the slot (unblock).
    count_waiter(pd->run_gen, 1);
    std::atomic<std::uintptr_t>* slot_ptr = &slot;
    park_with(
        mode == PollMode::read ? WaitReason::io_read : WaitReason::io_write,
        [slot_ptr, gen = pd->run_gen](Fiber* self) {
          if (self->swaps_idle_stack) [[unlikely]] {
            note_socket_wait(self, slot_ptr);
          }
          // Refused if readiness, a deadline or close came first: then don't sleep.
          return publish_waiter(slot_ptr, self, gen);
        },
        static_cast<std::uint64_t>(pd->fd));
  }
  // seq_cst: it consumes readiness, as poll_prepare's clear does.
  const std::uintptr_t old = slot.exchange(kNil, std::memory_order_seq_cst);
  if (old > kWait) fatal("poll desc slot corrupted: still holds a waiter after waking");
  return old == kReady;
}

void arm(PollDesc* pd, TimerNode& timer, std::int64_t when, PollMode mode, std::uint64_t seq);

void on_deadline(void* context, std::uint64_t arg) {
  auto* pd = static_cast<PollDesc*>(context);
  const auto mode = static_cast<PollMode>(arg & 3);
  const std::uint64_t seq = arg >> 2;
  Fiber* r = nullptr;
  Fiber* w = nullptr;
  {
    std::lock_guard guard(pd->lock);
    // A combined timer (both deadlines set together) carries the read seq.
    const std::uint64_t current = mode == PollMode::write ? pd->wseq : pd->rseq;
    if (seq != current) return;  // the deadline changed since this timer was set
    // Moved later since (poll_set_deadline left this earlier timer armed):
    // the deadline is not yet here, so the timer is armed again for it.
    // (A combined timer's read and write deadlines are equal.)
    const std::int64_t deadline = mode == PollMode::write ? pd->wd : pd->rd;
    if (deadline > 0 && deadline > mono_now_ns()) {
      arm(pd, mode == PollMode::write ? pd->wt : pd->rt, deadline, mode, seq);
      return;
    }
    if (mode != PollMode::write) {
      pd->rd = -1;
      pd->rt_armed = false;
    }
    if (mode != PollMode::read) {
      pd->wd = -1;
      if (mode == PollMode::write) pd->wt_armed = false;
    }
    pd->publish_info();
    if (mode != PollMode::write) r = unblock(pd, PollMode::read, false);
    if (mode != PollMode::read) w = unblock(pd, PollMode::write, false);
  }
  if (r || w) {
    const std::int64_t now = mono_now_ns();
    g_poller_wakeups.fetch_add(
        static_cast<std::uint64_t>(stamp_poller_wake(r, now) + stamp_poller_wake(w, now)),
        std::memory_order_relaxed);
  }
  if (r) ready(r);
  if (w) ready(w);
}

void arm(PollDesc* pd, TimerNode& timer, std::int64_t when, PollMode mode, std::uint64_t seq) {
  timer.fire = &on_deadline;
  timer.context = pd;
  timer.arg = (seq << 2) | static_cast<std::uint64_t>(mode);
  add_timer(&timer, when);
}

}  // namespace

std::uint64_t netpoll_wakeups() noexcept {
  return g_poller_wakeups.load(std::memory_order_relaxed);
}

int netpoll_waiters() noexcept {
  return static_cast<int>(static_cast<std::uint32_t>(waiters.load(std::memory_order_relaxed)));
}

void netpoll_runtime_begins(std::uint32_t gen) noexcept {
  // Before its workers start (their threads' start orders it before every
  // count_waiter of theirs): what an ended runtime left is not counted.
  waiters.store(std::uint64_t{gen} << 32, std::memory_order_relaxed);
}

void netpoll_runtime_ends() noexcept {
  // After its workers joined: a close of one of its sockets from outside
  // finds the tag gone and changes nothing.
  waiters.store(0, std::memory_order_relaxed);
}

std::size_t scavenge_poll_descs(std::uint32_t min_idle_ms) {
  return descs().scavenge(coarse_now_ms(), min_idle_ms);
}

SlotArenaStats poll_desc_stats() {
  return descs().stats();
}

std::uint64_t poll_token(const PollDesc* pd) {
  return pd->token();
}

PollDesc* poll_open(int fd, std::error_code* ec) {
  const SlotArena::Slot slot = descs().take();
  if (!slot.at) {
    if (ec) *ec = std::make_error_code(std::errc::not_enough_memory);
    return nullptr;
  }
  PollDesc* pd = slot.fresh ? new (slot.at) PollDesc : static_cast<PollDesc*>(slot.at);
  {
    std::lock_guard guard(pd->lock);
    pd->fd = fd;
    pd->closing = false;
    pd->event_err = false;
    pd->taken_error.store(0, std::memory_order_relaxed);
    pd->rd = pd->wd = 0;
    ++pd->rseq;
    ++pd->wseq;
    pd->rt_armed = pd->wt_armed = false;
    pd->combined = false;
    pd->rop = pd->wop = 0;
    pd->rop_canceled = pd->wop_canceled = false;
    pd->rg.store(kNil, std::memory_order_relaxed);
    pd->wg.store(kNil, std::memory_order_relaxed);
    pd->publish_info();
  }
  // The token reaches the poller's thread through the kernel, which orders
  // nothing as far as the C++ model (and TSan) can tell: publish the desc
  // with a release store that dispatch reads with acquire.
  pd->run_gen = runtime_generation();
  poll::Poller* poller = pd->run_gen != 0 ? runtime_poller() : nullptr;
  pd->read_asks_first.store(!poller || !poller->reports_every_arrival(), std::memory_order_relaxed);
  pd->generation().store(pd->generation().load(std::memory_order_relaxed),
                         std::memory_order_release);
  std::error_code err = poller ? poller->add(fd, pd->token()) : make_error_code(errc::no_runtime);
  if (err) {
    descs().put(pd);
    if (ec) *ec = err;
    return nullptr;
  }
  if (ec) ec->clear();
  return pd;
}

void poll_unblock(PollDesc* pd) {
  chaos::at(chaos::Point::close);
  Fiber* r = nullptr;
  Fiber* w = nullptr;
  {
    std::lock_guard guard(pd->lock);
    if (pd->closing) return;
    pd->closing = true;
    ++pd->rseq;
    ++pd->wseq;
    pd->publish_info();
    r = unblock(pd, PollMode::read, false);
    w = unblock(pd, PollMode::write, false);
    if (pd->rt_armed) stop_timer(&pd->rt);
    if (pd->wt_armed) stop_timer(&pd->wt);
    pd->rt_armed = pd->wt_armed = false;
    pd->combined = false;
  }
  if (r) ready(r);
  if (w) ready(w);
}

void poll_close(PollDesc* pd) {
  if (!pd->closing) fatal("poll_close before poll_unblock");
  if (pd->rg.load() > kWait || pd->wg.load() > kWait) fatal("poll_close with a fiber still parked");
  // Another runtime's poller never had it; an ended one is gone.
  if (!poll_runtime_gone(pd)) {
    if (poll::Poller* poller = runtime_poller()) poller->remove(pd->fd, pd->token());
  }
  // A deadline's expiry popped before poll_unblock stopped the timers may
  // still be about to lock the desc: the next user's desc, or a given-back
  // page, otherwise.
  stop_timer_and_wait(&pd->rt);
  stop_timer_and_wait(&pd->wt);
  pd->fd = -1;
  descs().put(pd);
}

PollStatus poll_prepare(PollDesc* pd, PollMode mode) {
  const PollStatus status = check_error(pd, mode);
  if (status != PollStatus::ready) return status;
  // The syscall about to be tried tells the truth; a latched edge from
  // before it would only cause a useless retry.
  if (mode == PollMode::read) {
    // seq_cst, and a read-modify-write: one of the partners of
    // poll_read_may_wait_first's ordering (with the block() steps that consume
    // readiness too); a plain store may erase an edge without ordering
    // the hang-up stored before it.
    pd->rg.exchange(kNil, std::memory_order_seq_cst);
  } else {
    pd->wg.store(kNil, std::memory_order_relaxed);
  }
  return PollStatus::ready;
}

bool poll_read_may_wait_first(const PollDesc* pd) noexcept {
  // seq_cst, with netpoll_dispatch's store of the bit and the steps that
  // consume read readiness (poll_prepare, block): a hang-up stored before
  // the last consume, which may have erased the edge its event brought, is
  // seen here, since this load comes after that consume; one stored after
  // it is followed by its unblock, which then finds the slot consumed and
  // marks it ready, so a wait returns at once.
  return !pd->read_asks_first.load(std::memory_order_seq_cst);
}

bool poll_runtime_gone(const PollDesc* pd) noexcept {
  return pd->run_gen != runtime_generation();
}

PollStatus poll_wait(PollDesc* pd, PollMode mode) {
  // Nothing would ever report readiness: the poller it was added to is gone.
  if (poll_runtime_gone(pd)) return PollStatus::no_runtime;
  for (;;) {
    const PollStatus status = check_error(pd, mode);
    if (status != PollStatus::ready) return status;
    if (block(pd, mode)) return PollStatus::ready;
    // Woken with no readiness and no error: a deadline was moved. Wait again.
  }
}

bool netpoll_hold_parked(std::atomic<std::uintptr_t>* slot, Fiber* f) {
  auto expected = reinterpret_cast<std::uintptr_t>(f);
  // A load first: a stale slot may lie on a desc page given back, which a
  // failed CAS would fault in again.
  if (slot->load(std::memory_order_relaxed) != expected) return false;
  // acquire: pairs with the commit that published f (block), so what f
  // wrote before it parked is ours to read. kWait makes the slot look like
  // a commit in progress: a waker's news stays in the slot and the error
  // bits, and netpoll_put_back_parked finds it there, as the commit would.
  return slot->compare_exchange_strong(expected, kWait, std::memory_order_acquire);
}

bool netpoll_put_back_parked(std::atomic<std::uintptr_t>* slot, Fiber* f) {
  // As a commit: the hold left kWait. The sweep holds this runtime's fibers.
  return publish_waiter(slot, f, runtime_generation());
}

bool poll_park_unstarted(PollDesc* pd, PollMode mode, Fiber* f) {
  if (poll_runtime_gone(pd)) return false;  // no poller would ever ready it
  auto& slot = pd->slot(mode);
  std::uintptr_t old = kNil;
  // seq_cst: the waiter's store of the Dekker pair with publish_info() and
  // unblock(), as in block(); kReady: readiness came since the EAGAIN.
  if (!slot.compare_exchange_strong(old, kWait, std::memory_order_seq_cst)) {
    if (old == kReady) return false;
    fatal("two fibers wait on one fd in the same direction");
  }
  chaos::at(chaos::Point::park_commit);  // kWait stored, the error bits not yet read
  if (check_error(pd, mode) != PollStatus::ready) {
    slot.store(kNil, std::memory_order_relaxed);  // nothing else moves kWait but unblock
    return false;
  }
  count_waiter(pd->run_gen, 1);  // unblock() takes it out, as in block()
  // Refused: it runs now, and its read's poll_prepare drops what is left in
  // the slot.
  return publish_waiter(&slot, f, pd->run_gen);
}

void poll_op_begin(PollDesc* pd, PollMode mode, PollOp* op) {
  std::lock_guard guard(pd->lock);
  op->seq = ++pd->op_seq;
  const bool read = mode == PollMode::read;
  (read ? pd->rop : pd->wop) = op->seq;
  // Cancelled while it queued for the direction's lock: it fails at once
  // (poll_prepare reports `canceled`), as Go's fdMutex waiter does.
  if (op->canceled) {
    (read ? pd->rop_canceled : pd->wop_canceled) = true;
    pd->publish_info();
  }
}

void poll_op_end(PollDesc* pd, PollMode mode, PollOp* op) {
  std::lock_guard guard(pd->lock);
  const bool read = mode == PollMode::read;
  std::uint64_t& cur = read ? pd->rop : pd->wop;
  if (cur != op->seq) return;
  cur = 0;
  bool& canceled = read ? pd->rop_canceled : pd->wop_canceled;
  if (canceled) {
    canceled = false;  // the next op on the direction starts clean
    pd->publish_info();
  }
}

bool poll_op_cancel(PollDesc* pd, PollMode mode, PollOp* op) {
  Fiber* f = nullptr;
  bool current = false;
  {
    std::lock_guard guard(pd->lock);
    op->canceled = true;  // a queued op finds this in poll_op_begin
    const bool read = mode == PollMode::read;
    current = op->seq != 0 && (read ? pd->rop : pd->wop) == op->seq;
    if (current) {
      (read ? pd->rop_canceled : pd->wop_canceled) = true;
      // The cancel's half of a Dekker pair, as a deadline's: publish_info()
      // stores the bits (seq_cst), then unblock() loads the slot (seq_cst);
      // the partner is block(), which stores kWait (seq_cst) and then loads
      // the bits in check_error() (seq_cst). Neither can miss the other.
      pd->publish_info();
      f = unblock(pd, mode, false);
    }
  }
  if (f) ready(f);
  return current;
}

namespace {

// poll_set_deadline's common case, a server's idle timeout moved ahead
// before each request: one direction's deadline moved later than its armed
// timer, which stays, as below. `when` is known to be in the future (the
// caller checked it against the coarse clock), so the expired bits stay
// clear and nothing is to be woken: no publish_info(), no unblock(). A
// combined timer (both deadlines set together) takes the general path,
// which splits it. Under pd->lock; false if it does not apply.
bool move_deadline_later(PollDesc* pd, std::int64_t when, PollMode mode) {
  const bool read = mode == PollMode::read;
  std::int64_t& mine = read ? pd->rd : pd->wd;
  const bool armed = read ? pd->rt_armed : pd->wt_armed;
  const TimerNode& timer = read ? pd->rt : pd->wt;
  if (pd->closing || !armed || mine <= 0 || pd->combined || when < timer.when) {
    return false;
  }
  mine = when;
  return true;
}

}  // namespace

void poll_set_deadline(PollDesc* pd, std::int64_t when, PollMode mode) {
  chaos::at(chaos::Point::timer_change);
  // The coarse clock proves `when` is not yet due when it is far enough
  // ahead (an idle timeout of seconds always is), without the full clock
  // read that the general path pays to find a deadline in the past: two
  // per request of a server that moves both deadlines.
  if (mode != PollMode::both && when > coarse_mono_ns() + kCoarseClockLagNs) {
    std::lock_guard guard(pd->lock);
    if (move_deadline_later(pd, when, mode)) return;
  }
  std::int64_t d = when;
  // kDeadlineLongPast (a cancel) needs no clock read.
  if (d != 0 && (d < 1'000'000'000 || d <= mono_now_ns())) d = -1;
  Fiber* r = nullptr;
  Fiber* w = nullptr;
  {
    std::lock_guard guard(pd->lock);
    if (pd->closing) return;
    const std::int64_t rd0 = pd->rd, wd0 = pd->wd;
    const bool combo0 = pd->combined && rd0 > 0;
    if (mode != PollMode::write) pd->rd = d;
    if (mode != PollMode::read) pd->wd = d;
    const bool combo = mode == PollMode::both && d > 0;
    pd->combined = combo;
    const PollMode rmode = combo ? PollMode::both : PollMode::read;
    // A deadline moved later (a server's deadline per request) keeps the
    // armed timer, which fires no later than the new deadline and then arms
    // itself again for it (on_deadline): one heap operation per timer
    // period instead of a stop and an add on every call.
    if (!pd->rt_armed) {
      if (pd->rd > 0) {
        arm(pd, pd->rt, pd->rd, rmode, pd->rseq);
        pd->rt_armed = true;
      }
    } else if (combo == combo0 && pd->rd > 0 && pd->rd >= pd->rt.when) {
      // later: the armed timer stays
    } else if (pd->rd != rd0 || combo != combo0) {
      ++pd->rseq;
      stop_timer(&pd->rt);
      pd->rt_armed = pd->rd > 0;
      if (pd->rt_armed) arm(pd, pd->rt, pd->rd, rmode, pd->rseq);
    }
    if (!pd->wt_armed) {
      if (pd->wd > 0 && !combo) {
        arm(pd, pd->wt, pd->wd, PollMode::write, pd->wseq);
        pd->wt_armed = true;
      }
    } else if (combo == combo0 && pd->wd > 0 && pd->wd >= pd->wt.when) {
      // later: the armed timer stays
    } else if (pd->wd != wd0 || combo != combo0) {
      ++pd->wseq;
      stop_timer(&pd->wt);
      pd->wt_armed = pd->wd > 0 && !combo;
      if (pd->wt_armed) arm(pd, pd->wt, pd->wd, PollMode::write, pd->wseq);
    }
    pd->publish_info();
    // A deadline set in the past wakes an operation already parked.
    if (pd->rd < 0) r = unblock(pd, PollMode::read, false);
    if (pd->wd < 0) w = unblock(pd, PollMode::write, false);
  }
  if (r) ready(r);
  if (w) ready(w);
}

int poll_take_error(PollDesc* pd) {
  if (pd->taken_error.load(std::memory_order_relaxed) == 0) return 0;
  return pd->taken_error.exchange(0, std::memory_order_relaxed);
}

std::int64_t poll_deadline(PollDesc* pd, PollMode mode) {
  std::lock_guard guard(pd->lock);
  return mode == PollMode::write ? pd->wd : pd->rd;
}

void netpoll_dispatch(const poll::Event* events, int n, std::int64_t now) {
  if (n <= 0) return;
  ReadyBatch batch{ReadyBatch::FromPoll{}};  // everything one poll readied, scheduled together
  // A desc found current below is not given back before this ends.
  GraceSection section;
  std::uint64_t woken = 0;
  for (int i = 0; i < n; ++i) {
    auto* pd = reinterpret_cast<PollDesc*>(events[i].token & kTokenPtrMask);
    const auto seq = static_cast<std::uint32_t>(events[i].token >> kTokenSeqShift);
    // seq_cst: the section's half of the Dekker pair in grace.cc (acquire
    // would be enough to pair with poll_open's release store).
    if ((pd->generation().load(std::memory_order_seq_cst) & 0xFFFF) != seq) continue;  // stale
    // Go's setEventErr: an error alone marks the desc; any other event
    // clears the mark again (a UDP socket's one ICMP error must not make
    // every later read skip the poller).
    const bool err_only = events[i].ready & poll::kError;
    if (err_only || events[i].error != 0 ||
        (pd->info.load(std::memory_order_acquire) & kEventErr)) {
      std::lock_guard guard(pd->lock);
      if ((pd->generation().load(std::memory_order_relaxed) & 0xFFFF) == seq) {
        pd->event_err = err_only;
        // Before the unblock below, so the waiter it wakes finds it.
        if (events[i].error != 0) pd->taken_error.store(events[i].error, std::memory_order_relaxed);
        pd->publish_info();
      }
    }
    // Before the unblock: poll_read_may_wait_first says why, and with which
    // partners.
    if (events[i].ready & poll::kHangup) {
      pd->read_asks_first.store(true, std::memory_order_seq_cst);
    }
    Fiber* r = events[i].ready & poll::kReadable ? unblock(pd, PollMode::read, true) : nullptr;
    Fiber* w = events[i].ready & poll::kWritable ? unblock(pd, PollMode::write, true) : nullptr;
    woken += static_cast<std::uint64_t>(stamp_poller_wake(r, now) + stamp_poller_wake(w, now));
    if (r) ready(r);
    if (w) ready(w);
  }
  if (woken != 0) g_poller_wakeups.fetch_add(woken, std::memory_order_relaxed);
}

}  // namespace weft::detail
