// Fiber stacks: mmap'd, 1 MiB of guard below, committed lazily by the
// kernel, pooled warm. When vm.max_map_count leaves no room for more
// mappings, stacks come from slabs, one mapping for 64, each stack still
// with its 1 MiB guard as guard markers (Linux 6.13); on older kernels
// unguarded, checked at every switch instead.
#pragma once

#include <chrono>
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
// A worker thread's own cache of stacks (the default size and a few others)
// and its live counts:
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
  std::size_t scavenged;       // pooled stacks whose pages were given back, ever
  std::size_t pool_trips;      // spawns and exits that took the shared pool's lock, ever
};
StackStats stack_stats();

// The stack scavenger (sysmon calls it): gives back to the kernel the pages
// of at most `max_stacks` stacks pooled for longer than the scavenge delay
// (5 s), oldest first, so that a process's memory returns after a burst of
// fibers (MADV_DONTNEED: the mapping, its guard and its place in the pool
// stay; the next fiber on it faults fresh zero pages in). Returns how many.
std::size_t scavenge_pooled_stacks(std::size_t max_stacks);
// Every page of `s` back to the kernel (MADV_DONTNEED), for the scavenger
// and for idle stacks (idle_stack.h).
void give_back_stack_pages(const Stack& s);
void set_stack_scavenge_delay(std::chrono::milliseconds delay);  // for tests
// Unmaps pooled stacks whose pages were given back, but `keep` of each size
// (and every slab stack), so that a burst's stacks give back their mappings
// too: sysmon calls it once every worker sleeps. Returns how many.
std::size_t unmap_cold_stacks(std::size_t keep);
// Whether slab stacks get their guard as guard markers on this kernel.
bool slab_stacks_guarded();
// A worker about to sleep for a while hands its cached stacks to the pool,
// where the scavenger can reach them (it cannot reach a worker's cache).
void spill_stack_cache();
bool stacks_cached();  // whether this thread's cache holds any
// Caps guarded stacks below what vm.max_map_count allows (0 restores the
// default); lets tests reach the slab fallback cheaply.
void set_guarded_stack_budget(std::size_t stacks);

}  // namespace weft::detail
