// Building blocks of the sync primitives: a one-shot waiter that parks a
// fiber (or thread) until woken, and the intrusive queue of channel waiters
// that plain operations and select share.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "weft/detail/park.h"

namespace weft::detail {

// Park until wake(), which may come before the park: a one-shot event.
class Waiter {
 public:
  void wait(WaitReason reason) noexcept {
    if (state_.load(std::memory_order_acquire) == kWoken) return;
    park_with(reason, [this](Fiber*) {
      std::atomic<std::uint32_t>& state = state_;
      std::uint32_t idle = kIdle;
      // Fails when wake() came first: then don't sleep.
      return state.compare_exchange_strong(idle, kParked, std::memory_order_acq_rel);
    });
  }
  // Exactly once. The waiter may return (and its frame vanish) as soon as
  // this publishes, so nothing here touches *this afterwards.
  void wake() noexcept {
    Fiber* f = fiber_;
    if (state_.exchange(kWoken, std::memory_order_acq_rel) == kParked) ready(f);
  }

 private:
  static constexpr std::uint32_t kIdle = 0, kParked = 1, kWoken = 2;
  Fiber* const fiber_ = current_waiter();
  std::atomic<std::uint32_t> state_{kIdle};
};

// One select call's shared state: the first case to complete claims it.
struct SelectGroup {
  std::atomic<int> winner{-1};
  Waiter waiter;
};

// A parked channel operation, linked into a channel's send or receive queue.
struct ChanWaiter {
  ChanWaiter* prev = nullptr;
  ChanWaiter* next = nullptr;
  bool queued = false;
  // A plain send/recv parks with the channel lock released by its park
  // commit, so a waker (who needs that lock) always finds it parked and
  // readies `fiber` directly. A select parks on its group's waiter instead.
  Fiber* fiber = nullptr;
  SelectGroup* group = nullptr;
  int case_index = 0;
  void* value = nullptr;  // send: the T to move from; recv: the std::optional<T> to fill
  bool ok = false;        // set by the completer: delivered / received (false: closed)

  // Makes the completed operation's owner runnable (after the channel lock
  // is released). Nothing touches the waiter afterwards.
  void wake() noexcept {
    if (group) {
      group->waiter.wake();
    } else {
      ready(fiber);
    }
  }

  // Only the first completer of a select wins; a plain op is always won.
  bool claim() noexcept {
    if (!group) return true;
    int none = -1;
    return group->winner.compare_exchange_strong(none, case_index, std::memory_order_acq_rel);
  }
};

// FIFO of ChanWaiters, under the owning channel's lock.
class ChanWaitQueue {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept {
    std::size_t n = 0;
    for (ChanWaiter* w = head_; w; w = w->next) ++n;
    return n;
  }
  void push_back(ChanWaiter* w) noexcept {
    w->prev = tail_;
    w->next = nullptr;
    if (tail_) {
      tail_->next = w;
    } else {
      head_ = w;
    }
    tail_ = w;
    w->queued = true;
  }
  void remove(ChanWaiter* w) noexcept {
    if (!w->queued) return;
    (w->prev ? w->prev->next : head_) = w->next;
    (w->next ? w->next->prev : tail_) = w->prev;
    w->prev = w->next = nullptr;
    w->queued = false;
  }
  // The first waiter this caller wins; select waiters already won through
  // another channel are dropped on the way.
  ChanWaiter* pop_claimed() noexcept {
    while (ChanWaiter* w = head_) {
      remove(w);
      if (w->claim()) return w;
    }
    return nullptr;
  }
  // True if some waiter could still be claimed (for select's readiness check).
  bool has_claimable() const noexcept {
    for (ChanWaiter* w = head_; w; w = w->next) {
      if (!w->group || w->group->winner.load(std::memory_order_acquire) < 0) return true;
    }
    return false;
  }

 private:
  ChanWaiter* head_ = nullptr;
  ChanWaiter* tail_ = nullptr;
};

}  // namespace weft::detail
