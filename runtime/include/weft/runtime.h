// The fiber runtime: weft::run starts the workers, weft::go spawns fibers.
#pragma once

#include "weft/detail/cxx20.h"
#include "weft/detail/park.h"

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <new>
#include <optional>
#include <string_view>
#include <type_traits>
#include <utility>

namespace weft {

struct RunOptions {
  // Worker threads. 0 means the WEFT_PROCS environment variable, or else the
  // number of CPUs this process may run on.
  int workers = 0;
  // When every fiber waits for something nothing can bring (no timer, no
  // socket, no blocking job, and no thread outside the runtime has called
  // into it), print "all fibers are asleep - deadlock!" with a fiber dump
  // and exit with status 2, as Go. Turn it off where threads the runtime
  // does not know of may call in later (a runtime embedded in a larger
  // program): the first such call turns it off by itself, but one that has
  // not happened yet cannot be foreseen.
  bool detect_deadlocks = true;
};

struct SpawnOptions {
  // Usable stack bytes, rounded up to whole pages; 1 MiB that faults sits
  // below (address space only), so an overflow is reported, not silent.
  std::size_t stack_size = std::size_t{64} * 1024;
  // Names the fiber in dumps and in every message about it (copied; empty:
  // none). Costs an allocation per spawn, so name long-lived fibers.
  std::string_view name{};
  // Runs the fiber only on the worker that spawned it (from outside the
  // runtime: the worker that first runs it), for its whole life, so that
  // thread_local state it keeps across parks stays its thread's. See
  // PinToWorker for what pinning costs.
  bool pinned = false;
  // Lets the runtime give this fiber's stack pages back to the kernel while
  // it has waited on a socket (a read or write that parked) for longer than
  // WEFT_IDLE_STACK_MS (default 1000): the part of the stack in use, often
  // under 2 KiB, is copied aside, and copied back before the fiber runs
  // again. Its stack keeps its addresses, but while it is given back its
  // contents are not there: opt in only for a fiber whose locals no other
  // fiber or thread reads or writes while it waits on a socket (a
  // connection's handler, say). The runtime's own waits keep nothing
  // there that others use. For servers with many idle connections: an idle
  // connection then holds about 2 KiB instead of a page of stack.
  bool swap_idle_stack = false;
};

namespace detail {
struct Fiber;
// Where go() was called, for dumps and fault reports. Not
// std::source_location: libstdc++ 12 defines that only for compilers with
// __builtin_source_location, which Clang 14 lacks; these builtins, as
// default arguments, take the caller's location in both GCC and Clang.
struct SpawnSite {
  const char* file = nullptr;
  const char* function = nullptr;
  unsigned line = 0;
  static constexpr SpawnSite here(const char* file = __builtin_FILE(),
                                  const char* function = __builtin_FUNCTION(),
                                  unsigned line = __builtin_LINE()) noexcept {
    return {file, function, line};
  }
};
struct Closure {
  void (*invoke)(void* self);
  void (*destroy)(void* self);  // null when there is nothing to destroy
};
// Allocates a fiber record with `closure_size` bytes for the closure after it.
Fiber* new_fiber(std::size_t closure_size, std::size_t closure_align, const SpawnOptions& opts,
                 const SpawnSite& site, void** closure_storage);
std::uint64_t start_fiber(Fiber* f, const Closure* vtable);
// Starts a fiber parked: it holds no stack until it first runs, which is
// when a waker calls ready() on it (a stack is taken only by a fiber that
// runs). `commit(f, arg)` publishes it where the waker finds it, as a park
// commit does, or returns false for it to run at once. For waits that
// outlast most of what a parked fiber would keep (an idle connection).
struct UnstartedPark {
  ParkCommit commit;
  void* arg;
  WaitReason reason;
  std::uint64_t detail;
};
std::uint64_t start_fiber_parked(Fiber* f, const Closure* vtable, const UnstartedPark& park);
// Takes back a record from new_fiber whose closure was never built.
void free_unstarted_fiber(Fiber* f) noexcept;
int run_main(std::function<int()> main_fn, const RunOptions& opts);
}  // namespace detail

// Runs `main_fn` as the first fiber on a fresh set of workers and returns
// when it returns (other fibers still alive then are abandoned, as in Go).
// Returns main_fn's int result, or 0 when it returns void; an exception from
// main_fn is rethrown here once the runtime is torn down. Only one runtime
// may run in a process at a time.
template <class F>
int run(F&& main_fn, const RunOptions& opts = {}) {
  using Result = std::invoke_result_t<F&>;
  if constexpr (std::is_convertible_v<Result, int>) {
    return detail::run_main([&]() -> int { return main_fn(); }, opts);
  } else {
    return detail::run_main(
        [&]() -> int {
          main_fn();
          return 0;
        },
        opts);
  }
}

// Spawns a fiber that runs `fn` (moved into the fiber; no heap allocation
// beyond the fiber record). Callable from fibers and from other threads while
// a runtime is running. Returns the new fiber's id. If moving or copying fn
// in throws, nothing is spawned and the exception propagates. An exception
// escaping fn ends the process at its throw site (std::terminate, with a
// message naming the fiber), as a panic in a goroutine does.
// The call's source location is kept for dumps ("created by ...").
template <class F>
std::uint64_t go(F&& fn, const SpawnOptions& opts = {},
                 detail::SpawnSite site = detail::SpawnSite::here()) {
  using Fn = std::decay_t<F>;
  static constexpr detail::Closure vtable{
      [](void* p) { (*static_cast<Fn*>(p))(); },
      std::is_trivially_destructible_v<Fn> ? nullptr : +[](void* p) { static_cast<Fn*>(p)->~Fn(); },
  };
  void* storage = nullptr;
  detail::Fiber* f = detail::new_fiber(sizeof(Fn), alignof(Fn), opts, site, &storage);
  try {
    ::new (storage) Fn(std::forward<F>(fn));
  } catch (...) {
    detail::free_unstarted_fiber(f);
    throw;
  }
  return detail::start_fiber(f, &vtable);
}

// Lets other runnable fibers run; the caller is queued behind them.
void yield() noexcept;

// The running fiber's id (main is 1), or 0 when called outside any fiber.
std::uint64_t fiber_id() noexcept;

// Index of the worker running the caller, or -1 outside the workers.
int worker_index() noexcept;

// Workers of the running runtime, or 0 when none runs.
int num_workers() noexcept;

// Keeps the calling fiber on the worker it runs on until the guard is
// destroyed, across every park and yield in between: for code that keeps
// thread_local state across a wait (a library's per-thread context, gtest's
// SCOPED_TRACE stack). Scopes nest; SpawnOptions::pinned pins for life.
// Outside a fiber it does nothing. Destroy it on the fiber that made it.
//
// The cost: a pinned fiber waits for its own worker, even while others are
// idle. It is never stolen, so a busy fiber on its worker delays it (as it
// delays that worker's queue), and many pinned fibers on one worker are not
// spread out. A pinned fiber readied by another worker is handed to its own
// (one more queue hop, and a wake-up if that worker sleeps). Unpinned
// fibers pay a check of two fields per switch.
class PinToWorker {
 public:
  PinToWorker() noexcept;
  ~PinToWorker();
  PinToWorker(const PinToWorker&) = delete;
  PinToWorker& operator=(const PinToWorker&) = delete;

 private:
  bool pinned_;
};

namespace detail {
void run_blocking(void (*fn)(void*), void* arg);
}

// Runs `fn` on the blocking-work pool and parks the calling fiber until it
// returns; for syscalls and CPU-heavy work that must not stall a worker.
// Exceptions thrown by fn are rethrown in the caller.
template <class F>
auto blocking(F&& fn) -> std::invoke_result_t<F&> {
  using R = std::invoke_result_t<F&>;
  struct Job {
    F* fn;
    std::exception_ptr error;
    std::conditional_t<std::is_void_v<R>, char, std::optional<R>> result;
  } job{&fn, nullptr, {}};
  detail::run_blocking(
      [](void* p) {
        auto* j = static_cast<Job*>(p);
        try {
          if constexpr (std::is_void_v<R>) {
            (*j->fn)();
          } else {
            j->result.emplace((*j->fn)());
          }
        } catch (...) {
          j->error = std::current_exception();
        }
      },
      &job);
  if (job.error) std::rethrow_exception(job.error);
  if constexpr (!std::is_void_v<R>) return std::move(*job.result);
}

}  // namespace weft
