// The fiber record and its stack. Internal to the runtime.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "weft/runtime.h"

namespace weft::detail {

struct Stack {
  char* lo = nullptr;       // lowest usable byte; the guard page (if any) is just below
  std::size_t size = 0;     // usable bytes
  bool guarded = false;     // false: carved from a slab, overflow found by the canary
  char* hi() const { return lo + size; }
};

struct Fiber {
  void* sp = nullptr;       // saved stack pointer while switched out
  Fiber* next = nullptr;    // link in the global run queue
  const Closure* closure = nullptr;
  void* closure_storage = nullptr;
  Stack stack;              // assigned when the fiber first runs, returned when it ends
  std::size_t stack_request = 0;
  std::uint64_t id = 0;
  // Plain threads that wait get a Fiber record of their own; they sleep on
  // this futex word instead of switching.
  bool is_thread = false;
  std::atomic<std::uint32_t> thread_wake{0};
  // Sanitizer bookkeeping for the switch annotations.
  void* tsan_fiber = nullptr;
  void* asan_fake_stack = nullptr;
};

} // namespace weft::detail
