// The runtime's one timer mechanism, under sleep_for, weft::Timer, context
// deadlines and socket deadlines: a node in a worker's deadline heap.
//
// The protocol every owner follows:
// - add_timer() queues a node that is not queued; stop_timer() unqueues it
//   (true only if this call did). Callers serialise add/stop on one node
//   (each owner has its own lock for that).
// - When due, a worker pops the node and calls fire(context, arg) outside the
//   heap's lock, with the values the node had when popped: the node may be
//   re-armed while fire runs, and a re-armed node may be popped and fired
//   again on another worker before the first fire returns.
// - `in_flight` counts those expiries: popped, fire() not yet returned. The
//   runtime decrements it after fire() returns, as its last touch of the
//   node. So before freeing a node, its owner calls stop_timer_and_wait(),
//   which unqueues it and waits until no expiry is in flight.
// - fire() runs on a worker and must not block, nor free its own node.
#pragma once

#include "weft/detail/cxx20.h"

#include <atomic>
#include <cstdint>

namespace weft::detail {

struct TimerHeap;

struct TimerNode {
  std::int64_t when = 0;  // absolute CLOCK_MONOTONIC nanoseconds
  void (*fire)(void* context, std::uint64_t arg) = nullptr;
  void* context = nullptr;                // for fire(): the fiber, the Timer, ...
  std::uint64_t arg = 0;                  // for fire(): e.g. a sequence number
  std::atomic<TimerHeap*> heap{nullptr};  // set while queued
  std::int32_t index = -1;                // position in the heap, under its lock
  std::atomic<std::uint32_t> in_flight{0};
};

// CLOCK_MONOTONIC in ns: the clock of `when`.
std::int64_t mono_now_ns() noexcept;

// Queues `node` to fire at `when` (absolute CLOCK_MONOTONIC ns) on the
// caller's worker's heap (worker 0's from other threads), waking whoever
// must now wait less. Needs a running runtime.
void add_timer(TimerNode* node, std::int64_t when);
// Unqueues `node`; true if it was queued and this call removed it.
bool stop_timer(TimerNode* node);
// stop_timer(), then waits until no expiry of `node` is in flight, so that
// the node may be freed. Must not be called from the node's own fire().
bool stop_timer_and_wait(TimerNode* node);

}  // namespace weft::detail
