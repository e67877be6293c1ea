// The fiber record and its stack. Internal to the runtime.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "weft/runtime.h"

namespace weft::detail {

struct Stack {
  char* lo = nullptr;      // lowest usable byte; the guard (if any) is just below
  std::uint32_t size = 0;  // usable bytes
  bool guarded = false;    // false: carved from a slab, overflow caught at switches
  // Named padding: a Stack is copied as two whole words, not as 13 bytes
  // through overlapping moves that stall store-to-load forwarding.
  std::uint8_t padding[3] = {};
  char* hi() const { return lo + size; }
};

// How a fiber record was allocated, so that it goes back the same way.
enum class RecordKind : std::uint8_t { pooled, heap, heap_aligned };

struct Fiber {
  void* sp = nullptr;     // saved stack pointer while switched out
  Fiber* next = nullptr;  // link in a ReadyBatch's chain
  const Closure* closure = nullptr;
  // Written when the fiber parks or yields (while it runs, its worker holds
  // it; see Worker::running_stack), returned when it ends.
  Stack stack;
  std::uint64_t id = 0;
  std::uint32_t run_gen = 0;  // the runtime that spawned it (Scheduler::gen)
  std::uint32_t stack_request = 0;
  std::uint16_t closure_offset = 0;  // the closure lives in the same allocation
  RecordKind kind = RecordKind::heap;
  // Plain threads that wait get a Fiber record of their own; they sleep on
  // this futex word instead of switching.
  bool is_thread = false;
  std::atomic<std::uint32_t> thread_wake{0};
  // Sanitizer bookkeeping for the switch annotations.
  void* tsan_fiber = nullptr;
  void* asan_fake_stack = nullptr;

  void* closure_storage() { return reinterpret_cast<char*>(this) + closure_offset; }
};

}  // namespace weft::detail
