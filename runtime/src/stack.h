// Fiber stacks: mmap'd, 1 MiB of guard below, committed lazily by the
// kernel, pooled warm. When vm.max_map_count leaves no room for more
// mappings, stacks come from slabs, one mapping for 64, each stack still
// with its 1 MiB guard as guard markers (Linux 6.13); on older kernels
// unguarded, checked at every switch instead.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fiber.h"

namespace weft::detail {

constexpr std::size_t kDefaultStackSize = std::size_t{64} * 1024;

std::size_t round_stack_size(std::size_t requested);
// Into *out (a record's field): returning the 16-byte Stack by value made
// GCC reassemble it from its fields through the stack, a store-forwarding
// stall on every spawn.
void acquire_stack(std::size_t usable, Stack* out);
void release_stack(const Stack& s);
// A worker thread's own cache of default-size stacks and its live counts:
// attached when it starts, given back to the shared pool when it stops.
// Other threads use the shared pool directly.
void attach_stack_cache();
void detach_stack_cache();
// A switched-out fiber whose saved stack pointer left its stack overflowed;
// the only check an unguarded stack gets.
bool saved_sp_in_bounds(const Fiber* f);

// SIGSEGV/SIGBUS handler: a fault in the guard below the running fiber's
// stack is its overflow; any other fault while a fiber runs names the fiber
// before the signal's default action (unless an earlier handler takes it).
void install_overflow_handler();
// Each thread that runs fibers needs an alternate signal stack for it.
void* enter_signal_stack();
void leave_signal_stack(void* handle);
[[noreturn]] void report_overflow(const Fiber* fiber, const Stack& stack, const char* how);

struct StackStats {
  std::size_t mapped_live;  // a mapping (and a guard VMA) of their own
  std::size_t slab_live;    // carved from slabs
  std::size_t pooled;
  std::size_t guarded_mapped;  // live or pooled: what vm.max_map_count limits
};
StackStats stack_stats();
// Caps guarded stacks below what vm.max_map_count allows (0 restores the
// default); lets tests reach the slab fallback cheaply.
void set_guarded_stack_budget(std::size_t stacks);

}  // namespace weft::detail
