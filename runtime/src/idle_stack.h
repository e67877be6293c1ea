// Idle stacks: the pages of a fiber's stack go back to the kernel while it
// waits on a socket for long (SpawnOptions::swap_idle_stack), and come back
// before it runs. An idle connection is otherwise a page of stack (its
// frames touch the top one) for as long as it stays idle.
//
// The used part, from the saved stack pointer to the top (often under
// 2 KiB), is copied aside; the pages of the whole stack go (MADV_DONTNEED);
// the fiber's first run after that copies the part back at the same
// addresses, so every pointer into the stack holds again once it runs. While
// the pages are gone nobody may use such a pointer, which is what the
// fiber's owner promises by opting in, and what the runtime keeps for its
// own waits on a socket: the slot, the deadline timers and the op's cancel
// live in the PollDesc, and a context-bound op's hook on the heap
// (context_io.cc).
//
// Who does what:
// - The park's commit (netpoll.cc, block) notes the slot and the time, in
//   the IdleStack after the record, before it publishes the fiber there.
// - sysmon's sweep (give_back_idle_stacks) takes a fiber parked long enough
//   off its slot, as a commit not yet published (netpoll_hold_parked: a
//   waker meanwhile leaves its news in the slot), gives the stack back, and
//   puts the fiber back, or readies it if a waker came.
// - Worker::enter copies the part back (take_back_stack) before it
//   switches to a fiber whose record says Stack::given_back; a ready fiber
//   reaches a worker only through a queue, after the sweep's writes.
// - A dump walks a parked fiber's stack on that stack: it holds
//   IdleStackDumpLock, which a give-back holds too, and takes back any
//   given-back stack it walks. At the runtime's end an abandoned fiber's
//   stack comes back too (its heap pointers are LeakSanitizer roots there).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "fiber.h"

namespace weft::detail {

struct IdleStack {
  // The socket slot its fiber last committed a park to, and when (the
  // commit writes both before it publishes the fiber there). Stale once it
  // woke: the sweep acts only while the slot still holds the fiber. Cleared
  // by the sweep once it gave the stack back, so that it looks no further.
  std::atomic<std::atomic<std::uintptr_t>*> slot{nullptr};
  std::atomic<std::uint32_t> since_ms{0};
  std::uint32_t index = 0;  // in the sweep's list, under its lock
  // While the stack is given back: its used part, [sp, hi).
  char* saved = nullptr;
};

// The IdleStack of a fiber spawned with swap_idle_stack (new_fiber puts it
// right after the record).
inline IdleStack* idle_stack_of(Fiber* f) noexcept {
  static_assert(sizeof(Fiber) % alignof(IdleStack) == 0);
  return reinterpret_cast<IdleStack*>(reinterpret_cast<char*>(f) + sizeof(Fiber));
}

// Such a fiber joins the sweep's list when it first takes a stack
// (Worker::prepare) and leaves it when it ends or is abandoned.
void remember_idle_stack(Fiber* f);
void forget_idle_stack(Fiber* f);

// The commit of a park on a socket slot (netpoll.cc).
inline void note_socket_wait(Fiber* f, std::atomic<std::uintptr_t>* slot) {
  IdleStack* s = idle_stack_of(f);
  // relaxed: the commit's publication of f in the slot (acq_rel) orders
  // both before the sweep's acquire load that finds f there.
  s->since_ms.store(f->parked_since_ms, std::memory_order_relaxed);
  s->slot.store(slot, std::memory_order_relaxed);
}

// sysmon's sweep: gives back the stacks of at most `max` fibers parked on a
// socket for at least idle_stack_after_ms(). Callable from any thread.
// Returns how many.
std::size_t give_back_idle_stacks(std::uint32_t now_ms, std::size_t max);

// Copies a given-back stack's used part back (the fiber is the caller's:
// about to run, or the world is stopped, or the runtime is gone).
void take_back_stack(Fiber* f);

// WEFT_IDLE_STACK_MS, or what a test set (0: any parked fiber's).
std::uint32_t idle_stack_after_ms();
void set_idle_stack_after_ms(std::uint32_t ms);  // for tests

struct IdleStackStats {
  std::uint64_t given_back;   // ever
  std::uint64_t taken_back;   // ever
  std::uint64_t saved_bytes;  // held aside now
  std::size_t fibers;         // in the sweep's list now
};
IdleStackStats idle_stack_stats();

// Held by a dump while it walks parked stacks, and by each give-back.
class IdleStackDumpLock {
 public:
  IdleStackDumpLock() noexcept;  // tries for a while: a dump may run anywhere
  ~IdleStackDumpLock();
  bool held() const noexcept { return held_; }
  IdleStackDumpLock(const IdleStackDumpLock&) = delete;
  IdleStackDumpLock& operator=(const IdleStackDumpLock&) = delete;

 private:
  bool held_ = false;
};

}  // namespace weft::detail
