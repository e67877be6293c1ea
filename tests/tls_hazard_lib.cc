// The naive specimens of the TLS hazard (tls_hazard_lib.h): built -fPIC -O2
// into a shared library, where a thread_local's address comes from
// __tls_get_addr (general-dynamic) or from the module's TLS block
// (local-dynamic), and the compiler treats that address as constant within
// a function, so it may compute it once and reuse it after a call that
// resumed on another thread.
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

#include "tls_hazard_lib.h"

namespace weft_tls_hazard {

// Atomic (relaxed) only so that reading another thread's instance, which
// is the hazard itself, is not also a data race for TSan.
extern thread_local std::atomic<long> global_tag;
thread_local std::atomic<long> global_tag{0};
namespace {
thread_local std::atomic<long> local_tag{0};
}  // namespace

void stamp_this_thread() {
  const long tid = syscall(SYS_gettid);
  global_tag.store(tid, std::memory_order_relaxed);
  local_tag.store(tid, std::memory_order_relaxed);
}

Reads naive_global_dynamic(Migrate migrate, void* arg) {
  const long before = global_tag.load(std::memory_order_relaxed);
  migrate(arg);
  return {before, global_tag.load(std::memory_order_relaxed)};
}

Reads naive_local_dynamic(Migrate migrate, void* arg) {
  const long before = local_tag.load(std::memory_order_relaxed);
  migrate(arg);
  return {before, local_tag.load(std::memory_order_relaxed)};
}

Reads through_accessor(Migrate migrate, void* arg) {
  const long before = read_tag_fresh();
  migrate(arg);
  return {before, read_tag_fresh()};
}

}  // namespace weft_tls_hazard
