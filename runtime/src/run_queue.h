// The run queues: each worker's RunQueue, and the runtime's GlobalQueue.
// Internal to the runtime; every member is inline (the spawn, ready and
// switch paths call them).
//
// RunQueue (Go's runq): 256 slots, indexed by free-running 32-bit head and
// tail counters.
// - Only the owner pushes, at the tail (push); it publishes each fiber with
//   a release store of tail, which the acquire loads of tail in grab_half
//   (thieves) pair with.
// - Anyone takes from the head by CAS: the owner one fiber at a time (pop),
//   thieves (and the owner, spilling to the global queue) half of what is
//   there (grab_half). The acq_rel CAS on head pairs with the acquire load
//   of head in push: a slot is reused only after its taker's CAS.
// - Slots are atomics because a thief may read a slot that the owner is
//   about to reuse; its CAS on head then fails and it reads again.
// - empty_seq_cst() is a sleeper's last look (Idle::sleep); its partner is
//   the seq_cst fence in Idle::wakep() after the push.
//
// GlobalQueue: fiber pointers in linked arrays of 128 behind a spin lock,
// for fibers queued from other threads and for run-queue overflow.
// - size_ is written only under the lock; its seq_cst store in put() and
//   size_seq_cst() are the queue's half of the Dekker pair with a sleeper
//   (Idle::sleep's last look against the fence in Idle::wakep()). size() is
//   a relaxed hint for the lock-free check before taking the lock.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "fiber.h"
#include "records.h"
#include "weft/detail/spinlock.h"

namespace weft::detail {

constexpr std::uint32_t kRecordPrefetchRun = 4;  // how far ahead of the run queue's head

class RunQueue {
 public:
  static constexpr std::uint32_t kSize = 256;

  bool empty() const {
    return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
  }
  // For a sleeper's last look: seq_cst pairs with the fence in Idle::wakep().
  bool empty_seq_cst() const {
    return head_.load(std::memory_order_seq_cst) == tail_.load(std::memory_order_seq_cst);
  }

  // For its owner (the tail is its own; thieves only ever shrink it).
  std::uint32_t size() const {
    return tail_.load(std::memory_order_relaxed) - head_.load(std::memory_order_acquire);
  }

  bool push(Fiber* f) {
    const std::uint32_t h = head_.load(std::memory_order_acquire);
    const std::uint32_t t = tail_.load(std::memory_order_relaxed);
    if (t - h >= kSize) return false;
    slots_[t % kSize].store(f, std::memory_order_relaxed);
    tail_.store(t + 1, std::memory_order_release);
    return true;
  }

  Fiber* pop() {
    for (;;) {
      std::uint32_t h = head_.load(std::memory_order_acquire);
      const std::uint32_t t = tail_.load(std::memory_order_relaxed);
      if (h == t) return nullptr;
      Fiber* f = slots_[h % kSize].load(std::memory_order_relaxed);
      if (head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel)) {
        // Records a few fibers ahead were most likely written on another
        // core (spawned there, or readied there): start fetching one while
        // these run. Only a hint: it may be stolen or not yet stored.
        if (t - h > kRecordPrefetchRun) {
          prefetch_record(slots_[(h + kRecordPrefetchRun) % kSize].load(std::memory_order_relaxed));
        }
        return f;
      }
    }
  }

  // The queued fibers, for a dump with the world stopped (the owner does not
  // run; a thief may still take some meanwhile, so this is a snapshot).
  template <class F>
  void for_each_queued(F&& fn) const {
    const std::uint32_t h = head_.load(std::memory_order_acquire);
    const std::uint32_t t = tail_.load(std::memory_order_acquire);
    if (t - h > kSize) return;  // torn read
    for (std::uint32_t i = h; i != t; ++i) fn(slots_[i % kSize].load(std::memory_order_relaxed));
  }

  // Takes `portion` (half, rounded up) of the queue; for thieves and for the
  // owner moving overflow to the global queue.
  std::uint32_t grab_half(Fiber** out) {
    for (;;) {
      std::uint32_t h = head_.load(std::memory_order_acquire);
      const std::uint32_t t = tail_.load(std::memory_order_acquire);
      std::uint32_t n = t - h;
      n -= n / 2;
      if (n == 0) return 0;
      if (n > kSize / 2) continue;  // torn read of head and tail
      for (std::uint32_t i = 0; i < n; ++i) {
        out[i] = slots_[(h + i) % kSize].load(std::memory_order_relaxed);
      }
      if (head_.compare_exchange_weak(h, h + n, std::memory_order_acq_rel)) return n;
    }
  }

