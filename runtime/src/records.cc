// Fiber records (records.h): allocated at spawn, given back when a fiber is
// not started, reclaimed at teardown. The per-worker halves of recycling,
// Worker::take_record and Worker::finish, are in scheduler.cc (it says why).
#include "records.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <thread>
#include <type_traits>

#include "chaos.h"
#include "idle_stack.h"
#include "sanitizer.h"
#include "scheduler.h"
#include "scheduler_internal.h"
#include "stack.h"
#include "weft/runtime.h"

namespace weft::detail {

static_assert(std::is_trivially_destructible_v<Fiber>, "records are recycled without destruction");

void free_fiber_name(Fiber* f) noexcept {
  std::free(const_cast<char*>(f->name));
  f->name = nullptr;
}

std::atomic<const Fiber*> g_running_fiber_mark{nullptr};

namespace {

std::atomic<std::int64_t> name_read_pause_us{0};  // set_name_read_pause

// The mark is one word, and two threads mark: sysmon's watchdog and a dump
// (dump.cc), which reads the fibers running on workers it could not stop.
// Held from the mark to the unmark, so that one's unmark never clears the
// other's mark while it reads.
std::mutex mark_mu;

// membarrier(2)'s private expedited barrier, registered on first use; false
// where the kernel or a seccomp filter refuses it.
bool barrier_on_every_thread() noexcept {
  static const bool registered =
      syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
  return registered && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0;
}

}  // namespace

void set_name_read_pause(std::chrono::microseconds pause) {
  name_read_pause_us.store(pause.count(), std::memory_order_relaxed);
}

bool mark_running_fiber(const std::atomic<const Fiber*>& running, const Fiber* f) noexcept {
  mark_mu.lock();  // unmark_running_fiber unlocks
  g_running_fiber_mark.store(f, std::memory_order_relaxed);
  // Pairs with the signal fence in wait_until_unmarked (records.h).
  if (!barrier_on_every_thread()) {
    unmark_running_fiber();
    return false;
  }
  // acquire: what spawned the fiber (its name) happens before we read it.
  if (running.load(std::memory_order_acquire) == f) {
    chaos::at(chaos::Point::name_read);
    if (const std::int64_t pause = name_read_pause_us.load(std::memory_order_relaxed)) {
      std::this_thread::sleep_for(std::chrono::microseconds(pause));
    }
    return true;
  }
  unmark_running_fiber();
  return false;
}

void unmark_running_fiber() noexcept {
  // release: our reads of the record happen before it is reused or freed.
  g_running_fiber_mark.store(nullptr, std::memory_order_release);
  mark_mu.unlock();
}

void keep_abandoned_started(std::uint32_t gen) {
  fiber_registry().for_each([gen](Fiber* f) {
    if (generation_of(*f) != gen || f->is_thread || f->state == FiberState::fresh ||
        f->state == FiberState::dead || !f->stack.lo) {
      return;
    }
    // Its stack as it left it, pointers and all (sysmon has stopped).
    if (f->swaps_idle_stack) {
      forget_idle_stack(f);
      if (f->stack.given_back) take_back_stack(f);
    }
    san::lsan_keep_stack(f->stack.lo, f->stack.size);
    f->stack_kept = true;
  });
}

void free_abandoned(Fiber* f) {
  free_fiber_name(f);
  // Not destroyed here: a late ready may run under its caller's lock, where a
  // user destructor could deadlock.
  if (f->locals) orphan_fiber_locals(f);
  if (f->stack_kept) {
    san::lsan_forget_stack(f->stack.lo, f->stack.size);
    f->stack_kept = false;
  }
  if (f->stack.lo) {
    san::asan_unpoison_stack(f->stack.lo, f->stack.size);
    release_stack(f->stack);
  }
  san::tsan_destroy(f->tsan_fiber);
  delete_record(f);
}

void abandon_runnable(Fiber* f) {
  if (f->state != FiberState::fresh) return;  // kept: it is mid-call
  // Its destructors run here, on the thread that called weft::run, after
  // the runtime is gone: what they do with weft takes the late-use paths.
  if (f->closure && f->closure->destroy) f->closure->destroy(f->closure_storage());
  free_abandoned(f);
}

namespace {

std::atomic<std::size_t> depot_cap{0};  // set_record_depot_cap; 0: kDepotMaxBatches
std::atomic<std::uint64_t> allocated{0};

// Takes the `n` oldest batches off the depot, the caller holding its lock.
RecordBatch* take_oldest(RecordDepot& depot, std::size_t n) {
  RecordBatch* surplus = nullptr;
  for (; n != 0 && depot.head; --n) {
    RecordBatch* batch = depot.head;
    depot.head = batch->next;
    if (!depot.head) depot.tail = nullptr;
    --depot.batches;
    batch->next = surplus;
    surplus = batch;
  }
  depot.low_water = depot.batches;
  return surplus;
}

void free_batches(RecordBatch* surplus) {
  while (RecordBatch* batch = surplus) {
    surplus = batch->next;
    free_pooled_records(batch->records, kRecordBatch);
    delete batch;
  }
}

}  // namespace

void set_record_depot_cap(std::size_t batches) {
  depot_cap.store(batches, std::memory_order_relaxed);
}

std::size_t record_depot_cap() {
  const std::size_t cap = depot_cap.load(std::memory_order_relaxed);
  return cap != 0 ? cap : kDepotMaxBatches;
}

std::uint64_t records_allocated() {
  return allocated.load(std::memory_order_relaxed);
}

void trim_depot(RecordDepot& depot, std::size_t keep) {
  RecordBatch* surplus = nullptr;
  {
    std::lock_guard lock(depot.lock);
    if (depot.batches > keep) surplus = take_oldest(depot, depot.batches - keep);
  }
  free_batches(surplus);
}

void trim_unused_depot(RecordDepot& depot) {
  RecordBatch* surplus = nullptr;
  {
    std::lock_guard lock(depot.lock);
    const std::size_t unused = std::min(depot.low_water, depot.batches);
    const std::size_t excess = unused > kDepotSteadyBatches ? unused - kDepotSteadyBatches : 0;
    surplus = take_oldest(depot, (excess + 1) / 2);
  }
  free_batches(surplus);
}

void free_depot(RecordDepot& depot) {
  free_batches(take_oldest(depot, depot.batches));
}

Fiber* allocate_record(RecordKind kind, std::size_t size) {
  const std::size_t room = links_room(kind);
  void* mem = kind == RecordKind::heap_aligned ? ::operator new (room + size, std::align_val_t{64})
                                               : ::operator new(room + size);
  allocated.fetch_add(1, std::memory_order_relaxed);
  auto* links = ::new (mem) RecordLinks();
  auto* f = ::new (static_cast<char*>(mem) + room) Fiber();
  f->kind = kind;
  links->fiber = f;
  fiber_registry().add(links);
  return f;
}

Fiber* new_fiber(std::size_t closure_size, std::size_t closure_align, const SpawnOptions& opts,
                 const SpawnSite& site, void** closure_storage) {
  if (g_sched.load(std::memory_order_acquire) == nullptr) {
    std::fprintf(stderr, "weft::go: no runtime is running; spawn fibers inside weft::run\n");
    std::abort();
  }
  if (closure_align > 64) {
    std::fprintf(stderr, "weft::go: closures aligned to more than 64 bytes are not supported\n");
    std::abort();
  }
  const std::size_t align = std::max<std::size_t>(closure_align, alignof(Fiber));
  // A fiber that may give its stack back keeps its IdleStack between the
  // record and the closure (idle_stack_of).
  const std::size_t head = sizeof(Fiber) + (opts.swap_idle_stack ? sizeof(IdleStack) : 0);
  const std::size_t offset = (head + align - 1) / align * align;
  const std::size_t total = offset + closure_size;
  Fiber* f = nullptr;
  RecordKind kind = RecordKind::heap;
  if (align <= __STDCPP_DEFAULT_NEW_ALIGNMENT__ && total <= kPooledRecordSize) {
    kind = RecordKind::pooled;
    Worker* w = current_worker();
    f = w ? w->take_record() : nullptr;
    if (!f) f = allocate_record(kind, kPooledRecordSize);
  } else {
    if (align > __STDCPP_DEFAULT_NEW_ALIGNMENT__) kind = RecordKind::heap_aligned;
    f = allocate_record(kind, total);
  }
  ::new (f) Fiber();
  f->kind = kind;
  f->site_file = site.file;
  f->site_function = site.function;
  f->site_line = site.line;
  if (!opts.name.empty()) f->name = strndup(opts.name.data(), opts.name.size());
  f->stack_request = static_cast<std::uint32_t>(round_stack_size(opts.stack_size));
  if (opts.pinned) f->run_gen = kPinnedBit;  // start_fiber adds the generation
  if (opts.swap_idle_stack) {
    f->swaps_idle_stack = true;
    ::new (idle_stack_of(f)) IdleStack();
  }
  f->closure_offset = static_cast<std::uint16_t>(offset);
  *closure_storage = f->closure_storage();
  return f;
}

void free_unstarted_fiber(Fiber* f) noexcept {
  free_fiber_name(f);
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
