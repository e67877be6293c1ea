// The deadline heap: one 4-ary min-heap of timers per worker (Go's per-P
// timers), each behind its own spin lock so that idle workers can run the
// due timers of busy ones.
#pragma once

#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdlib>

#include "weft/detail/spinlock.h"
#include "weft/detail/timer_node.h"

namespace weft::detail {

constexpr std::int64_t kNever = LLONG_MAX;

struct TimerHeap {
  // `when` is kept beside the pointer so that sifting never touches the
  // nodes, which live on fiber stacks all over memory (Go's timerWhen).
  // A stopped timer leaves a tombstone (node null, its `when` kept, so the
  // heap stays ordered): a stop is O(1) instead of a sift through
  // log4(n) levels, each writing a node's index somewhere in memory.
  // Tombstones go when they reach the root (pop_due) or, once they are
  // more than half the heap, all at once (compact, O(n): Go's
  // clearDeletedTimers). A tombstone at the root keeps min_when earlier
  // than the earliest live timer: whoever acts on it wakes early, finds
  // it, drops it, never late.
  struct Entry {
    std::int64_t when;
    TimerNode* node;  // null: a tombstone
  };

  // The entries' storage: a vector that grows with realloc, which glibc
  // serves for large blocks with mremap, so a heap growing to a million
  // timers copies no entry and faults in only the pages it adds. Growing
  // a std::vector copied 16 MB through fresh pages on the way to 1M,
  // about 13 ns per timer of a 1M add-then-stop round.
  class Entries {
   public:
    Entries() = default;
    Entries(const Entries&) = delete;
    Entries& operator=(const Entries&) = delete;
    ~Entries() { std::free(data_); }

    std::size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }
    Entry& operator[](std::size_t i) { return data_[i]; }
    Entry& back() { return data_[size_ - 1]; }
    Entry* begin() { return data_; }
    Entry* end() { return data_ + size_; }
    void push_back(const Entry& e) {
      if (size_ == capacity_) grow();  // throws std::bad_alloc
      data_[size_++] = e;
    }
    void pop_back() { --size_; }
    void truncate(std::size_t n) { size_ = n; }
    void clear() { size_ = 0; }

   private:
    void grow();
    Entry* data_ = nullptr;
    std::size_t size_ = 0;
    std::size_t capacity_ = 0;
  };

  SpinLock lock;
  Entries nodes;
  std::size_t dead = 0;  // tombstones in nodes
  // Earliest `when`, readable without the lock (kNever when empty).
  std::atomic<std::int64_t> min_when{kNever};

  struct Expiry {
    void (*fire)(void*, std::uint64_t);
    void* context;
    std::uint64_t arg;
  };

  // All under lock.
  std::size_t live() const { return nodes.size() - dead; }
  void push(TimerNode* n);
  // Unqueues a stopped timer, leaving a tombstone.
  void stop(TimerNode* n);
  // Pops the earliest timer if due at `now`, with what fire() needs.
  TimerNode* pop_due(std::int64_t now, Expiry* expiry = nullptr);
  void detach_all();

 private:
  std::size_t sift_up(std::size_t i);  // returns where the entry ended
  void sift_down(std::size_t i);
  // Removes the entry at i; whether the root changed.
  bool remove_at(std::size_t i);
  void compact();
  static void unqueued(TimerNode* n) {
    n->index = -1;
    // Release: whoever then finds the node unqueued (remove_timer) and
    // re-arms it must not race with a pop's read of fire/context/arg.
    n->heap.store(nullptr, std::memory_order_release);
  }
  void place(std::size_t i, const Entry& e) {
    nodes[i] = e;
    if (e.node) e.node->index = static_cast<std::int32_t>(i);
  }
  void publish_min() {
    min_when.store(nodes.empty() ? kNever : nodes[0].when, std::memory_order_seq_cst);
  }
};

// Fires every timer of `heap` that is due at `now`; returns how many.
int run_due_timers(TimerHeap& heap, std::int64_t now);

// CLOCK_MONOTONIC as of the kernel's last tick (CLOCK_MONOTONIC_COARSE; a
// fifth of mono_now_ns()'s cost here): never ahead of mono_now_ns(), and
// behind it by up to a tick, or by more after a tickless idle stretch.
// Where the system has no such clock, mono_now_ns() itself. (Not
// registry.h's coarse_now_ms(): that one is a cached counter that sysmon
// and waking workers advance, cheaper still but behind by up to 10 ms, and
// by more while the runtime sleeps; no bound can be put on it.)
std::int64_t coarse_mono_ns() noexcept;
// How far behind mono_now_ns() coarse_mono_ns() is taken to be, at most,
// where a decision needs a bound: ticks are 1 to 10 ms.
constexpr std::int64_t kCoarseClockLagNs = 50'000'000;

}  // namespace weft::detail
