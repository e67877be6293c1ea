// Go's channels: unbuffered (rendezvous) or buffered, closable, FIFO for
// waiters, with a parked receiver getting the value straight from the sender.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "weft/detail/coop.h"
#include "weft/detail/spinlock.h"
#include "weft/detail/wait_queue.h"

namespace weft {

namespace detail {

enum class ChanTry { done, closed, would_block };

// What a channel may carry: values that move without throwing. Values move
// under the channel's lock into a peer already taken off its queue, and a
// select peer's claim cannot be undone (its other channels may have dropped
// its other cases since), so a throwing move would leave the peer stranded
// and its value half-delivered. Go's channels copy bits, which cannot fail.
template <class T>
inline constexpr bool channel_value =
    std::is_nothrow_move_constructible_v<T>&& std::is_nothrow_move_assignable_v<T>;

template <class T>
struct ChanState {
  explicit ChanState(std::size_t cap) : capacity(cap), buf(cap) {}

  SpinLock lock;
  const std::size_t capacity;
  std::vector<std::optional<T>> buf;  // ring of `capacity` slots
  std::size_t head = 0;
  std::size_t count = 0;
  bool closed = false;
  ChanWaitQueue sendq;
  ChanWaitQueue recvq;

  // Under lock. On success a parked peer may need waking (after unlock).
  ChanTry try_send(T& v, ChanWaiter** to_wake) {
    if (closed) return ChanTry::closed;
    if (ChanWaiter* r = recvq.pop_claimed()) {
      *static_cast<std::optional<T>*>(r->value) = std::move(v);
      r->ok = true;
      *to_wake = r;
      return ChanTry::done;
    }
    if (count < capacity) {
      buf[(head + count) % capacity] = std::move(v);
      ++count;
      return ChanTry::done;
    }
    return ChanTry::would_block;
  }

  ChanTry try_recv(std::optional<T>& out, ChanWaiter** to_wake) {
    if (ChanWaiter* s = sendq.pop_claimed()) {
      T& sent = *static_cast<T*>(s->value);
      if (capacity == 0) {
        out = std::move(sent);
      } else {
        // Full buffer: take its head, the sender's value becomes the tail.
        out = std::move(buf[head]);
        buf[head] = std::move(sent);
        head = (head + 1) % capacity;
      }
      s->ok = true;
      *to_wake = s;
      return ChanTry::done;
    }
    if (count > 0) {
      out = std::move(buf[head]);
      buf[head].reset();
      head = (head + 1) % capacity;
      --count;
      return ChanTry::done;
    }
    if (closed) return ChanTry::closed;
    return ChanTry::would_block;
  }

  bool ready_to_send() const { return closed || recvq.has_claimable() || count < capacity; }
};

inline void wake_peer(ChanWaiter* w) {
  if (w) w->wake();
}

// After an operation that completed without parking: a handoff wakes its
// peer; one that only touched the buffer (or found the channel closed) is
// charged to the cooperative budget (coop.h). A handoff is not charged: a
// loop of them runs out of parked peers unless another worker runs and
// re-parks them, and ping-pong, all handoffs, then pays no call for it.
inline void charge_or_wake(ChanWaiter* peer) {
  if (peer) {
    peer->wake();
  } else {
    coop_spend(kCoopChannelOp);
  }
}

// Parks a plain channel operation already queued under `lock`; the lock is
// released once the caller is off its stack (Go's chanparkcommit).
inline void park_on_channel(ChanWaiter* me, SpinLock* lock, WaitReason reason) {
  park_with(reason, [me, lock](Fiber* self) {
    me->fiber = self;  // still ours: nobody can reach `me` before the unlock
    lock->unlock();
    return true;
  });
}

}  // namespace detail

template <class T>
class Channel {
  static_assert(detail::channel_value<T>,
                "weft::Channel<T> needs a T whose move constructor and move assignment are "
                "noexcept: a value moves under the channel's lock into a peer already claimed, "
                "which a throwing move would strand. Send a std::unique_ptr<T> instead.");

