// The safe pattern's accessor (tls_hazard_lib.h): in a file of its own and
// never inlined, so each call computes the address on the thread it runs on.
#include <atomic>

#include "tls_hazard_lib.h"

namespace weft_tls_hazard {

extern thread_local std::atomic<long> global_tag;

__attribute__((noinline)) long read_tag_fresh() {
  return global_tag.load(std::memory_order_relaxed);
}

}  // namespace weft_tls_hazard
