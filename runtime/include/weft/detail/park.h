// Parking: the one primitive every fiber-aware wait is built on. Sync
// primitives, channels, the poller and contexts park through this and nothing
// else, so that fibers and plain threads wait the same way.
#pragma once

#include "weft/detail/cxx20.h"

#include <cstdint>
#include <type_traits>

namespace weft::detail {

struct Fiber;
struct Worker;

// Why a fiber is parked, for dumps, metrics and deadlock reports (the texts
// follow Go's waitReason strings where Go has one). A park site passes its
// reason and, for I/O, the fd as `detail`.
enum class WaitReason : std::uint8_t {
  unknown,
  chan_send,
  chan_receive,
  chan_receive_nil,  // a default-constructed (never-signalled) done channel
  select,
  select_no_cases,
  mutex_lock,
  cond_wait,
  wait_group,
  sleep,
  io_read,
  io_write,
  blocking,
  context_done,
  // Appended, so that the values above stay what older cores and dumps hold.
  rwmutex_lock,
  rwmutex_lock_shared,
  semaphore_acquire,
};
const char* wait_reason_text(WaitReason r) noexcept;

// The caller's waiter identity: its fiber when on a fiber, otherwise a record
// owned by the calling OS thread (which then waits on a futex). Stable for as
// long as the fiber or thread lives.
Fiber* current_waiter() noexcept;

// True when the caller runs on a fiber (not on a plain thread).
bool on_fiber() noexcept;

// True when the caller is a fiber spawned with SpawnOptions::swap_idle_stack:
// what the runtime links to others while such a fiber waits on a socket
// must not live on its stack.
bool current_stack_may_be_given_back() noexcept;

// Parks the caller. Once the caller is off its stack (for a thread: before it
// sleeps), commit(waiter, arg) runs; it typically publishes the waiter and
// releases the lock that guarded the decision to wait. If commit returns
// false the caller resumes at once. Otherwise it sleeps until some other
// party calls ready(waiter) exactly once.
//
// The moment commit makes the waiter visible to a waker (stores it, or
// unlocks the queue holding it), the fiber may resume on another worker and
// reuse its stack, which holds `arg` and a park_with lambda's captures. So
// read what commit needs into locals first, and touch nothing on the parked
// fiber's stack after publishing.
using ParkCommit = bool (*)(Fiber* waiter, void* arg);
void park(ParkCommit commit, void* arg, WaitReason reason, std::uint64_t detail = 0) noexcept;

template <class F>
void park_with(WaitReason reason, F&& commit, std::uint64_t detail = 0) noexcept {
  park([](Fiber* w, void* a) -> bool { return (*static_cast<std::remove_reference_t<F>*>(a))(w); },
       &commit, reason, detail);
}

// Makes a parked waiter runnable. Any thread may call it; call it once per
// committed park. A fiber readied from a worker runs next on that worker.
void ready(Fiber* waiter) noexcept;

// Defers the ready() calls this thread makes while it lives and schedules
// those fibers together when it ends, as Go's injectglist: one pass into the
// run queues and one wake-up of an idle worker, instead of a runnext swap, a
// run-queue push and a wake check per fiber (a cancel reaching 10k parked
// fibers, a poll returning many events). Nests: only the outermost flushes.
// Nothing in its scope may park or yield. Threads waiting (not fibers) are
// still woken at once.
//
// A long batch goes out in slices of kSlice, so that idle workers can start
// on the first fibers while the rest are still being readied: a plain batch
// hands a slice out inside the ready() that fills it. A stepped batch is for
// a walk that readies fibers while it holds what they take first when they
// run (a cancel: the node's lock, the parent's release of the node): there
// a fiber handed out mid-step spins on another worker until the step ends.
// Its slices go out only at step_done(), between steps; a stepped batch
// nested in another is one of its steps. Each step a walk ends on a worker
// is the watchdog's sign that it is scheduling, not computing (sysmon.cc):
// a walk's slices alone can be over 10 ms apart where its steps are slow
// (a TSan build's were, at 90 us a child).
class ReadyBatch {
 public:
  struct Stepped {};
  // What a poll found ready: a short batch stays with the worker that
  // polled (the runtime's idle.h, invariant 7).
  struct FromPoll {};
  static constexpr unsigned kSlice = 128;
  ReadyBatch() noexcept;
  explicit ReadyBatch(Stepped) noexcept;
  explicit ReadyBatch(FromPoll) noexcept;
  ~ReadyBatch();
  ReadyBatch(const ReadyBatch&) = delete;
  ReadyBatch& operator=(const ReadyBatch&) = delete;

  // A step of a stepped walk has ended: hands out what fills a slice.
  void step_done() noexcept;

 private:
  friend void ready(Fiber* waiter) noexcept;
  void flush() noexcept;
  bool owner_ = false;
  bool stepped_ = false;
  bool from_poll_ = false;
  // A stepped owner's worker, null on a thread or in a plain batch. The
  // owner cannot move: nothing in the batch's scope parks or yields.
  Worker* worker_ = nullptr;
  Fiber* head_ = nullptr;
  Fiber* tail_ = nullptr;
  unsigned count_ = 0;
};

// Id of a waiter: a fiber's id, or 0 for a thread.
std::uint64_t waiter_id(const Fiber* waiter) noexcept;

}  // namespace weft::detail
