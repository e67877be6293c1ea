#include "slot_arena.h"

#include <sys/mman.h>

#include <bit>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>

#include "chaos.h"
#include "registry.h"

namespace weft::detail {

namespace {

// 128 KiB: a burst's slots fill few chunks, and a few long-lived sockets
// keep little else resident. Aligned, so a slot finds its header.
constexpr std::size_t kChunkBytes = std::size_t{128} * 1024;
constexpr std::size_t kPage = 4096;
constexpr std::size_t kMaxPages = kChunkBytes / kPage;
static_assert(kMaxPages <= 64, "a chunk's pages are one 64-bit mask");

constexpr std::size_t round_up(std::size_t n, std::size_t to) {
  return (n + to - 1) / to * to;
}

[[noreturn]] void fatal(const char* what) {
  std::fprintf(stderr, "weft: %s\n", what);
  std::abort();
}

}  // namespace

// The header at the start of every chunk, never given back; after it, a
// generation, a free-stack entry and a constructed bit per slot, then the
// slots from header_bytes on. Page numbers count from the first slot.
struct SlotArena::Chunk {
  std::uint32_t index;  // in chunks_
  std::uint32_t free_count = 0;
  std::uint32_t last_put_ms = 0;
  bool releasing = false;                   // pages being given back: not takeable
  std::uint64_t resident = 0;               // pages a slot was taken on since given back
  std::uint64_t pending = 0;                // free since before grace_ began; take() clears
  std::uint16_t page_live[kMaxPages] = {};  // live slots overlapping each page

  static constexpr std::size_t kGenerations = 64 + 2 * kMaxPages;

  std::atomic<std::uint32_t>* generations() {
    return reinterpret_cast<std::atomic<std::uint32_t>*>(reinterpret_cast<char*>(this) +
                                                         kGenerations);
  }
  // Where each array starts, for `per_chunk` slots (the arena's).
  static std::size_t free_stack_offset(std::size_t per_chunk) {
    return kGenerations + per_chunk * sizeof(std::uint32_t);
  }
  static std::size_t constructed_offset(std::size_t per_chunk) {
    return round_up(free_stack_offset(per_chunk) + per_chunk * sizeof(std::uint16_t), 8);
  }

  std::uint64_t live_pages() const {
    std::uint64_t mask = 0;
    for (std::size_t p = 0; p < kMaxPages; ++p) {
      if (page_live[p]) mask |= std::uint64_t{1} << p;
    }
    return mask;
  }