 private:
  alignas(64) std::atomic<std::uint32_t> head_{0};
  alignas(64) std::atomic<std::uint32_t> tail_{0};
  std::atomic<Fiber*> slots_[kSize] = {};
};

// The global run queue: fiber pointers in linked arrays, not fibers linked
// through their records. Putting and taking copy pointers under the lock and
// never touch a record, so the lock is held for a memcpy; walking a chain of
// 128 records that another core wrote (a cache miss each) held it for
// microseconds while the spawning worker waited to put its overflow.
class GlobalQueue {
 public:
  static constexpr std::uint32_t kChunk = 128;

  ~GlobalQueue() {
    drop_spares(free_);
    drop_spares(head_);
  }

  std::uint32_t size() const { return size_.load(std::memory_order_relaxed); }
  // seq_cst: pairs with sleepers' last look for work (see Idle::sleep).
  std::uint32_t size_seq_cst() const { return size_.load(std::memory_order_seq_cst); }

  void put(Fiber* const* fibers, std::uint32_t n) {
    std::lock_guard lock(mu_);
    while (n > 0) {
      if (!tail_ || tail_->end == kChunk) link_new_chunk();
      const std::uint32_t k = std::min(n, kChunk - tail_->end);
      std::memcpy(&tail_->fibers[tail_->end], fibers, k * sizeof(Fiber*));
      tail_->end += k;
      fibers += k;
      n -= k;
      size_.store(size_.load(std::memory_order_relaxed) + k, std::memory_order_seq_cst);
    }
  }

  // Takes up to `max` fibers in order into `out`, for `nworkers` sharing the
  // queue (Go's globrunqget: size / nworkers + 1, so that one worker does not
  // take everything).
  std::uint32_t get(Fiber** out, std::uint32_t max, int nworkers) {
    std::lock_guard lock(mu_);
    const std::uint32_t size = size_.load(std::memory_order_relaxed);
    std::uint32_t n = std::min(max, size / static_cast<std::uint32_t>(nworkers) + 1);
    n = std::min(n, size);
    std::uint32_t taken = 0;
    while (taken < n) {
      Chunk* c = head_;
      const std::uint32_t k = std::min(n - taken, c->end - c->begin);
      std::memcpy(out + taken, &c->fibers[c->begin], k * sizeof(Fiber*));
      c->begin += k;
      taken += k;
      if (c->begin == c->end) unlink_head();
    }
    size_.store(size - n, std::memory_order_seq_cst);
    return n;
  }

  // For a dump: under the lock, as a worker left running may still queue.
  template <class F>
  void for_each_locked(F&& fn) {
    std::lock_guard lock(mu_);
    for_each(fn);
  }

  // For teardown, with every worker stopped.
  template <class F>
  void for_each(F&& fn) {
    for (Chunk* c = head_; c; c = c->next) {
      for (std::uint32_t i = c->begin; i < c->end; ++i) fn(c->fibers[i]);
    }
  }

 private:
  struct Chunk {
    Chunk* next;
    std::uint32_t begin, end;
    Fiber* fibers[kChunk];
  };
  static constexpr std::uint32_t kMaxSpares = 64;

  void link_new_chunk() {
    Chunk* c = free_;
    if (c) {
      free_ = c->next;
      --spares_;
    } else {
      c = new Chunk;  // under the lock, but only while the queue grows past its high mark
    }
    c->next = nullptr;
    c->begin = c->end = 0;
    (tail_ ? tail_->next : head_) = c;
    tail_ = c;
  }

  void unlink_head() {
    Chunk* c = head_;
    head_ = c->next;
    if (!head_) tail_ = nullptr;
    if (spares_ < kMaxSpares) {
      c->next = free_;
      free_ = c;
      ++spares_;
    } else {
      delete c;
    }
  }

  static void drop_spares(Chunk* c) {
    while (c) {
      Chunk* next = c->next;
      delete c;
      c = next;
    }
  }

  SpinLock mu_;
  Chunk* head_ = nullptr;
  Chunk* tail_ = nullptr;
  Chunk* free_ = nullptr;
  std::uint32_t spares_ = 0;
  alignas(64) std::atomic<std::uint32_t> size_{0};
};

}  // namespace weft::detail
