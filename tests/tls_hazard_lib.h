// The TLS hazard's specimens (tls_hazard_test.cc): code built -fPIC -O2 in a
// shared library of its own, so that its thread_locals use the general- and
// local-dynamic models, as in libweft.so or a user's shared library.
#pragma once

namespace weft_tls_hazard {

// What one specimen read of its thread's tag before and after the call
// that may move the fiber to another thread.
struct Reads {
  long before;
  long after;
};
using Migrate = void (*)(void* arg);

// Sets the calling thread's tags (every specimen's) to its tid. `migrate`
// calls it once resumed, so that the thread it resumed on has its own.
void stamp_this_thread();

// Read the tag, call migrate(arg), read it again, written naively: the
// compiler may keep the variable's address across the call.
Reads naive_global_dynamic(Migrate migrate, void* arg);  // an extern thread_local
Reads naive_local_dynamic(Migrate migrate, void* arg);   // a static thread_local
// The same, every read through a noinline accessor in another file.
Reads through_accessor(Migrate migrate, void* arg);

// The accessor (tls_hazard_access.cc).
__attribute__((noinline)) long read_tag_fresh();

}  // namespace weft_tls_hazard