  static std::size_t header_size(std::size_t per_chunk) {
    return constructed_offset(per_chunk) + (per_chunk + 63) / 64 * sizeof(std::uint64_t);
  }
};

SlotArena::SlotArena(std::size_t slot_size) : slot_size_(round_up(slot_size, 16)) {
  static_assert(sizeof(Chunk) <= Chunk::kGenerations);
  for (std::size_t pages = 1; pages < kMaxPages; ++pages) {
    const std::size_t n = (kChunkBytes - pages * kPage) / slot_size_;
    if (Chunk::header_size(n) <= pages * kPage) {
      header_bytes_ = pages * kPage;
      per_chunk_ = static_cast<std::uint32_t>(n);
      break;
    }
  }
  if (per_chunk_ == 0 || per_chunk_ > 0xFFFF) fatal("slot arena: a slot size it cannot lay out");
}

SlotArena::Chunk* SlotArena::chunk_of(const void* slot) {
  return reinterpret_cast<Chunk*>(reinterpret_cast<std::uintptr_t>(slot) & ~(kChunkBytes - 1));
}

// Read by dispatch without the lock: only this arena's constants and the
// generation itself, never a header field another thread wrote.
std::atomic<std::uint32_t>& SlotArena::generation(const void* slot) const {
  Chunk* c = chunk_of(slot);
  return c->generations()[index_of(c, slot)];
}

char* SlotArena::slots(Chunk* c) const {
  return reinterpret_cast<char*>(c) + header_bytes_;
}

std::uint16_t* SlotArena::free_stack(Chunk* c) const {
  return reinterpret_cast<std::uint16_t*>(reinterpret_cast<char*>(c) +
                                          Chunk::free_stack_offset(per_chunk_));
}

std::uint64_t* SlotArena::constructed(Chunk* c) const {
  return reinterpret_cast<std::uint64_t*>(reinterpret_cast<char*>(c) +
                                          Chunk::constructed_offset(per_chunk_));
}

std::uint32_t SlotArena::index_of(const Chunk* c, const void* slot) const {
  const auto offset =
      static_cast<std::size_t>(static_cast<const char*>(slot) - reinterpret_cast<const char*>(c));
  return static_cast<std::uint32_t>((offset - header_bytes_) / slot_size_);
}

std::uint32_t SlotArena::first_page(std::uint32_t i) const {
  return static_cast<std::uint32_t>(std::size_t{i} * slot_size_ / kPage);
}

std::uint32_t SlotArena::last_page(std::uint32_t i) const {
  return static_cast<std::uint32_t>(((std::size_t{i} + 1) * slot_size_ - 1) / kPage);
}

std::uint64_t SlotArena::pages_of(std::uint32_t i) const {
  const std::uint32_t lo = first_page(i), hi = last_page(i);
  return (~std::uint64_t{0} >> (63 - hi)) & (~std::uint64_t{0} << lo);
}

void SlotArena::mark_free(Chunk* c, bool has_free) {
  const std::uint64_t bit = std::uint64_t{1} << (c->index % 64);
  if (has_free) {
    has_free_[c->index / 64] |= bit;
  } else {
    has_free_[c->index / 64] &= ~bit;
  }
}

// Under lock_ (rare: once per per_chunk_ slots at the high-water mark).
SlotArena::Chunk* SlotArena::map_chunk() {
  // Twice the size, then the unaligned ends unmapped: aligned to its size.
  void* raw =
      mmap(nullptr, 2 * kChunkBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) return nullptr;
  const auto start = reinterpret_cast<std::uintptr_t>(raw);
  const std::uintptr_t aligned = round_up(start, kChunkBytes);
  if (aligned != start) munmap(raw, aligned - start);
  munmap(reinterpret_cast<void*>(aligned + kChunkBytes), start + kChunkBytes - aligned);
  auto* c = new (reinterpret_cast<void*>(aligned)) Chunk;
  c->index = static_cast<std::uint32_t>(chunks_.size());
  for (std::uint32_t i = 0; i < per_chunk_; ++i) {
    new (&c->generations()[i]) std::atomic<std::uint32_t>(0);
    // Slot 0 on top: a chunk fills from its start.
    free_stack(c)[i] = static_cast<std::uint16_t>(per_chunk_ - 1 - i);
  }
  c->free_count = per_chunk_;
  chunks_.push_back(c);
  if (chunks_.size() > has_free_.size() * 64) has_free_.push_back(0);
  mark_free(c, true);
  return c;
}

SlotArena::Slot SlotArena::take() {
  std::lock_guard guard(lock_);
  Chunk* c = nullptr;
  for (std::size_t w = 0; w < has_free_.size() && !c; ++w) {
    if (has_free_[w]) {
      c = chunks_[w * 64 + static_cast<std::size_t>(std::countr_zero(has_free_[w]))];
    }
  }
  if (!c && !(c = map_chunk())) return {nullptr, false};
  const std::uint32_t i = free_stack(c)[--c->free_count];
  if (c->free_count == 0) mark_free(c, false);
  const std::uint64_t pages = pages_of(i);
  c->pending &= ~pages;  // their release, if one is under way, is off (invariant 3)
  c->resident |= pages;
  for (std::uint32_t p = first_page(i); p <= last_page(i); ++p) ++c->page_live[p];
  std::uint64_t& word = constructed(c)[i / 64];
  const std::uint64_t bit = std::uint64_t{1} << (i % 64);
  const bool fresh = !(word & bit);
  word |= bit;
  ++live_;
  return {slots(c) + std::size_t{i} * slot_size_, fresh};
}

void SlotArena::put(void* slot) {
  Chunk* c = chunk_of(slot);
  const std::uint32_t i = index_of(c, slot);
  // seq_cst: the retirement, the writer's first half of the Dekker pair in
  // grace.cc (readers()); a reader loads the generation (seq_cst) after its
  // section's count.
  c->generations()[i].fetch_add(1, std::memory_order_seq_cst);
  const std::uint32_t now = coarse_now_ms();
  std::lock_guard guard(lock_);
  free_stack(c)[c->free_count++] = static_cast<std::uint16_t>(i);
  if (c->free_count == 1 && !c->releasing) mark_free(c, true);
  for (std::uint32_t p = first_page(i); p <= last_page(i); ++p) --c->page_live[p];
  c->last_put_ms = now;
  --live_;
}

std::size_t SlotArena::scavenge(std::uint32_t now_ms, std::uint32_t min_idle_ms) {
  struct Release {
    Chunk* chunk;
    std::uint64_t pages;
  };
  std::vector<Release> release;
  {
    std::lock_guard guard(lock_);
    if (grace_.started()) {
      if (!grace_.done()) return 0;
      grace_ = GracePeriod{};
      for (Chunk* c : chunks_) {
        if (!c->pending) continue;
        release.push_back({c, c->pending});
        c->pending = 0;
        c->releasing = true;  // no take() while its pages go
        mark_free(c, false);
      }
    }
  }
  chaos::at(chaos::Point::scavenge);
  std::size_t pages_released = 0;
  for (const Release& r : release) {
    for (std::uint64_t left = r.pages; left;) {
      // One madvise per run of pages.
      const int lo = std::countr_zero(left);
      const int n = std::countr_one(left >> lo);
      if (madvise(slots(r.chunk) + lo * kPage, n * kPage, MADV_DONTNEED) != 0) {
        fatal("slot arena: madvise(MADV_DONTNEED) failed on its own mapping");
      }
      pages_released += static_cast<std::size_t>(n);
      left &= n == 64 ? 0 : ~(((std::uint64_t{1} << n) - 1) << lo);
    }
  }
  std::lock_guard guard(lock_);
  pages_given_back_ += pages_released;
  for (const Release& r : release) {
    Chunk* c = r.chunk;
    c->releasing = false;
    c->resident &= ~r.pages;
    // A slot with any byte on a page given back is built again by its taker.
    for (std::uint32_t i = 0; i < per_chunk_; ++i) {
      if (pages_of(i) & r.pages) constructed(c)[i / 64] &= ~(std::uint64_t{1} << (i % 64));
    }
    if (c->free_count != 0) mark_free(c, true);
  }
  bool any = false;
  for (Chunk* c : chunks_) {
    if (c->releasing || now_ms - c->last_put_ms < min_idle_ms) continue;
    const std::uint64_t idle_pages = c->resident & ~c->pending & ~c->live_pages();
    if (!idle_pages) continue;
    c->pending |= idle_pages;
    any = true;
  }
  if (any) grace_.begin();
  return pages_released;
}

SlotArena::Stats SlotArena::stats() {
  std::lock_guard guard(lock_);
  std::size_t resident = 0;
  for (Chunk* c : chunks_) resident += header_bytes_ + std::popcount(c->resident) * kPage;
  return {chunks_.size(), live_, resident, pages_given_back_};
}

}  // namespace weft::detail
