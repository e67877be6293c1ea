// Deadline arithmetic that saturates instead of overflowing. Go clamps
// `now + d` to the largest time (the runtime's when(), net's D-10): a timeout
// too long to represent means "never", where a wrapped sum would lie in the
// past and expire at once. runtime/, context/ and net/ all add through here.
#pragma once

#include "weft/detail/cxx20.h"

#include <chrono>
#include <limits>
#include <type_traits>

namespace weft::detail {

// a + b, clamped to the range of the duration.
template <class Rep, class Period>
constexpr std::chrono::duration<Rep, Period> add_saturated(
    std::chrono::duration<Rep, Period> a,
    std::type_identity_t<std::chrono::duration<Rep, Period>> b) noexcept {
  static_assert(std::is_integral_v<Rep>, "floating-point durations do not overflow");
  Rep sum;
  if (__builtin_add_overflow(a.count(), b.count(), &sum)) {
    sum = b.count() > 0 ? std::numeric_limits<Rep>::max() : std::numeric_limits<Rep>::min();
  }
  return std::chrono::duration<Rep, Period>(sum);
}

// t + d, clamped to the range of the clock: time_point::max() is "never".
template <class Clock, class Duration>
constexpr std::chrono::time_point<Clock, Duration> add_saturated(
    std::chrono::time_point<Clock, Duration> t, std::type_identity_t<Duration> d) noexcept {
  return std::chrono::time_point<Clock, Duration>(add_saturated(t.time_since_epoch(), d));
}

}  // namespace weft::detail
