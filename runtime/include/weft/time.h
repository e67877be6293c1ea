// Sleeping and timers on the runtime's deadline heap. Waits are nanosecond
// resolution: a 100 us sleep wakes near 100 us, never early.
#pragma once

#include <chrono>
#include <functional>

#include "weft/detail/spinlock.h"
#include "weft/detail/timer_node.h"

namespace weft {

// Parks the calling fiber for at least `d` (a plain thread just sleeps). A
// time too far away to represent is never reached: the caller parks for good,
// as Go's time.Sleep with a huge duration.
void sleep_for(std::chrono::nanoseconds d);
void sleep_until(std::chrono::steady_clock::time_point t);

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
  detail::SpinLock mu_;  // serialises stop/reset/destruction (not the expiry)
  detail::TimerNode node_;
  std::function<void()> fn_;
};

}  // namespace weft
