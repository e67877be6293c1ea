// A runtime's life: run_main starts the workers and sysmon around main's
// fiber, and when main returns tears everything down, as Go exits: other
// fibers are abandoned: one that never ran has its closure destroyed and is
// freed; one mid-call (parked or runnable) keeps its stack and record
// (records.h, keep_abandoned_started says why), reclaimed if a late
// completion readies it.
// - Only one runtime runs at a time (g_sched, set by CAS); each has its own
//   generation, which its fibers carry, so that a fiber of an earlier one
//   readied now is dropped (late_readies_dropped).
// - Threads outside the runtime that are inside an entry point count
//   themselves in (ForeignEntry, scheduler_internal.h); teardown clears
//   g_sched, then waits for them before it frees the scheduler.
// - An exception escaping a fiber reaches on_terminate at its throw site;
//   one escaping main is caught and rethrown from run_main after teardown.
#include <pthread.h>
#include <sched.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "env.h"
#include "log.h"
#include "netpoll.h"
#include "records.h"
#include "registry.h"
#include "scheduler.h"
#include "scheduler_internal.h"
#include "stack.h"
#include "weft/runtime.h"

namespace weft::detail {

std::atomic<Scheduler*> g_sched{nullptr};
std::atomic<std::uint64_t> g_late_readies_dropped{0};
std::atomic<int> g_foreign_entries{0};

namespace {

std::atomic<std::uint32_t> g_generations{0};

// 1, 2, ...: never 0 (no runtime) and never with kPinnedBit, which
// Fiber::run_gen carries beside it. Wraps after 2^31 runs.
std::uint32_t next_generation() {
  std::uint32_t gen = 0;
  while (gen == 0) gen = (g_generations.fetch_add(1, std::memory_order_relaxed) + 1) & ~kPinnedBit;
  return gen;
}

// run_main's std::terminate handler, which an exception escaping a fiber
// reaches from its throw site (see fiber_main): names the fiber, then lets
// the handler it replaced finish. Relaxed: written before the workers start,
// which orders it for them; any other thread at worst sees null and aborts.
std::atomic<std::terminate_handler> previous_terminate{nullptr};

[[noreturn]] void on_terminate() {
  if (const std::uint64_t fiber = weft::fiber_id()) {
    const auto id = static_cast<unsigned long long>(fiber);
    const std::string what = current_exception_text();
    // The running fiber's own record: its name cannot go while it runs.
    const Worker* w = current_worker();
    const char* name = w && w->current && w->current->name ? w->current->name : nullptr;
    std::string who = "fiber " + std::to_string(id);
    if (name) who += std::string(" \"") + name + "\"";
    if (what.empty()) {
      std::fprintf(stderr, "weft: %s: std::terminate called\n", who.c_str());
    } else {
      std::fprintf(stderr, "weft: %s: uncaught exception %s\n", who.c_str(), what.c_str());
    }
    traceback_on_crash();
  }
  if (std::terminate_handler previous = previous_terminate.load(std::memory_order_relaxed)) {
    previous();
  }
  std::abort();
}

// WEFT_POLLER if set, else the best backend this kernel allows (the first in
// available_backends()), else the next. A WEFT_POLLER this build or kernel
// can't provide (a backend not built in, io_uring under a seccomp policy) is
// said on stderr whatever the log level, as env.h rejects any setting, with
// the backend used instead; why a default backend was refused is logged at
// info. Either is said once per process.
std::unique_ptr<poll::Poller> make_runtime_poller() {
  static std::once_flag said;
  std::string why;
  const char* const asked = env_value("WEFT_POLLER");
  std::string asked_why;
  if (asked) {
    std::string name = asked;
    // Names are ASCII; the locale must not change them.
    for (char& c : name) {
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    }
    if (auto p = poll::make_poller(name, &asked_why)) return p;
  }
  std::string refused;
  for (const char* const* name = poll::available_backends(); *name; ++name) {
    if (auto p = poll::make_poller(*name, &why)) {
      std::call_once(said, [&] {
        if (asked) {
          std::fprintf(stderr, "weft: WEFT_POLLER='%s' rejected (%s); using %s\n", asked,
                       asked_why.c_str(), p->name());
        } else if (!refused.empty()) {
          log().info("{}; using {}", refused, p->name());
        }
      });
      return p;
    }
    refused += (refused.empty() ? "" : "; ") + std::string(*name) + " refused: " + why;
  }
  std::fprintf(stderr, "weft::run: no poller backend works here: %s\n", refused.c_str());
  std::abort();
}

int default_workers() {
  if (const auto n = env_number("WEFT_PROCS", 1, 1024, "a worker count from 1 to 1024",
                                "using the CPU count")) {
    return static_cast<int>(*n);
  }
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// WEFT_COOP_BUDGET: units a fiber may spend per turn before it yields (coop.h).
std::int32_t coop_budget_setting() {
  const auto n = env_number("WEFT_COOP_BUDGET", 0, 1'000'000,
                            "a budget from 1 to 1000000 units, or 0 for none", "using 128");
  if (!n) return 128;
  return *n == 0 ? INT32_MAX : static_cast<std::int32_t>(*n);
}

}  // namespace

void name_this_thread(const char* prefix, int n) noexcept {
  // Formatted into room for any int, then cut to the kernel's limit of 15
  // characters (GCC at -O3 rejects a snprintf it sees may truncate).
  char full[64];
  if (n < 0) {
    std::snprintf(full, sizeof full, "%s", prefix);
  } else {
    std::snprintf(full, sizeof full, "%s%d", prefix, n);
  }
  char name[16];
  std::memcpy(name, full, sizeof name - 1);
  name[sizeof name - 1] = '\0';
  pthread_setname_np(pthread_self(), name);
}

Scheduler::Scheduler(int n, std::uint32_t generation, std::int32_t coop_budget)
    : idle(*this, n), nworkers(n), gen(generation) {
  depot.max_batches = record_depot_cap();
  for (int i = 0; i < n; ++i) {
    auto w = std::make_unique<Worker>(generation, coop_budget);
    w->sched = this;
    w->index = i;
    w->solo = n == 1;
    w->tick_snapshot.resize(static_cast<std::size_t>(n));
    w->rng = 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(i + 1);
    workers.push_back(std::move(w));
  }
}

void Scheduler::shutdown() {
  {
    std::lock_guard lock(done_mu);
    done = true;
  }
  done_cv.notify_all();
  stopping.store(true, std::memory_order_seq_cst);
  idle.wake_all();
  sysmon_word.store(1, std::memory_order_release);
  futex_wake(&sysmon_word, 1);
}

int run_main(std::function<int()> main_fn, const RunOptions& opts) {
  const int n = opts.workers > 0 ? opts.workers : default_workers();
  advance_coarse_clock();  // fibers that park before sysmon's first round
  auto* s = new Scheduler(n, next_generation(), coop_budget_setting());
  Scheduler* none = nullptr;
  if (!g_sched.compare_exchange_strong(none, s)) {
    std::fprintf(stderr,
                 "weft::run: a runtime is already running in this process; weft::run cannot be "
                 "nested or run concurrently\n");
    std::abort();
  }
  netpoll_runtime_begins(s->gen);
  install_overflow_handler();
  install_sigquit_handler();
  if (std::terminate_handler previous = std::set_terminate(&on_terminate);
      previous != &on_terminate) {
    previous_terminate.store(previous, std::memory_order_relaxed);
  }
  s->poller = make_runtime_poller();
  s->detect_deadlocks = opts.detect_deadlocks;
  // This thread spawns main: that is not a foreign thread's use.
  set_runtime_thread(true);
  int exit_code = 0;
  // Main's exception goes to run()'s caller, once the runtime is torn down.
  std::exception_ptr main_error;
  go([&exit_code, &main_error, &main_fn, s] {
    try {
      exit_code = main_fn();
    } catch (...) {
      main_error = std::current_exception();
    }
    s->shutdown();
  });
  log().info("starting: {} worker{}, poller {}", n, n == 1 ? "" : "s", s->poller->name());
  for (auto& w : s->workers) {
    w->thread = std::thread([w = w.get()] {
      name_this_thread("weft-w", w->index);
      w->loop();
    });
  }
  s->sysmon = std::thread([s] {
    name_this_thread("weft-sysmon", -1);
    s->sysmon_loop();
  });
  {
    std::unique_lock lock(s->done_mu);
    s->done_cv.wait(lock, [s] { return s->done; });
  }
  for (auto& w : s->workers) w->thread.join();
  set_runtime_thread(false);
  s->sysmon.join();
  netpoll_runtime_ends();
  // From here on, threads that ready a fiber of this runtime drop it; those
  // already inside an entry point finish queueing first (ForeignEntry).
  // Before g_sched is cleared: from then on a late ready frees its fiber
  // on the readying thread, and it reads stack_kept after seeing null there
  // (seq_cst), which orders this write before that read.
  keep_abandoned_started(s->gen);
  g_sched.store(nullptr, std::memory_order_seq_cst);
  while (g_foreign_entries.load(std::memory_order_seq_cst) != 0) sched_yield();

  std::uint64_t exited = 0, spawned = s->foreign_spawned.load();
  std::vector<Fiber*> abandoned;
  for (auto& w : s->workers) {
    exited += w->exited.load();
    spawned += w->spawned.load();
    if (Fiber* f = w->runnext.exchange(nullptr)) abandoned.push_back(f);
    while (Fiber* f = w->runq.pop()) abandoned.push_back(f);
    while (Fiber* f = w->pinned_pop()) abandoned.push_back(f);
  }
  s->gq.for_each([&](Fiber* f) { abandoned.push_back(f); });
  for (auto& w : s->workers) {
    std::lock_guard lock(w->timers.lock);
    w->timers.detach_all();  // a weft::Timer that outlives the runtime stops cleanly
  }
  for (Fiber* f : abandoned) abandon_runnable(f);
  // FiberLocal values of fibers reclaimed late (this run's or an earlier
  // one's): here no runtime runs and no lock is held.
  destroy_orphaned_fiber_locals();
  free_depot(s->depot);
  if (spawned > exited) {
    log().debug("{} fibers were still alive when main returned (abandoned, as in Go)",
                spawned - exited);
  }
  delete s;
  restore_sigquit_handler();
  if (std::get_terminate() == &on_terminate) {
    std::set_terminate(previous_terminate.load(std::memory_order_relaxed));
  }
  if (main_error) std::rethrow_exception(main_error);
  return exit_code;
}

std::uint32_t runtime_generation() noexcept {
  // On a worker no shared counter is touched: its runtime is running. (The
  // worker's case first: every socket wait and deadline asks, several times
  // a request, and a RuntimeRef is built for the foreign thread's case.)
  if (const Worker* w = current_worker()) return w->sched->gen;
  const RuntimeRef runtime;
  return runtime.sched() ? runtime.sched()->gen : 0;
}

poll::Poller* runtime_poller() {
  Scheduler* s = g_sched.load(std::memory_order_acquire);
  return s ? s->poller.get() : nullptr;
}

std::uint64_t late_readies_dropped() noexcept {
  return g_late_readies_dropped.load(std::memory_order_relaxed);
}

}  // namespace weft::detail
