// Fiber-aware Mutex, RWMutex, CondVar, WaitGroup and Once with Go's
// semantics. Waiting parks the fiber, never the worker thread; plain threads
// may use them too.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <type_traits>

#include "weft/detail/spinlock.h"
#include "weft/detail/wait_queue.h"

namespace weft {

namespace detail {
// FIFO of plain waiters (Mutex, CondVar, WaitGroup), under the owner's lock.
struct QueuedWaiter {
  Waiter waiter;
  QueuedWaiter* next = nullptr;
  bool handed = false;  // Mutex: ownership passed straight to this waiter
};
class WaiterList {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  void push_back(QueuedWaiter* w) noexcept {
    w->next = nullptr;
    (tail_ ? tail_->next : head_) = w;
    tail_ = w;
  }
  void push_front(QueuedWaiter* w) noexcept {
    w->next = head_;
    head_ = w;
    if (!tail_) tail_ = w;
  }
  QueuedWaiter* pop_front() noexcept {
    QueuedWaiter* w = head_;
    if (w) {
      head_ = w->next;
      if (!head_) tail_ = nullptr;
    }
    return w;
  }
  QueuedWaiter* take_all() noexcept {
    QueuedWaiter* w = head_;
    head_ = tail_ = nullptr;
    return w;
  }

 private:
  QueuedWaiter* head_ = nullptr;
  QueuedWaiter* tail_ = nullptr;
};
// Wakes a chain taken with take_all (the next link is read before each wake).
void wake_all(QueuedWaiter* chain) noexcept;

// A counting semaphore for waits inside the primitives (Go's runtime
// semaphore): a release may come before the acquire it is meant for, and is
// then kept as a permit. release() touches nothing of *this after its last
// store, so the owner may be destroyed once the released party returns.
class Sema {
 public:
  void acquire(WaitReason reason) noexcept;
  void release(std::uint32_t count) noexcept;

 private:
  SpinLock lock_;
  std::uint32_t permits_ = 0;  // under lock_
  WaiterList queue_;           // under lock_
};
}  // namespace detail

class Mutex;
namespace detail {
bool mutex_has_waiters(const Mutex& m) noexcept;
}  // namespace detail

// Go's sync.Mutex: an uncontended lock or unlock is one CAS. Under
// contention a running fiber may take the lock ahead of a woken waiter (that
// keeps throughput), until some waiter has waited over 1 ms; from then on
// unlock hands the lock straight to the queue (no starvation).
class Mutex {
 public:
  Mutex() = default;
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;

  void lock() {
    std::uint32_t unlocked = 0;
    if (!state_.compare_exchange_strong(unlocked, kLocked, std::memory_order_acquire)) lock_slow();
  }
  bool try_lock() noexcept {
    std::uint32_t s = state_.load(std::memory_order_relaxed);
    while (!(s & (kLocked | kHandoff | kQueueLock))) {
      if (state_.compare_exchange_weak(s, s | kLocked, std::memory_order_acquire)) return true;
    }
    return false;
  }
  void unlock() {
    std::uint32_t locked = kLocked;
    if (!state_.compare_exchange_strong(locked, 0, std::memory_order_release)) unlock_slow();
  }

 private:
  // One word, so that releasing the queue and publishing the new state is a
  // single store: the last access, after which the mutex may be destroyed.
  static constexpr std::uint32_t kLocked = 1, kWaiters = 2, kHandoff = 4, kQueueLock = 8;
  std::uint32_t lock_queue() noexcept;  // returns the state, queue lock held
  void lock_slow();
  void unlock_slow();

  std::atomic<std::uint32_t> state_{0};
  detail::WaiterList queue_;  // under kQueueLock

  friend bool detail::mutex_has_waiters(const Mutex&) noexcept;
};

namespace detail {
// Whether fibers or threads are queued on `m`: for tests that must know a
// lock() reached the queue (a snapshot; relaxed).
inline bool mutex_has_waiters(const Mutex& m) noexcept {
  return (m.state_.load(std::memory_order_relaxed) & Mutex::kWaiters) != 0;
}
}  // namespace detail

// Go's sync.RWMutex, usable with std::unique_lock and std::shared_lock.
// Many readers or one writer. A writer that asks first shuts the door on
// readers that come after it (they queue until it is done), so a stream of
// overlapping readers cannot starve writers; readers already in finish
// first. As in Go, a reader must not lock_shared() again while it holds the
// lock: a writer queued in between would deadlock both. An uncontended
// reader costs one atomic add each way; writers also take a Mutex, which
// orders them among themselves. Unlike Mutex, unlock() still touches the
// mutex after it lets readers in (it then releases the writers' Mutex), so
// a reader must not destroy it on the strength of what the writer wrote.
class RWMutex {
 public:
  RWMutex() = default;
  RWMutex(const RWMutex&) = delete;
  RWMutex& operator=(const RWMutex&) = delete;

  void lock();
  bool try_lock() noexcept;
  void unlock();

