// Fiber records: one allocation holds the record (fiber.h) and the closure
// after it. Internal to the runtime. records.cc allocates them (new_fiber)
// and reclaims them at teardown; the per-worker halves of recycling,
// Worker::take_record and Worker::finish, are in scheduler.cc, beside the
// spin_backoff() they inline.
//
// - Records up to kPooledRecordSize bytes are recycled: each worker keeps up
//   to two batches of free records (Worker::free_records, oldest first);
//   beyond that its oldest batch moves to the depot (up to kDepotMaxBatches,
//   then it is freed), and a worker with none takes the depot's oldest back
//   (Go's gfput/gfget). Fibers spawned on one worker and ending on another
//   then recycle records without malloc and without cross-thread frees.
//   Larger or over-aligned records come from and go to the heap.
// - The depot holds as many records as a large burst of fibers left (Go
//   keeps every g it ever made): a program that spawns a million fibers
//   again and again reuses them instead of a million mallocs and frees each
//   time. sysmon gives back what a burst left once nobody needs it: each
//   round, half of what the depot never went below since the last round
//   (beyond kDepotSteadyBatches), and all of it once every worker sleeps
//   (a sleeping worker frees its own free array, once a second at most).
// - Oldest first, and kept in arrays rather than lists, because those records
//   were last written on another core: the spawner can fetch them several
//   spawns ahead (prefetch_record), and the older they are the more likely
//   they have left that core's own cache.
// - The depot is shared, under its lock; a worker's free array is its
//   owner's alone (and teardown's, once the workers stopped).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>

#include "fiber.h"
#include "prefetch.h"
#include "registry.h"
#include "weft/detail/spinlock.h"

namespace weft::detail {

constexpr std::size_t kPooledRecordSize = 192;
constexpr std::uint32_t kRecordBatch = 128;
constexpr std::size_t kDepotMaxBatches = 8192;    // a million records, about 240 MB
constexpr std::size_t kDepotSteadyBatches = 256;  // kept while busy, however long unused
constexpr std::uint32_t kRecordPrefetch = 4;      // how many spawns ahead of the free list

// Starts fetching every line of a fiber record and of a small closure after
// it (the Fiber spans three lines, and its switch-path fields two): records
// are most likely last touched on another core, and the worker about to use
// one should not stall on it.
inline void prefetch_record(const void* record) noexcept {
  const char* p = static_cast<const char*>(record);
  prefetch_lines_for_write(p, p + sizeof(Fiber) + 15);
}

// Free fiber-record batches, oldest at the head, all under `lock`.
struct RecordBatch {
  RecordBatch* next = nullptr;
  Fiber* records[kRecordBatch];
};
struct RecordDepot {
  SpinLock lock;
  RecordBatch* head = nullptr;
  RecordBatch* tail = nullptr;
  std::size_t batches = 0;
  std::size_t low_water = 0;                   // the fewest batches since sysmon's last trim
  std::size_t max_batches = kDepotMaxBatches;  // record_depot_cap() at the runtime's start
};

// Every record's allocation starts with its registry links (registry.h),
// then the Fiber, then the closure. The links take a whole alignment unit,
// so that the Fiber keeps the allocation's alignment.
inline std::size_t links_room(RecordKind kind) noexcept {
  return kind == RecordKind::heap_aligned ? 64 : 32;
}
static_assert(sizeof(RecordLinks) <= 32);
inline RecordLinks* links_of(Fiber* f) noexcept {
  return reinterpret_cast<RecordLinks*>(reinterpret_cast<char*>(f) - links_room(f->kind));
}

// A record's memory with its links set and registered; for pooled records,
// kPooledRecordSize bytes from the Fiber on. Its Fiber is constructed (so
// that a registry reader finds a record of no runtime, run_gen 0, in it).
Fiber* allocate_record(RecordKind kind, std::size_t size);

inline void free_pooled_records(Fiber* const* records, std::size_t n) {
  fiber_registry().remove_batch(records, n, &links_of);
  for (std::size_t i = 0; i < n; ++i) ::operator delete(links_of(records[i]));
}

inline void delete_record(Fiber* f) {
  RecordLinks* links = links_of(f);
  fiber_registry().remove(links);
  const RecordKind kind = f->kind;
  f->~Fiber();
  if (kind == RecordKind::heap_aligned) {
    ::operator delete (links, std::align_val_t{64});
  } else {
    ::operator delete(links);
  }
}

// A fiber dropped for good (a late completion of an abandoned one, or one
// teardown found never ran) loses its record and stack, not its closure.
void free_abandoned(Fiber* f);
// For teardown: the fibers of runtime `gen` that have run and not ended
// (parked, or runnable again; abandoned, as Go abandons goroutines) keep
// their stacks and records: they are mid-call, and unwinding them would run
// their destructors through noexcept frames and wait primitives that were
// never written to be left that way. A late completion reclaims a parked one
// (drop_late_ready); until then their stacks are LeakSanitizer roots, for
// what their frames hold is still referenced.
void keep_abandoned_started(std::uint32_t gen);
// For teardown, with every worker stopped and the runtime pointer cleared: a
// fiber found in a run queue. One that never ran has its closure destroyed
// (what it captured is released, as Tokio drops a task that never ran) and
// is freed; one that ran is kept (keep_abandoned_started).
void abandon_runnable(Fiber* f);
// A fiber's name goes when the fiber does (its record may stay, recycled).
void free_fiber_name(Fiber* f) noexcept;

// sysmon's watchdog names the fiber that holds another worker (its id, name
// and spawn site), and a dump reads the fibers that run on workers it could
// not stop; such a fiber may end meanwhile, its record then reused or freed
// and its name freed. The reader marks the record it reads (one mark at a
// time: a mutex makes the second reader wait) if it is still the one
// running there, and every fiber that ran waits at its end
// (Worker::finish) until its record is unmarked.
// Memory orders: the mark, then membarrier(2) (a full barrier on every
// thread of the process), then the load of `running`, against a switch's
// store of `running` and, later on the same thread, finish's load of the
// mark: one of them sees the other. The barrier is the rare side's (a
// report); the fiber's end pays one load. Without membarrier (a kernel
// older than 4.14, or a filter that forbids it) reports name no fiber.
bool mark_running_fiber(const std::atomic<const Fiber*>& running, const Fiber* f) noexcept;
void unmark_running_fiber() noexcept;
extern std::atomic<const Fiber*> g_running_fiber_mark;
inline void wait_until_unmarked(const Fiber* f) noexcept {
  std::atomic_signal_fence(std::memory_order_seq_cst);  // the membarrier's partner
  while (g_running_fiber_mark.load(std::memory_order_acquire) == f) cpu_relax();
}
// For tests: a pause between marking and reading, as a slow reader's.
void set_name_read_pause(std::chrono::microseconds pause);
void free_depot(RecordDepot& depot);
// For tests: the depot's capacity in batches for runtimes started from now
// on; zero restores kDepotMaxBatches.
void set_record_depot_cap(std::size_t batches);
std::size_t record_depot_cap();
// Records allocated so far in this process (not reused): for tests.
std::uint64_t records_allocated();
// Frees the depot's oldest batches beyond `keep` (sysmon, after a burst).
void trim_depot(RecordDepot& depot, std::size_t keep);
// Frees half the batches that stayed unused in the depot since the last
// call, beyond kDepotSteadyBatches (sysmon, while workers run).
void trim_unused_depot(RecordDepot& depot);

}  // namespace weft::detail
