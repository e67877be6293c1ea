// Fiber records (records.h): allocated at spawn, given back when a fiber is
// not started, reclaimed at teardown. The per-worker halves of recycling,
// Worker::take_record and Worker::finish, are in scheduler.cc (it says why).
#include "records.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <type_traits>

#include "sanitizer.h"
#include "scheduler.h"
#include "scheduler_internal.h"
#include "stack.h"
#include "weft/runtime.h"

namespace weft::detail {

static_assert(std::is_trivially_destructible_v<Fiber>, "records are recycled without destruction");

void free_abandoned(Fiber* f) {
  // Never ran or parked forever: its closure may be mid-call, so only the
  // record and stack are reclaimed, as Go reclaims nothing at exit.
  if (f->stack.lo) {
    san::asan_unpoison_stack(f->stack.lo, f->stack.size);
    release_stack(f->stack);
  }
  san::tsan_destroy(f->tsan_fiber);
  delete_record(f);
}

void free_depot(RecordDepot& depot) {
  while (RecordBatch* batch = depot.head) {
    depot.head = batch->next;
    free_pooled_records(batch->records, kRecordBatch);
    delete batch;
  }
}

Fiber* new_fiber(std::size_t closure_size, std::size_t closure_align, const SpawnOptions& opts,
                 void** closure_storage) {
  if (g_sched.load(std::memory_order_acquire) == nullptr) {
    std::fprintf(stderr, "weft::go: no runtime is running; spawn fibers inside weft::run\n");
    std::abort();
  }
  if (closure_align > 64) {
    std::fprintf(stderr, "weft::go: closures aligned to more than 64 bytes are not supported\n");
    std::abort();
  }
  const std::size_t align = std::max<std::size_t>(closure_align, alignof(Fiber));
  const std::size_t offset = (sizeof(Fiber) + align - 1) / align * align;
  const std::size_t total = offset + closure_size;
  void* mem = nullptr;
  RecordKind kind = RecordKind::heap;
  if (align <= __STDCPP_DEFAULT_NEW_ALIGNMENT__ && total <= kPooledRecordSize) {
    kind = RecordKind::pooled;
    Worker* w = current_worker();
    mem = w ? w->take_record() : nullptr;
    if (!mem) mem = ::operator new(kPooledRecordSize);
  } else if (align <= __STDCPP_DEFAULT_NEW_ALIGNMENT__) {
    mem = ::operator new(total);
  } else {
    kind = RecordKind::heap_aligned;
    mem = ::operator new (total, std::align_val_t{64});
  }
  auto* f = ::new (mem) Fiber();
  f->kind = kind;
  f->stack_request = static_cast<std::uint32_t>(round_stack_size(opts.stack_size));
  f->closure_offset = static_cast<std::uint16_t>(offset);
  *closure_storage = f->closure_storage();
  return f;
}

void free_unstarted_fiber(Fiber* f) noexcept {
  // On top of the free array it most likely came from, so the next spawn
  // reuses it while its lines are still in this core's cache.
  Worker* w = current_worker();
  if (f->kind == RecordKind::pooled && w && w->free_record_count < 2 * kRecordBatch) {
    w->free_records[w->free_record_count++] = f;
    return;
  }
  delete_record(f);
}

}  // namespace weft::detail
