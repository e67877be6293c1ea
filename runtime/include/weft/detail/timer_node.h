// A timer's entry in a worker's deadline heap. Public only so that
// weft::Timer can embed one; everything else about timers is internal.
#pragma once

#include <atomic>
#include <cstdint>

namespace weft::detail {

struct TimerHeap;

struct TimerNode {
  std::int64_t when = 0;  // absolute CLOCK_MONOTONIC nanoseconds
  // Runs on a worker once the timer is due, outside the heap's lock. It must
  // not block, and it owns the node from then on (a sleeping fiber's node is
  // gone as soon as fire readies the fiber).
  void (*fire)(TimerNode*) = nullptr;
  std::atomic<TimerHeap*> heap{nullptr};  // set while queued
  std::int32_t index = -1;                // position in the heap, under its lock
  void* context = nullptr;                // for fire(): the fiber, the Timer, ...
  std::atomic<bool> firing{false};        // popped, fire() not finished (Timer only)
};

}  // namespace weft::detail
