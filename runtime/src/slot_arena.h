// Type-stable slots in chunks that go back to the kernel whole: the storage
// of PollDescs, which a late poller event may still name after its desc was
// freed (Go's pollcache keeps such descs forever; issue 12 wants the memory
// of a burst of connections back).
//
// Invariants:
// 1. A chunk is mapped once and never unmapped: a stale pointer into it can
//    always be read, and a chunk given back reads as zeroes.
// 2. Everything about a slot but its contents lives in the chunk's header,
//    which is never given back: the slot's generation, the free list, which
//    slots hold a constructed object. put() bumps the generation (seq_cst:
//    the retirement of grace.h); a reader checks it, inside a GraceSection,
//    before it touches the slot.
// 3. A page of slots is given back (MADV_DONTNEED) only when every slot
//    that overlaps it was put, the last put in its chunk was at least
//    `min_idle` ago, and they stayed free through a whole grace period; a
//    take() of one of them meanwhile calls the page's release off. So a
//    chunk that a long-lived socket keeps (the listener's) still gives back
//    all its other pages.
// 4. A slot that overlaps a page given back is handed out as `fresh`: its
//    taker constructs it again. No reader can reach it then (3).
// 5. take() uses the first chunk with a free slot, in the order chunks were
//    mapped, so that live slots gather in the early chunks and later ones
//    empty out.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "grace.h"
#include "weft/detail/spinlock.h"

namespace weft::detail {

struct SlotArenaStats {
  std::size_t chunks;            // mapped, ever
  std::size_t live;              // slots taken and not put
  std::size_t resident_bytes;    // at most: headers, and slot pages touched since given back
  std::size_t pages_given_back;  // ever
};

class SlotArena {
 public:
  explicit SlotArena(std::size_t slot_size);
  SlotArena(const SlotArena&) = delete;
  SlotArena& operator=(const SlotArena&) = delete;

  struct Slot {
    void* at;    // nullptr: no memory for another chunk
    bool fresh;  // holds no object: construct one
  };
  Slot take();
  void put(void* slot);
  // The slot's generation: put() bumps it; readers compare it (seq_cst).
  std::atomic<std::uint32_t>& generation(const void* slot) const;

  // One step of giving pages back (sysmon's scavenge rounds): marks the
  // pages whose slots were all put `min_idle_ms` ago and begins a grace
  // period for them; once it is over, gives back those still untouched.
  // Returns how many pages this call gave back.
  std::size_t scavenge(std::uint32_t now_ms, std::uint32_t min_idle_ms);

  using Stats = SlotArenaStats;
  Stats stats();

 private:
  struct Chunk;
  Chunk* map_chunk();
  static Chunk* chunk_of(const void* slot);
  char* slots(Chunk* c) const;
  std::uint16_t* free_stack(Chunk* c) const;
  std::uint64_t* constructed(Chunk* c) const;
  std::uint32_t index_of(const Chunk* c, const void* slot) const;
  std::uint32_t first_page(std::uint32_t i) const;  // pages from the first slot's
  std::uint32_t last_page(std::uint32_t i) const;
  std::uint64_t pages_of(std::uint32_t i) const;
  void mark_free(Chunk* c, bool has_free);  // whether take() may use it

  const std::size_t slot_size_;
  std::size_t header_bytes_ = 0;  // whole pages
  std::uint32_t per_chunk_ = 0;

  SpinLock lock_;  // guards everything below and every chunk's header but generations
  std::vector<Chunk*> chunks_;
  std::vector<std::uint64_t> has_free_;  // a bit per chunk, by index
  std::size_t live_ = 0;
  std::size_t pages_given_back_ = 0;
  GracePeriod grace_;
};

}  // namespace weft::detail
