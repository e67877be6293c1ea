// Fixed-size blocks for objects that one thread allocates and another frees:
// a context node made by a fiber on one worker and released after the fiber
// moved to another. glibc's malloc keeps 7 blocks of a size per thread
// (tcache); past that, a free takes the lock of the arena the block came
// from, so two workers freeing each other's blocks sleep on each other's
// arena locks. A cancel of 1,000 parked readers on 2 workers met ~10 such
// futex sleeps of 20-40 us per round (perf, sys_enter_futex), a third of its
// time. Here a block freed on any thread goes to that thread's own cache, as
// the fiber records do (records.h), and the next allocation there reuses it.
//
// Invariants:
// 1. Each thread keeps, per pool, two lists of free blocks: `current` (up to
//    kBatch) and `spare` (none or exactly kBatch). take() and put() touch
//    only those unless `current` is empty, or full with a full `spare`
//    behind it; then a whole list moves to or from the pool's depot under
//    its lock, without walking it.
// 2. take() and put() are out of line: a fiber may resume on another thread
//    after any switch, so the cache's address is computed anew on every
//    call; nothing in them switches.
// 3. The depot holds at most kDepotBatches whole lists (kBatch blocks each)
//    and one short list; a whole list beyond that is freed block by block.
//    So a burst leaves at most about (kDepotBatches + 1 + 2 * threads) *
//    kBatch blocks behind, which later allocations reuse. Short lists come
//    only from exiting threads and are merged into the one short list: a
//    place each would have let many threads that exit with a block or two
//    fill the depot with a few blocks, and a burst then went to malloc.
// 4. A thread that exits gives its lists to the depot (or frees them).
// 5. A block is block_size() bytes and one more word, past them, that links
//    it to the next while it is free. The block_size() bytes are poisoned
//    for ASan while it is free, so a use after put() is reported as one
//    after free() would be; the link is not (LeakSanitizer skips poisoned
//    memory, and took the blocks a list links for leaks).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "weft/detail/spinlock.h"

namespace weft::detail {

struct BlockPoolStats {
  std::uint64_t malloced;    // blocks that take() had to allocate
  std::uint64_t freed;       // blocks given back to malloc past the depot's bound
  std::size_t depot_blocks;  // now
};

class BlockPool {
 public:
  static constexpr std::uint32_t kBatch = 64;
  static constexpr std::size_t kDepotBatches = 32;
  static constexpr unsigned kMaxPools = 8;

  // A pool lives as long as the process (threads give blocks back to it as
  // they exit, in any order): make it with new and never delete it.
  explicit BlockPool(std::size_t block_size);
  BlockPool(const BlockPool&) = delete;
  BlockPool& operator=(const BlockPool&) = delete;

  // A block of block_size() bytes, aligned as operator new's; throws
  // std::bad_alloc as operator new does.
  void* take();
  void put(void* block) noexcept;
  std::size_t block_size() const noexcept { return size_; }
  BlockPoolStats stats() noexcept;

  // A thread's lists (invariant 1); public only for the thread-exit hook.
  struct List {
    void* head = nullptr;
    std::uint32_t count = 0;
  };
  void give_back(List list) noexcept;

 private:
  bool refill(List* into) noexcept;         // a list from the depot, if it has one
  List top_up_partial(List list) noexcept;  // under lock_
  void free_list(List list) noexcept;

  const std::size_t size_;
  const unsigned index_;  // of this pool's lists in every thread's cache
  SpinLock lock_;
  std::vector<List> depot_;  // under lock_; capacity kDepotBatches, reserved
  List partial_;             // under lock_; fewer than kBatch blocks
  // Rare events only: a counter every take() wrote would be the one line
  // every thread shares.
  std::atomic<std::uint64_t> malloced_{0}, freed_{0};
};

// An allocator for std::allocate_shared that takes its one block (the
// control block and the object together) from a pool, when it fits.
template <class T>
struct PoolAllocator {
  using value_type = T;
  BlockPool* pool;
  explicit PoolAllocator(BlockPool* p) noexcept : pool(p) {}
  template <class U>
  PoolAllocator(const PoolAllocator<U>& other) noexcept : pool(other.pool) {}  // NOLINT: rebind

  static constexpr bool fits_one(std::size_t n, std::size_t block) noexcept {
    return n == 1 && sizeof(T) <= block && alignof(T) <= __STDCPP_DEFAULT_NEW_ALIGNMENT__;
  }
  T* allocate(std::size_t n) {
    if (fits_one(n, pool->block_size())) return static_cast<T*>(pool->take());
    return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{alignof(T)}));
  }
  void deallocate(T* p, std::size_t n) noexcept {
    if (fits_one(n, pool->block_size())) {
      pool->put(p);
    } else {
      ::operator delete (p, std::align_val_t{alignof(T)});
    }
  }
  template <class U>
  bool operator==(const PoolAllocator<U>& other) const noexcept {
    return pool == other.pool;
  }
};

}  // namespace weft::detail
