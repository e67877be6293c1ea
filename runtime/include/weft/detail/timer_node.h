// A timer's entry in a worker's deadline heap. Public only so that
// weft::Timer can embed one; everything else about timers is internal.
#pragma once

#include <atomic>
#include <cstdint>

namespace weft::detail {

struct TimerHeap;

struct TimerNode {
  std::int64_t when = 0;  // absolute CLOCK_MONOTONIC nanoseconds
  // Runs on a worker once the timer is due, outside the heap's lock, with
  // `context` and `arg` as they were when it was popped: the node may be
  // re-armed (or gone: a sleeping fiber's node) while fire runs. It must not
  // block.
  void (*fire)(void* context, std::uint64_t arg) = nullptr;
  void* context = nullptr;                // for fire(): the fiber, the Timer, ...
  std::uint64_t arg = 0;                  // for fire(): e.g. a sequence number
  std::atomic<TimerHeap*> heap{nullptr};  // set while queued
  std::int32_t index = -1;                // position in the heap, under its lock
  std::atomic<bool> firing{false};        // popped, fire() not finished (Timer only)
};

}  // namespace weft::detail
