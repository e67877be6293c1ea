// Go's select over channel sends and receives, with an optional default:
//
//   weft::select(weft::on_recv(jobs, [](std::optional<Job> j) { ... }),
//                weft::on_send(results, r, [](bool sent) { ... }),
//                weft::on_default([] { ... }));
//
// Returns the index of the case that ran. Among ready cases one is chosen
// uniformly at random; without a default, the caller parks until one is.
#pragma once

#include <optional>
#include <type_traits>
#include <utility>

#include "weft/channel.h"

namespace weft {

namespace detail {

// One select case. Anything that can complete a parked select (channels,
// a context's done(), an After) implements this.
class SelectCase {
 public:
  virtual ~SelectCase() = default;
  // Lock identity (ordering, and cases sharing a lock); null for default.
  virtual const void* lock_key() const = 0;
  virtual void lock() = 0;
  virtual void unlock() = 0;
  // Under lock: complete now if possible. -1: would block; else the `ok`
  // to run with. A peer to wake (after unlock) goes to *to_wake.
  virtual int try_complete(ChanWaiter** to_wake) = 0;
  virtual void enqueue(ChanWaiter* w) = 0;  // under lock
  virtual void dequeue(ChanWaiter* w) = 0;  // under lock
  virtual void* value_slot() = 0;           // what a completing peer reads or fills
  virtual void run(bool ok) = 0;            // the handler, after unlocking
};

int select_cases(SelectCase* const* cases, int n);

template <class T, class F>
class RecvCase final : public SelectCase {
  static_assert(std::is_invocable_v<F&, std::optional<T>>,
                "weft::on_recv: the handler must be callable as f(std::optional<T>), T being the "
                "channel's value type (nullopt once the channel is closed and drained), e.g. "
                "[](std::optional<int> v) { ... } or [](auto v) { ... }");

 public:
  RecvCase(ChanState<T>* s, F fn) : s_(s), fn_(std::move(fn)) {}
  const void* lock_key() const override { return s_; }
  void lock() override { s_->lock.lock(); }
  void unlock() override { s_->lock.unlock(); }
  int try_complete(ChanWaiter** to_wake) override {
    const ChanTry r = s_->try_recv(slot_, to_wake);
    return r == ChanTry::would_block ? -1 : r == ChanTry::done;
  }
  void enqueue(ChanWaiter* w) override { s_->recvq.push_back(w); }
  void dequeue(ChanWaiter* w) override { s_->recvq.remove(w); }
  void* value_slot() override { return &slot_; }
  void run(bool) override {
    // Guarded so that a wrong handler fails with the message above only.
    if constexpr (std::is_invocable_v<F&, std::optional<T>>) fn_(std::move(slot_));
  }

 private:
  ChanState<T>* s_;
  F fn_;
  std::optional<T> slot_;
};

template <class T, class F>
class SendCase final : public SelectCase {
  static_assert(std::is_invocable_v<F&, bool>,
                "weft::on_send: the handler must be callable as f(bool): true once the value was "
                "delivered, false if the channel is closed; e.g. [](bool sent) { ... }");

 public:
  SendCase(ChanState<T>* s, T value, F fn) : s_(s), value_(std::move(value)), fn_(std::move(fn)) {}
  const void* lock_key() const override { return s_; }
  void lock() override { s_->lock.lock(); }
  void unlock() override { s_->lock.unlock(); }
  int try_complete(ChanWaiter** to_wake) override {
    const ChanTry r = s_->try_send(value_, to_wake);
    return r == ChanTry::would_block ? -1 : r == ChanTry::done;
  }
  void enqueue(ChanWaiter* w) override { s_->sendq.push_back(w); }
  void dequeue(ChanWaiter* w) override { s_->sendq.remove(w); }
  void* value_slot() override { return &value_; }
  void run(bool sent) override {
    if constexpr (std::is_invocable_v<F&, bool>) fn_(sent);
  }

 private:
  ChanState<T>* s_;
  T value_;
  F fn_;
};

template <class F>
class DefaultCase final : public SelectCase {
  static_assert(std::is_invocable_v<F&>,
                "weft::on_default: the handler must be callable as f(), e.g. [] { ... }");

 public:
  explicit DefaultCase(F fn) : fn_(std::move(fn)) {}
  const void* lock_key() const override { return nullptr; }
  void lock() override {}
  void unlock() override {}
  int try_complete(ChanWaiter**) override { return -1; }
  void enqueue(ChanWaiter*) override {}
  void dequeue(ChanWaiter*) override {}
  void* value_slot() override { return nullptr; }
  void run(bool) override {
    if constexpr (std::is_invocable_v<F&>) fn_();
  }

 private:
  F fn_;
};

}  // namespace detail

// Receives from ch; fn gets the value, or nullopt if ch is closed and drained.
template <class T, class F>
auto on_recv(const Channel<T>& ch, F fn) {
  return detail::RecvCase<T, F>(ch.state(), std::move(fn));
}

// Sends value on ch; fn(true) once delivered, fn(false) if ch is closed.
// T comes from ch alone, so `on_send(longs, 1, ...)` converts as a send does.
template <class T, class F>
auto on_send(const Channel<T>& ch, std::type_identity_t<T> value, F fn) {
  return detail::SendCase<T, F>(ch.state(), std::move(value), std::move(fn));
}

// Runs when no other case is ready; makes select never park.
template <class F>
auto on_default(F fn) {
  return detail::DefaultCase<F>(std::move(fn));
}

template <class... Cases>
int select(Cases&&... cases) {
  detail::SelectCase* const all[] = {&cases...};
  return detail::select_cases(all, static_cast<int>(sizeof...(Cases)));
}

}  // namespace weft
