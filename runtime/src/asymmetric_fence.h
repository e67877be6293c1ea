// An asymmetric Dekker fence: for a store-then-load pair whose one side runs
// on every spawn and ready (Idle::wakep) and whose other side runs only when
// a worker goes to sleep (Idle::sleep's last look).
//
// A symmetric pair needs a full fence on both sides (a seq_cst fence: mfence
// or a locked instruction on x86, dmb ish on AArch64). On the hot side that
// fence waits for every store before it to leave the store buffer, and when
// those stores went to lines another core owns (run queue slots, records a
// thief just touched) it costs tens of nanoseconds per spawn. membarrier(2)
// moves that cost to the rare side: light_fence() is a compiler barrier, and
// heavy_fence() makes every thread of this process that is running at that
// moment execute a full barrier (an IPI), while one that is not running
// passed one when it was switched out. Either the light side's load ran
// before that barrier, and then its earlier store is visible to the heavy
// side's loads after heavy_fence(); or it runs after, and then it sees the
// heavy side's store. The pattern is the one membarrier(2) was added for
// (see its man page, and folly's AsymmetricMemoryBarrier).
//
// Where the kernel refuses MEMBARRIER_CMD_PRIVATE_EXPEDITED (older than 4.14,
// a seccomp filter, qemu-user), both sides fall back to seq_cst fences.
#pragma once

#include <atomic>

namespace weft::detail {

// Registers this process for expedited private membarriers, once; later
// calls only return the answer. Called before a runtime's workers start,
// so that the mode never changes while one of them runs a light fence.
bool init_asymmetric_fences();

extern std::atomic<bool> g_membarrier_ready;

// The hot side: after its store, before its load.
inline void light_fence() {
  if (g_membarrier_ready.load(std::memory_order_relaxed)) {
    std::atomic_signal_fence(std::memory_order_seq_cst);
  } else {
    std::atomic_thread_fence(std::memory_order_seq_cst);
  }
}

// The rare side: after its store, before its loads.
void heavy_fence();

}  // namespace weft::detail
