#include "registry.h"

#include <atomic>
#include <mutex>

#include "timer.h"

namespace weft::detail {

namespace {
std::atomic<std::uint32_t> g_coarse_ms{0};
}  // namespace

FiberRegistry& fiber_registry() noexcept {
  // Never destroyed: records may be freed (and leave it) during static
  // destruction, by a runtime torn down from a static object's destructor.
  static auto* registry = new FiberRegistry;
  return *registry;
}

void FiberRegistry::add(RecordLinks* links) noexcept {
  std::lock_guard lock(lock_);
  links->prev = &head_;
  links->next = head_.next;
  head_.next->prev = links;
  head_.next = links;
}

void FiberRegistry::remove(RecordLinks* links) noexcept {
  std::lock_guard lock(lock_);
  unlink(links);
}

const char* wait_reason_text(WaitReason r) noexcept {
  switch (r) {
    case WaitReason::unknown:
      return "parked";
    case WaitReason::chan_send:
      return "chan send";
    case WaitReason::chan_receive:
      return "chan receive";
    case WaitReason::chan_receive_nil:
      return "chan receive (nil chan)";
    case WaitReason::select:
      return "select";
    case WaitReason::select_no_cases:
      return "select (no cases)";
    case WaitReason::mutex_lock:
      return "Mutex.lock";
    case WaitReason::cond_wait:
      return "CondVar.wait";
    case WaitReason::wait_group:
      return "WaitGroup.wait";
    case WaitReason::sleep:
      return "sleep";
    case WaitReason::io_read:
      return "IO wait (read)";
    case WaitReason::io_write:
      return "IO wait (write)";
    case WaitReason::blocking:
      return "blocking call";
    case WaitReason::context_done:
      return "context done";
    case WaitReason::rwmutex_lock:
      return "RWMutex.lock";
    case WaitReason::rwmutex_lock_shared:
      return "RWMutex.lock_shared";
    case WaitReason::semaphore_acquire:
      return "Semaphore.acquire";
  }
  return "parked";
}

std::uint32_t coarse_now_ms() noexcept {
  return g_coarse_ms.load(std::memory_order_relaxed);
}

void advance_coarse_clock() noexcept {
  // relaxed: a display value; nothing is ordered by it.
  g_coarse_ms.store(static_cast<std::uint32_t>(mono_now_ns() / 1'000'000),
                    std::memory_order_relaxed);
}

}  // namespace weft::detail