 public:
  explicit Channel(std::size_t capacity = 0)
      : state_(std::make_shared<detail::ChanState<T>>(capacity)) {}

  // Blocks until a receiver takes the value (or it fits in the buffer).
  // False if the channel is, or gets, closed: the value is dropped (Go panics),
  // hence [[nodiscard]]: cast to void only where a closed channel is expected.
  [[nodiscard]] bool send(T value) {
    auto& s = *state_;
    detail::ChanWaiter* peer = nullptr;
    s.lock.lock();
    const detail::ChanTry result = s.try_send(value, &peer);
    if (result != detail::ChanTry::would_block) {
      s.lock.unlock();
      detail::charge_or_wake(peer);
      return result == detail::ChanTry::done;
    }
    detail::ChanWaiter me;
    me.value = &value;
    s.sendq.push_back(&me);
    detail::park_on_channel(&me, &s.lock, detail::WaitReason::chan_send);
    return me.ok;
  }

  // Blocks until a value arrives; nullopt once closed and drained. Receiving
  // is const, as in a select case, so that a `const Channel&` (Ticker::chan())
  // is receive-only, as Go's `<-chan T`: copying the handle is the way to send.
  std::optional<T> recv() const {
    auto& s = *state_;
    std::optional<T> out;
    detail::ChanWaiter* peer = nullptr;
    s.lock.lock();
    const detail::ChanTry result = s.try_recv(out, &peer);
    if (result != detail::ChanTry::would_block) {
      s.lock.unlock();
      detail::charge_or_wake(peer);
      return out;
    }
    detail::ChanWaiter me;
    me.value = &out;
    s.recvq.push_back(&me);
    detail::park_on_channel(&me, &s.lock, detail::WaitReason::chan_receive);
    return out;
  }

  // Non-blocking: true if the value was sent (a receiver was waiting, or it
  // fit in the buffer); false if it would block or the channel is closed.
  // `value` is moved from only when sent, so on false the caller still has
  // it, rvalue or not (a move-only value can be kept or retried).
  [[nodiscard]] bool try_send(T& value) {
    auto& s = *state_;
    detail::ChanWaiter* peer = nullptr;
    s.lock.lock();
    const detail::ChanTry result = s.try_send(value, &peer);
    s.lock.unlock();
    detail::wake_peer(peer);
    return result == detail::ChanTry::done;
  }
  [[nodiscard]] bool try_send(T&& value) { return try_send(static_cast<T&>(value)); }
  [[nodiscard]] bool try_send(const T& value) requires std::is_copy_constructible_v<T> {
    T copy(value);
    return try_send(copy);
  }

  // Non-blocking: a value if one is ready, else nullopt (see closed()).
  std::optional<T> try_recv() const {
    auto& s = *state_;
    std::optional<T> out;
    detail::ChanWaiter* peer = nullptr;
    s.lock.lock();
    s.try_recv(out, &peer);
    s.lock.unlock();
    detail::wake_peer(peer);
    return out;
  }

  // Wakes every parked receiver (nullopt) and sender (false). Values already
  // buffered can still be received. False if it was already closed.
  bool close() {
    auto& s = *state_;
    detail::ChanWaiter* chain = nullptr;
    {
      std::lock_guard guard(s.lock);
      if (s.closed) return false;
      s.closed = true;
      for (detail::ChanWaitQueue* q : {&s.recvq, &s.sendq}) {
        while (detail::ChanWaiter* w = q->pop_claimed()) {
          w->ok = false;
          w->next = chain;
          chain = w;
        }
      }
    }
    while (chain) {
      detail::ChanWaiter* next = chain->next;
      chain->wake();
      chain = next;
    }
    return true;
  }

  bool closed() const {
    std::lock_guard guard(state_->lock);
    return state_->closed;
  }
  std::size_t size() const {
    std::lock_guard guard(state_->lock);
    return state_->count;
  }
  std::size_t capacity() const { return state_->capacity; }

  detail::ChanState<T>* state() const { return state_.get(); }

 private:
  std::shared_ptr<detail::ChanState<T>> state_;
};

}  // namespace weft
