// Fiber records: one allocation holds the record (fiber.h) and the closure
// after it; the scheduler allocates and recycles them. Internal to the
// runtime.
//
// - Records up to kPooledRecordSize bytes are recycled: each worker keeps up
//   to two batches of free records (Worker::free_records, oldest first);
//   beyond that its oldest batch moves to the depot (up to kDepotMaxBatches,
//   then it is freed), and a worker with none takes the depot's oldest back
//   (Go's gfput/gfget). Fibers spawned on one worker and ending on another
//   then recycle records without malloc and without cross-thread frees.
//   Larger or over-aligned records come from and go to the heap.
// - Oldest first, and kept in arrays rather than lists, because those records
//   were last written on another core: the spawner can fetch them several
//   spawns ahead (prefetch_record), and the older they are the more likely
//   they have left that core's own cache.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fiber.h"

namespace weft::detail {

constexpr std::size_t kPooledRecordSize = 192;
constexpr std::uint32_t kRecordBatch = 128;
constexpr std::size_t kDepotMaxBatches = 256;
constexpr std::uint32_t kRecordPrefetch = 4;  // how many spawns ahead of the free list

// Starts fetching the lines of a fiber record's header and of a small
// closure after it: records are most likely last touched on
// another core, and the worker about to use one should not stall on it. On
// x86 with PREFETCHW, for ownership: GCC turns __builtin_prefetch(p, 1) into
// a read prefetch unless told the CPU, and a line the other core still holds
// then stalls the write anyway. PREFETCHW needs no -march flag (cores
// without it treat the opcode as a NOP).
inline void prefetch_record(const void* record) noexcept {
  const char* p = static_cast<const char*>(record);
  // A small closure right after the header: on a third line for a record
  // that starts late in its first.
  const char* closure_end = p + sizeof(Fiber) + 15;
#if defined(__x86_64__)
  asm volatile("prefetchw %0" ::"m"(*p));
  asm volatile("prefetchw %0" ::"m"(*(p + 64)));
  asm volatile("prefetchw %0" ::"m"(*closure_end));
#else
  __builtin_prefetch(p, 1);
  __builtin_prefetch(p + 64, 1);
  __builtin_prefetch(closure_end, 1);
#endif
}

}  // namespace weft::detail
