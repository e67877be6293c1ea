// A weighted semaphore, as golang.org/x/sync/semaphore: bound how much of a
// resource (memory, connections, work in flight) fibers and threads take at
// once, each taking as much as it needs.
//
//   weft::Semaphore memory(64 << 20);
//   if (auto ec = memory.acquire(ctx, request_bytes)) return ec;  // ctx done
//   ...
//   memory.release(request_bytes);
#pragma once

#include <cstdint>
#include <system_error>

#include "weft/context.h"
#include "weft/detail/spinlock.h"

namespace weft {

namespace detail {
struct SemaphoreWaiter;
}

// Waiters are served strictly in arrival order: a release wakes the waiters
// at the front of the queue for as long as each fits, and stops at the first
// that does not, even if a smaller request behind it would fit. So a large
// request is never starved by a stream of small ones, as in Go; the price is
// that the small ones wait behind it. try_acquire does not jump the queue
// either: it fails while anyone waits.
class Semaphore {
 public:
  // The total weight it holds at once; negative counts as zero.
  explicit Semaphore(std::int64_t size) noexcept;
  Semaphore(const Semaphore&) = delete;
  Semaphore& operator=(const Semaphore&) = delete;

  // Takes n, parking the caller until it is free and every earlier waiter
  // has been served. Empty on success. errc::exceeds_semaphore_size, at once
  // and taking nothing, when n is more than the size: such a request could
  // never be served, and Go's choice of blocking until the context ends
  // turns a sizing bug into a hang (or, with no context, a deadlock) far
  // from its cause. A negative n is a bug: reported, then abort.
  std::error_code acquire(std::int64_t n = 1);
  // The same, giving up with ctx's error (err(), not the cause) if ctx is
  // done first. A done ctx always wins, as in Go: it fails even when the
  // weight is free, and weight granted as ctx ends is given back.
  std::error_code acquire(const Context& ctx, std::int64_t n = 1);
  // Takes n only if it is free now and nobody waits; never parks.
  bool try_acquire(std::int64_t n = 1) noexcept;
  // Gives back n taken before (by any caller: ownership is not tracked).
  // Giving back more than is held is a bug: reported, then abort.
  void release(std::int64_t n = 1) noexcept;

 private:
  // Under lock_: takes n if it is free and nobody is queued.
  bool take_locked(std::int64_t n) noexcept;
  // Under lock_: grants weight to the queue's head while each one fits, and
  // returns them, unlinked, to be woken once the lock is released.
  detail::SemaphoreWaiter* grant_locked() noexcept;
  std::error_code wait(const Context* ctx, std::int64_t n);
  static void on_done(void* waiter) noexcept;

  detail::SpinLock lock_;
  const std::int64_t size_;
  std::int64_t held_ = 0;                    // under lock_
  detail::SemaphoreWaiter* head_ = nullptr;  // under lock_; FIFO
  detail::SemaphoreWaiter* tail_ = nullptr;  // under lock_
};

}  // namespace weft
