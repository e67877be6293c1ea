#include "asymmetric_fence.h"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <mutex>

namespace weft::detail {

std::atomic<bool> g_membarrier_ready{false};

namespace {

long membarrier(int cmd) {
  return syscall(SYS_membarrier, cmd, 0U, 0);
}

}  // namespace

bool init_asymmetric_fences() {
  static std::once_flag once;
  std::call_once(once, [] {
    const long supported = membarrier(MEMBARRIER_CMD_QUERY);
    if (supported < 0 || !(supported & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return;
    if (membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) != 0) return;
    // relaxed: the threads that read it start after this (thread creation
    // orders it), or run no light fence that pairs with a runtime's sleeper.
    g_membarrier_ready.store(true, std::memory_order_relaxed);
  });
  return g_membarrier_ready.load(std::memory_order_relaxed);
}

void heavy_fence() {
  if (g_membarrier_ready.load(std::memory_order_relaxed) &&
      membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) {
    return;
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
}

}  // namespace weft::detail