  void lock_shared() {
    // acquire: pairs with the release add in unlock(), so a reader that gets
    // in sees what the last writer wrote.
    if (readers_.fetch_add(1, std::memory_order_acquire) + 1 < 0) {
      reader_wait_.acquire(detail::WaitReason::rwmutex_lock_shared);
    }
  }
  bool try_lock_shared() noexcept;
  void unlock_shared() {
    // release: pairs with the acquire subtraction in lock(), so a writer that
    // finds no reader left sees what the readers did.
    const std::int32_t now = readers_.fetch_sub(1, std::memory_order_release) - 1;
    if (now < 0) unlock_shared_slow(now);
  }

 private:
  // Subtracted from readers_ by a writer: the count goes negative, which
  // sends new readers to reader_wait_, and still says how many are in.
  static constexpr std::int32_t kWriterPending = std::int32_t{1} << 30;
  void unlock_shared_slow(std::int32_t now);

  Mutex writers_;  // one writer at a time goes past here
  // Readers in or waiting, less kWriterPending while a writer holds or
  // waits for the lock.
  std::atomic<std::int32_t> readers_{0};
  // Readers the pending writer still waits for: those that were in when it
  // arrived; each leaving one counts down, the last wakes the writer.
  std::atomic<std::int32_t> departing_{0};
  detail::Sema writer_wait_;
  detail::Sema reader_wait_;
};

// Go's sync.Once: call(fn) runs fn the first time it is called and never
// again; calls that come while fn runs wait until it has returned, so every
// call returns after fn's effects. Unlike Go (where a panicking fn counts as
// done), an exception from fn propagates and leaves the Once not done, as
// std::call_once does: the next call, or one already waiting, runs its own
// fn. That makes a failed initialisation retryable instead of leaving what
// it guards half built for good.
class Once {
 public:
  Once() = default;
  Once(const Once&) = delete;
  Once& operator=(const Once&) = delete;

  template <class F>
  void call(F&& fn) {
    // acquire: pairs with the release store after fn in call_slow, so a
    // caller that sees done sees what fn did.
    if (done_.load(std::memory_order_acquire)) return;
    call_slow([](void* f) { (*static_cast<std::remove_reference_t<F>*>(f))(); },
              const_cast<void*>(static_cast<const void*>(std::addressof(fn))));
  }

 private:
  void call_slow(void (*invoke)(void*), void* fn);

  std::atomic<bool> done_{false};
  Mutex running_;  // held while fn runs: later callers wait on it
};

// Go's sync.Cond, used with std::unique_lock<weft::Mutex>.
class CondVar {
 public:
  template <class Lock>
  void wait(Lock& lock) {
    detail::QueuedWaiter w;
    {
      std::lock_guard guard(queue_lock_);
      queue_.push_back(&w);
    }
    lock.unlock();
    w.waiter.wait(detail::WaitReason::cond_wait);  // a notify between unlock and here is not lost
    lock.lock();
  }
  template <class Lock, class Pred>
  void wait(Lock& lock, Pred pred) {
    while (!pred()) wait(lock);
  }
  void notify_one() noexcept;
  void notify_all() noexcept;

 private:
  detail::SpinLock queue_lock_;
  detail::WaiterList queue_;
};

namespace detail {
struct WaitShards;
struct WaitGroupProbe;  // tests' view of the sharding
}  // namespace detail

// Go's sync.WaitGroup. As in Go, the counter and the number of waiters
// share one word: done() touches nothing else unless someone waits, and a
// counted waiter only leaves with a permit from the done() that released it,
// so wait() may return and the group be destroyed while done() returns.
//
// A group that fibers on different workers keep adding to and finishing
// while nobody waits (one fiber spawning thousands that each call done())
// switches to one counter per worker: that word, written from two cores per
// fiber, costs a cache-line transfer each time (50-150 ns here), more than
// the spawn itself. The first wait() folds the per-worker counters back into
// the word; the group then stays as Go's. A counter that went negative in
// between is reported by that wait(), or by the destructor.
class WaitGroup {
 public:
  WaitGroup() = default;
  ~WaitGroup();
  WaitGroup(const WaitGroup&) = delete;
  WaitGroup& operator=(const WaitGroup&) = delete;

  // A counter that would go negative is a bug: reported, then abort.
  void add(int delta = 1);
  void done() { add(-1); }
  void wait();

 private:
  friend struct detail::WaitGroupProbe;
  void add_to_word(int delta);
  void note_worker();
  bool start_sharding();
  void fold_shards();

  std::atomic<std::uint64_t> state_{0};  // counter << 32 | sharded bit | waiters
  std::atomic<detail::WaitShards*> shards_{nullptr};
  // Which worker touched the word last (a loose hint: plain loads and
  // stores) and how often that changed: the cue to shard.
  std::atomic<std::int32_t> last_worker_{-1};
  std::atomic<std::uint32_t> handoffs_{0};
  detail::SpinLock queue_lock_;
  std::uint32_t permits_ = 0;  // under queue_lock_
  detail::WaiterList queue_;
};

}  // namespace weft
