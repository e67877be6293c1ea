// Seeing inside a running program.
#pragma once

#include <cstdio>

namespace weft {

// Writes every fiber of the running runtime to `out`, as Go's goroutine
// dump: grouped by state (running, runnable, parked) and wait reason (chan
// receive, Mutex.lock, sleep, IO wait with the fd and the socket's
// addresses, ...), each with its id, name (SpawnOptions::name), how long it
// has been parked, its stack (symbolized; file and line where the library
// was built with libdw and the code has debug info) and where it was
// spawned. The world stops meanwhile: each worker stops at its next
// scheduling point, and one running a fiber that does not park or yield
// within 100 ms is left running (that fiber is listed without a stack).
// Callable from fibers and threads; SIGQUIT writes one to stderr and exits
// with status 2, as Go (WEFT_TRACEBACK=none writes no fibers).
void dump_fibers(std::FILE* out);

}  // namespace weft
