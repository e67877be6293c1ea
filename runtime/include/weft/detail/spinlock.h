// A short-hold lock for runtime internals (wait queues). Never held across a
// park: park commits release it once the waiter is off its stack.
#pragma once

#include "weft/detail/cxx20.h"

#include <atomic>

namespace weft::detail {

void cpu_relax() noexcept;
void spin_backoff(unsigned& spins) noexcept;

class SpinLock {
 public:
  void lock() noexcept {
    unsigned spins = 0;
    while (held_.exchange(true, std::memory_order_acquire)) {
      while (held_.load(std::memory_order_relaxed)) spin_backoff(spins);
    }
  }
  bool try_lock() noexcept {
    return !held_.load(std::memory_order_relaxed) &&
           !held_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { held_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> held_{false};
};

}  // namespace weft::detail
