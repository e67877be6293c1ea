// Prefetching a line this thread is about to write, most likely last written
// on another core (a fiber record, a context node a parked fiber made).
//
// On x86 with PREFETCHW, for ownership: GCC turns __builtin_prefetch(p, 1)
// into a read prefetch unless told the CPU, and a line the other core still
// holds then stalls the write anyway. PREFETCHW needs no -march flag (cores
// without it treat the opcode as a NOP). A prefetch never faults, so it may
// name memory that is gone or was never mapped.
#pragma once

namespace weft::detail {

inline void prefetch_for_write(const void* p) noexcept {
#if defined(__x86_64__)
  asm volatile("prefetchw %0" ::"m"(*static_cast<const char*>(p)));
#else
  __builtin_prefetch(p, 1);
#endif
}

// Every line that [from, to] touches.
inline void prefetch_lines_for_write(const void* from, const void* to) noexcept {
  const char* last = static_cast<const char*>(to);
  for (const char* line = static_cast<const char*>(from); line < last; line += 64) {
    prefetch_for_write(line);
  }
  prefetch_for_write(last);
}

}  // namespace weft::detail
