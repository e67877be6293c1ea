// Sleeping and timers on the runtime's deadline heap. Waits are nanosecond
// resolution: a 100 us sleep wakes near 100 us, never early.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "weft/channel.h"
#include "weft/detail/spinlock.h"
#include "weft/detail/timer_node.h"
#include "weft/select.h"

namespace weft {

// Parks the calling fiber for at least `d` (a plain thread just sleeps). A
// time too far away to represent is never reached: the caller parks for good,
// as Go's time.Sleep with a huge duration.
void sleep_for(std::chrono::nanoseconds d);
void sleep_until(std::chrono::steady_clock::time_point t);

// steady_clock as of the kernel's last tick (Linux's CLOCK_MONOTONIC_COARSE;
// Seastar's lowres_clock and nginx's cached time serve the same end): never
// ahead of steady_clock::now(), behind it by up to a tick (1 to 10 ms), at
// a fifth of its cost. For timeouts of seconds set per request, where a
// read of the full clock is a measurable share of the request: a deadline
// counted from it comes up to a tick early. Where the system has no such
// clock, steady_clock::now().
std::chrono::steady_clock::time_point coarse_now() noexcept;

// Go's time.AfterFunc: once armed, runs fn in a new fiber when it expires.
// Safe for concurrent use, as Go 1.23's timers: stop, reset and the
// destructor may be called from any fiber or thread, alongside each other
// and the expiry.
class Timer {
 public:
  explicit Timer(std::function<void()> fn) : fn_(std::move(fn)) {
    node_.fire = &Timer::on_fire;
    node_.context = this;
  }
  Timer(std::chrono::nanoseconds d, std::function<void()> fn) : Timer(std::move(fn)) { reset(d); }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;
  // Stops the timer and waits for every expiry in progress to finish
  // starting fn (fn runs in a fiber of its own, and is not waited for).
  ~Timer();

  // Re-arms to expire `d` from now (never, if that is past the clock's range);
  // true if it was armed (and did not fire).
  bool reset(std::chrono::nanoseconds d);
  // Disarms; true only if this call prevented fn from running.
  bool stop();

 private:
  static void on_fire(void* self, std::uint64_t);
  detail::SpinLock mu_;  // serialises reset against reset and destruction
  detail::TimerNode node_;
  std::function<void()> fn_;
};

namespace detail {

// A timer that delivers on a channel of capacity 1, the engine under Ticker
// and after() (Go's channel timers). An expiry puts its due time in the
// channel unless a tick still waits there, in which case it is dropped (Go
// drops ticks for a slow receiver); a periodic one then re-arms for its next
// period boundary after now, so a late expiry skips ticks instead of firing a
// burst to catch up. stop() and reset() also take back a tick not yet
// received, so that none from before them is ever received (Go 1.23). Every
// method is safe alongside the others and the expiry; the destructor waits
// out an expiry in flight.
class ChanTimer {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  // Due `first` from now, then every `period` (0: once). A one-shot with
  // `first` <= 0 is due at once: its tick is in the channel on return.
  ChanTimer(std::chrono::nanoseconds first, std::chrono::nanoseconds period);
  ChanTimer(const ChanTimer&) = delete;
  ChanTimer& operator=(const ChanTimer&) = delete;
  ~ChanTimer();

  const Channel<TimePoint>& chan() const noexcept { return ch_; }
  // True if this call kept a tick from being received: it disarmed the
  // timer, or took back a tick still in the channel.
  bool stop();
  // stop(), then armed as the constructor arms; returns what stop() did.
  bool reset(std::chrono::nanoseconds first, std::chrono::nanoseconds period);

 private:
  static void on_fire(void* self, std::uint64_t seq);
  bool disarm_locked(ChanWaiter** to_wake);
  void arm_locked(std::chrono::nanoseconds first, std::chrono::nanoseconds period,
                  ChanWaiter** to_wake);
  void deliver_locked(std::int64_t due, ChanWaiter** to_wake);

