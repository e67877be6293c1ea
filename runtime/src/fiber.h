// The fiber record and its stack. Internal to the runtime.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "weft/detail/park.h"
#include "weft/runtime.h"

namespace weft::detail {

struct FiberLocalTable;  // weft/fiber_local.h

struct Stack {
  char* lo = nullptr;      // lowest usable byte; the guard (if any) is just below
  std::uint32_t size = 0;  // usable bytes
  bool guarded = false;    // faults below: false only on slabs without guard markers
  bool slab = false;       // carved from a slab: never unmapped, no VMAs of its own
  // Its pages went back while its fiber waited (idle_stack.h): the used part
  // is in the fiber's IdleStack, and goes back before the fiber runs. Only
  // ever set in a parked fiber's record, so a worker's running stack and
  // the pool's never carry it.
  bool given_back = false;
  // Named padding: a Stack is copied as two whole words, not as 14 bytes
  // through overlapping moves that stall store-to-load forwarding.
  std::uint8_t padding = 0;
  char* hi() const { return lo + size; }
};

// The last event a fiber recorded in its record (see Fiber::state).
enum class FiberState : std::uint8_t {
  fresh,    // spawned, and has not parked or yielded since
  parked,   // parked (it may have been readied since)
  yielded,  // yielded: runnable
  dead,     // ended after it had parked or yielded (a fresh one that ended stays fresh)
};

// How a fiber record was allocated, so that it goes back the same way.
enum class RecordKind : std::uint8_t { pooled, heap, heap_aligned };

struct Fiber {
  // The first 64 bytes hold what switching to a fiber reads (Worker::enter
  // and leave, fiber_main): a record is most likely last written on another
  // core, and these span at most the two lines that prefetch_record fetches
  // ahead of the run queue. The rest is written at spawn, park and exit.
  void* sp = nullptr;  // saved stack pointer while switched out
  const Closure* closure = nullptr;
  // Written when the fiber parks or yields (while it runs, its worker holds
  // it; see Worker::running_stack), returned when it ends.
  Stack stack;
  std::uint64_t id = 0;
  // When it was made runnable, for the latency histograms (weft::metrics):
  // set on one ready in 64 and on every poller wake-up, 0 otherwise; read
  // and cleared when it runs (Worker::enter, beside id).
  std::int64_t ready_ns = 0;
  // The runtime that spawned it (Scheduler::gen), with kPinnedBit set while
  // the fiber is pinned: a worker compares run_gen with its own generation
  // before it runs a fiber anyway (a fiber of an earlier runtime is
  // dropped), so a pinned fiber takes that same unlikely branch and costs
  // an unpinned one nothing. generation_of() strips the bit.
  std::uint32_t run_gen = 0;
  std::uint32_t stack_request = 0;
  std::uint16_t closure_offset = 0;  // the closure lives in the same allocation
  RecordKind kind = RecordKind::heap;
  // For dumps, metrics and deadlock reports (registry.h), written where the
  // fiber writes its record anyway: at spawn, and when it parks or yields
  // (beside sp and stack). Never when it merely runs or exits (records.h
  // says why), so `state` is the last of those events, not the present.
  FiberState state = FiberState::fresh;
  // Plain threads that wait get a Fiber record of their own; they sleep on
  // thread_wake instead of switching.
  bool is_thread = false;
  bool ready_from_poller = false;  // ready_ns is a poller wake-up's
  bool stack_kept = false;         // abandoned parked: a LeakSanitizer root (records.cc)
  WaitReason wait_reason = WaitReason::unknown;

  Fiber* next = nullptr;       // link in a ReadyBatch's chain
  const char* name = nullptr;  // a copy of SpawnOptions::name (owned), or null
  // The SpawnSite, flat, so that pinned_home fits where its padding was.
  const char* site_file = nullptr;
  const char* site_function = nullptr;
  std::uint32_t site_line = 0;
  // While pinned (kPinnedBit in run_gen): the worker it runs on, -1 until
  // it first runs when it was spawned pinned from outside the runtime.
  // Written by the fiber itself while it runs (PinToWorker), at spawn, or
  // by the worker that first runs it; read by whoever picks it, after the
  // queue that published it.
  std::int16_t pinned_home = -1;
  // SpawnOptions::swap_idle_stack: an IdleStack (idle_stack.h) follows the
  // record, before the closure. Written at spawn only.
  bool swaps_idle_stack = false;
  // The fiber's FiberLocal values (fiber_local.cc), null until its first
  // get(). Out of the first 64 bytes: no switch reads it, and its end reads
  // it beside `name`, which finish() reads anyway. Cleared with the rest at
  // spawn (new_fiber constructs the record anew) and when the values go.
  FiberLocalTable* locals = nullptr;
  std::uint64_t wait_detail = 0;      // the fd for I/O
  std::uint32_t parked_since_ms = 0;  // coarse_now_ms() when it parked
  std::atomic<std::uint32_t> thread_wake{0};
  // Sanitizer bookkeeping for the switch annotations.
  void* tsan_fiber = nullptr;
  void* asan_fake_stack = nullptr;

  void* closure_storage() { return reinterpret_cast<char*>(this) + closure_offset; }
  SpawnSite spawn_site() const { return {site_file, site_function, site_line}; }
};
static_assert(offsetof(Fiber, wait_reason) < 64, "the switch path's fields fit one 64-byte span");
// Past 144 bytes, a closure over 48 no longer fits the pooled 192-byte
// record (records.h) and each such spawn mallocs.
static_assert(sizeof(Fiber) <= 144, "the record grew: see kPooledRecordSize");

// Set in Fiber::run_gen while the fiber is pinned to a worker.
inline constexpr std::uint32_t kPinnedBit = 0x8000'0000u;

// The runtime generation a fiber belongs to, pinned or not.
inline std::uint32_t generation_of(const Fiber& f) noexcept {
  return f.run_gen & ~kPinnedBit;
}

// `v` in decimal, written into the end of `buf`; async-signal-safe.
inline const char* decimal(std::uint64_t v, char (&buf)[21]) noexcept {
  char* p = buf + sizeof buf;
  *--p = '\0';
  do {
    *--p = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  return p;
}

// How every message names a fiber: `fiber N "name" (created at file.cc:42)`.
// `put` receives the pieces as C strings, so that a fault handler can write
// them without allocating.
template <class Put>
void name_fiber(const Fiber& f, Put&& put) {
  char digits[21];
  put("fiber ");
  put(decimal(f.id, digits));
  if (f.name) {
    put(" \"");
    put(f.name);
    put("\"");
  }
  if (f.site_line != 0) {
    put(" (created at ");
    put(f.site_file);
    put(":");
    put(decimal(f.site_line, digits));
    put(")");
  }
}

}  // namespace weft::detail
