// The deadline heap: one 4-ary min-heap of timers per worker (Go's per-P
// timers), each behind its own spin lock so that idle workers can run the
// due timers of busy ones.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>
#include <vector>

#include "weft/detail/spinlock.h"
#include "weft/detail/timer_node.h"

namespace weft::detail {

constexpr std::int64_t kNever = LLONG_MAX;

struct TimerHeap {
  // `when` is kept beside the pointer so that sifting never touches the
  // nodes, which live on fiber stacks all over memory (Go's timerWhen).
  struct Entry {
    std::int64_t when;
    TimerNode* node;
  };

  SpinLock lock;
  std::vector<Entry> nodes;
  // Earliest `when`, readable without the lock (kNever when empty).
  std::atomic<std::int64_t> min_when{kNever};

  struct Expiry {
    void (*fire)(void*, std::uint64_t);
    void* context;
    std::uint64_t arg;
  };

  // All under lock.
  void push(TimerNode* n);
  void erase(TimerNode* n);
  // Pops the earliest timer if due at `now`, with what fire() needs.
  TimerNode* pop_due(std::int64_t now, Expiry* expiry = nullptr);
  void detach_all();

 private:
  void sift_up(std::size_t i);
  void sift_down(std::size_t i);
  void place(std::size_t i, const Entry& e) {
    nodes[i] = e;
    e.node->index = static_cast<std::int32_t>(i);
  }
  void publish_min() {
    min_when.store(nodes.empty() ? kNever : nodes[0].when, std::memory_order_seq_cst);
  }
};

// Fires every timer of `heap` that is due at `now`; returns how many.
int run_due_timers(TimerHeap& heap, std::int64_t now);

}  // namespace weft::detail