  // Serialises arming and disarming with each other and with an expiry's
  // send and re-arm, so that nothing is sent or re-armed for a stale arming.
  SpinLock mu_;
  TimerNode node_;
  Channel<TimePoint> ch_{1};
  std::int64_t period_ = 0;  // ns; under mu_
  std::int64_t due_ = 0;     // the armed expiry's `when`; under mu_
  // Under mu_. Bumped by every stop and reset and carried in node_.arg: an
  // expiry popped before them finds a different number and does nothing.
  std::uint64_t seq_ = 0;
};

}  // namespace detail

// Go's time.Ticker: a tick (the time it was due) on chan() every period. The
// channel holds one tick; while it is full, ticks are dropped, so a slow
// receiver gets the latest rhythm, not a backlog. Use it in a select:
//
//   weft::Ticker tick(100ms);
//   for (;;) weft::select(weft::on_recv(tick.chan(), [&](auto) { flush(); }),
//                         weft::on_recv(jobs, [&](std::optional<Job> j) { ... }));
//
// Needs a running runtime, as Timer does. chan(), stop() and reset() are
// safe from any fiber or thread at once. Movable; a moved-from Ticker has no
// channel (stop() and reset() on it do nothing).
class Ticker {
 public:
  // Throws std::invalid_argument if `period` is not positive (Go panics).
  explicit Ticker(std::chrono::nanoseconds period);
  Ticker(Ticker&&) noexcept = default;
  Ticker& operator=(Ticker&&) noexcept = default;
  // Stops; waits out an expiry in progress.
  ~Ticker() = default;

  const Channel<std::chrono::steady_clock::time_point>& chan() const noexcept {
    return timer_->chan();
  }
  // No tick is sent after this returns, and one sent but not yet received is
  // taken back (Go 1.23). reset() starts it again.
  void stop();
  // stop(), then ticks every `period`, the first `period` from now. Throws
  // std::invalid_argument if `period` is not positive.
  void reset(std::chrono::nanoseconds period);

 private:
  std::unique_ptr<detail::ChanTimer> timer_;
};

// Go's time.After (and time.NewTimer): one tick, the time it was due, on
// chan() once `d` has passed; at once if `d` is not positive. Unlike Go
// before 1.23, dropping it stops the timer, so a select loop that makes one
// per iteration leaves no timers behind:
//
//   weft::select(weft::on_recv(jobs, [&](std::optional<Job> j) { ... }),
//                weft::on_recv(weft::after(1s), [&](auto) { timed_out = true; }));
//
// on_recv() takes a temporary After into the select case, which keeps it
// armed while the select waits. Needs a running runtime unless `d` is not
// positive. chan(), stop() and reset() are safe from any fiber or thread at
// once. Movable; a moved-from After has nothing left to use.
class After {
 public:
  const Channel<std::chrono::steady_clock::time_point>& chan() const noexcept {
    return timer_->chan();
  }
  // True if this call kept the tick from being received (Go's Timer.Stop):
  // the timer had not fired, or its tick was still in the channel and was
  // taken back.
  bool stop() { return timer_->stop(); }
  // Stops, then ticks once `d` from now (Go's Timer.Reset); returns what
  // stop() would have.
  bool reset(std::chrono::nanoseconds d) { return timer_->reset(d, std::chrono::nanoseconds(0)); }

 private:
  friend After after(std::chrono::nanoseconds d);
  explicit After(std::unique_ptr<detail::ChanTimer> timer) noexcept : timer_(std::move(timer)) {}
  std::unique_ptr<detail::ChanTimer> timer_;
};

[[nodiscard("dropping the After stops its timer")]] After after(std::chrono::nanoseconds d);

namespace detail {

// A receive case that owns the After it waits on.
template <class F>
class AfterCase final : public SelectCase {
 public:
  AfterCase(After after, F fn)
      : after_(std::move(after)), recv_(after_.chan().state(), std::move(fn)) {}
  const void* lock_key() const override { return recv_.lock_key(); }
  void lock() override { recv_.lock(); }
  void unlock() override { recv_.unlock(); }
  int try_complete(ChanWaiter** to_wake) override { return recv_.try_complete(to_wake); }
  void enqueue(ChanWaiter* w) override { recv_.enqueue(w); }
  void dequeue(ChanWaiter* w) override { recv_.dequeue(w); }
  void* value_slot() override { return recv_.value_slot(); }
  void run(bool ok) override { recv_.run(ok); }

 private:
  After after_;  // the channel and timer recv_ refers to live as long as this
  RecvCase<std::chrono::steady_clock::time_point, F> recv_;
};

}  // namespace detail

// Receives the After's tick; fn gets it as std::optional<time_point>, never
// empty. From a temporary (`on_recv(weft::after(d), ...)`) the case owns the
// timer; from a named After it only refers to it.
template <class F>
auto on_recv(const After& a, F fn) {
  return on_recv(a.chan(), std::move(fn));
}
template <class F>
auto on_recv(After&& a, F fn) {
  return detail::AfterCase<F>(std::move(a), std::move(fn));
}

}  // namespace weft
