#include "block_pool.h"

#include <cstdio>
#include <cstdlib>
#include <utility>

#include "sanitizer.h"

namespace weft::detail {

namespace {

std::atomic<unsigned> pools_made{0};
// Written once as each pool is made; release: pairs with the thread-exit
// hook's acquire load, which then reads a whole pool.
std::atomic<BlockPool*> pools[BlockPool::kMaxPools];

struct ThreadLists {
  BlockPool::List current, spare;
};

// Trivially destructible, so reading it costs no guard. `gone`: its exit
// hook ran; a block taken or put after that (a static destructor's context)
// goes to malloc.
struct ThreadCache {
  ThreadLists lists[BlockPool::kMaxPools];
  bool hooked;
  bool gone;
};
thread_local ThreadCache tls_cache;

// Invariant 4: whatever the thread still holds goes back when it exits.
struct ThreadExitHook {
  void arm() noexcept {}
  ~ThreadExitHook() {
    tls_cache.gone = true;
    for (unsigned i = 0; i < BlockPool::kMaxPools; ++i) {
      BlockPool* pool = pools[i].load(std::memory_order_acquire);
      ThreadLists& l = tls_cache.lists[i];
      if (!pool) continue;
      if (l.current.count) pool->give_back(std::exchange(l.current, {}));
      if (l.spare.count) pool->give_back(std::exchange(l.spare, {}));
    }
  }
};
thread_local ThreadExitHook tls_exit_hook;

// This thread's lists of the pool numbered `index`, or null once the thread
// is exiting.
ThreadLists* thread_lists(unsigned index) noexcept {
  ThreadCache& c = tls_cache;
  if (!c.hooked) [[unlikely]] {
    c.hooked = true;
    tls_exit_hook.arm();  // constructs it, and so registers its destructor
  }
  return c.gone ? nullptr : &c.lists[index];
}

// Invariant 5: the link is the word after the block's usable bytes, and it
// stays unpoisoned: LeakSanitizer does not follow pointers in poisoned
// memory, and took every block behind a list's head for a leak.
void** link_of(void* block, std::size_t size) noexcept {
  return reinterpret_cast<void**>(static_cast<char*>(block) + size);
}

void* next_of(void* block, std::size_t size) noexcept {
  san::asan_unpoison(block, size);
  return *link_of(block, size);
}

void push(BlockPool::List* list, void* block, std::size_t size) noexcept {
  *link_of(block, size) = list->head;
  san::asan_poison(block, size);
  list->head = block;
  ++list->count;
}

}  // namespace

// The size is rounded up to a word, so that the link after it is aligned.
BlockPool::BlockPool(std::size_t block_size)
    : size_((block_size + sizeof(void*) - 1) / sizeof(void*) * sizeof(void*)),
      index_(pools_made.fetch_add(1, std::memory_order_relaxed)) {
  if (index_ >= kMaxPools) {
    std::fprintf(stderr, "weft: more than %u block pools\n", kMaxPools);
    std::abort();
  }
  depot_.reserve(kDepotBatches);
  pools[index_].store(this, std::memory_order_release);
}

void* BlockPool::take() {
  ThreadLists* mine = thread_lists(index_);
  if (!mine || (!mine->current.head && !mine->spare.head && !refill(&mine->current))) {
    malloced_.fetch_add(1, std::memory_order_relaxed);
    return ::operator new(size_ + sizeof(void*));
  }
  if (!mine->current.head) mine->current = std::exchange(mine->spare, {});
  void* block = mine->current.head;
  mine->current.head = next_of(block, size_);
  --mine->current.count;
  return block;
}

void BlockPool::put(void* block) noexcept {
  ThreadLists* mine = thread_lists(index_);
  if (!mine) {
    ::operator delete(block);
    return;
  }
  if (mine->current.count == kBatch) {
    if (mine->spare.count) give_back(std::exchange(mine->spare, {}));
    mine->spare = std::exchange(mine->current, {});
  }
  push(&mine->current, block, size_);
}

bool BlockPool::refill(List* into) noexcept {
  lock_.lock();
  if (!depot_.empty()) {
    *into = depot_.back();
    depot_.pop_back();
  } else {
    *into = std::exchange(partial_, {});  // whole lists first; may be empty
  }
  lock_.unlock();
  return into->count != 0;
}

void BlockPool::give_back(List list) noexcept {
  lock_.lock();
  if (list.count < kBatch) list = top_up_partial(list);
  const bool kept = !list.head || depot_.size() < kDepotBatches;
  if (list.head && kept) depot_.push_back(list);  // reserved: allocates nothing
  lock_.unlock();
  if (!kept) free_list(list);
}

// Invariant 3: a short list's blocks join partial_ one by one (at most
// kBatch - 1 of them, and only as a thread exits). Returns partial_ once it
// is whole, with what did not fit left as the new partial_; else nothing.
BlockPool::List BlockPool::top_up_partial(List list) noexcept {
  while (list.head && partial_.count < kBatch) {
    void* block = list.head;
    list.head = next_of(block, size_);
    --list.count;
    push(&partial_, block, size_);
  }
  if (partial_.count < kBatch) return {};
  return std::exchange(partial_, list);
}

void BlockPool::free_list(List list) noexcept {
  freed_.fetch_add(list.count, std::memory_order_relaxed);
  for (void* block = list.head; block;) {
    void* next = next_of(block, size_);
    ::operator delete(block);
    block = next;
  }
}

BlockPoolStats BlockPool::stats() noexcept {
  BlockPoolStats st{};
  st.malloced = malloced_.load(std::memory_order_relaxed);
  st.freed = freed_.load(std::memory_order_relaxed);
  lock_.lock();
  st.depot_blocks = partial_.count;
  for (const List& l : depot_) st.depot_blocks += l.count;
  lock_.unlock();
  return st;
}

}  // namespace weft::detail
