// Fiber dumps (weft/debug.h): every fiber of the running runtime, grouped by
// state and wait reason, each with its stack, as Go's goroutine dump.
//
// How a dump is taken:
// 1. Stop the world (Scheduler::stw): set the flag, poke the sleeping workers,
//    and wait until every worker has stopped on g0 at a scheduling point
//    (Worker::stop_for_world), except one that runs a fiber which does not
//    park or yield within kStopWaitMs: that fiber keeps running and is
//    listed as running, without a stack. A dump called from a fiber counts
//    its own worker as stopped.
// 2. Snapshot, with the world stopped: the running fibers (each worker's
//    current), the queued ones (runnext, run queues, the global queue), and
//    every record in the registry (registry.h) that belongs to this runtime
//    and says it parked or yielded. A parked fiber's stack is walked with
//    the unwinder from its saved context (weft_call_on_parked_stack, on its
//    own stack: no parked fiber can run while the world is stopped).
// 3. Restart the world, then symbolize (libdw when built with it, else
//    dladdr) and print: symbolizing is slow and needs no stopped world.
#include <cxxabi.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <unwind.h>

#include <arpa/inet.h>
#include <algorithm>
#include <array>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#if defined(WEFT_HAVE_LIBDW)
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#endif

#include "env.h"
#include "idle_stack.h"
#include "netpoll.h"
#include "records.h"
#include "registry.h"
#include "scheduler_internal.h"
#include "weft/debug.h"
#include "weft/runtime.h"

// unwind_x86_64.S, unwind_aarch64.S
extern "C" void weft_call_on_parked_stack(void* fiber_sp, void (*fn)(void*), void* arg);

namespace weft::detail {
namespace {

constexpr int kStopWaitMs = 100;
constexpr std::size_t kMaxFrames = 64;
// The walk runs on the parked fiber's stack, below its saved frame: it needs
// this much room left (the unwinder's state and the frames it calls).
constexpr std::size_t kWalkRoom = 16 * 1024;

struct Walk {
  std::uintptr_t pcs[kMaxFrames];
  std::size_t n = 0;
};

_Unwind_Reason_Code collect_frame(_Unwind_Context* ctx, void* arg) {
  auto* walk = static_cast<Walk*>(arg);
  const std::uintptr_t pc = _Unwind_GetIP(ctx);
  if (pc == 0 || walk->n == kMaxFrames) return _URC_END_OF_STACK;
  walk->pcs[walk->n++] = pc;
  return _URC_NO_REASON;
}

void walk_here(void* arg) {
  _Unwind_Backtrace(&collect_frame, arg);
}

// The first frames are the walk's own (walk_here, and on a parked stack the
// call into it): drop everything up to and including the switch back into
// the runtime, which a parked fiber's walk shows as its first frame.
void drop_walk_frames(Walk& walk, std::size_t own) {
  const std::size_t skip = std::min(own, walk.n);
  std::memmove(walk.pcs, walk.pcs + skip, (walk.n - skip) * sizeof walk.pcs[0]);
  walk.n -= skip;
}

// False if the stack has too little room left to walk it.
bool walk_parked(const Fiber* f, Walk& walk) {
  if (!f->sp || !f->stack.lo) return false;
  const auto sp = reinterpret_cast<std::uintptr_t>(f->sp);
  const auto lo = reinterpret_cast<std::uintptr_t>(f->stack.lo);
  if (sp < lo + kWalkRoom || sp > lo + f->stack.size) return false;
  weft_call_on_parked_stack(f->sp, &walk_here, &walk);
  drop_walk_frames(walk, 2);  // walk_here, weft_call_on_parked_stack's call
  return true;
}

enum class Shown : std::uint8_t { running, runnable, parked };

struct Entry {
  std::uint64_t id = 0;
  Shown shown = Shown::parked;
  WaitReason reason = WaitReason::unknown;
  std::uint64_t detail = 0;
  std::uint32_t since_ms = 0;
  int worker = -1;
  std::string name;
  SpawnSite site;
  Walk walk;
  const char* no_stack = nullptr;  // why there is no stack, if there is none
};

class World {
 public:
  World(Scheduler* s, Worker* self) : s_(s), self_(self) {
    s_->stw_mu.lock();
    s_->stw_word.store(1, std::memory_order_relaxed);
    s_->stw.store(true, std::memory_order_seq_cst);
    s_->idle.poke_all();
    const int want = s_->nworkers - (self_ ? 1 : 0);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(kStopWaitMs);
    // Pairs with stop_for_world's increment: what a stopped worker wrote
    // before it stopped is visible from here on.
    while (s_->stw_stopped.load(std::memory_order_seq_cst) < want &&
           std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  ~World() {
    s_->stw.store(false, std::memory_order_seq_cst);
    s_->stw_word.store(0, std::memory_order_release);
    futex_wake(&s_->stw_word, INT_MAX);
    s_->stw_mu.unlock();
  }
  World(const World&) = delete;
  World& operator=(const World&) = delete;

 private:
  Scheduler* s_;
  Worker* self_;
};

// The fiber worker w runs while the world is stopped: ours (self), or one
// that holds another worker the world could not stop (it does not yield).
// That worker's `current` is its own, written on every switch, so it is
// read through `running` (acquire: pairs with Worker::enter's release of
// the fiber and leave's of null). A stopped worker runs nothing.
const Fiber* running_on(const Worker& w, const Worker* self) {
  if (&w == self) return w.current;
  if (w.stopped_for_world.load(std::memory_order_acquire)) return nullptr;
  return w.running.load(std::memory_order_acquire);
}

std::atomic<void (*)()> dump_running_read_hook{nullptr};  // set_dump_running_read_hook

// For a worker whose fiber stopped running while we looked: it is on its
// way to stop (it switched to its g0 for that, since stw is set, and ends
// or commits the fiber there first). True once it has; false if it did not
// within the world's own wait, or ran on without membarrier to mark with.
bool wait_stopped(const Worker& w) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(kStopWaitMs);
  // acquire: pairs with stop_for_world's release, as in running_on.
  while (!w.stopped_for_world.load(std::memory_order_acquire)) {
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::yield();
  }
  return true;
}

std::vector<Entry> snapshot(Scheduler* s, Worker* self) {
  std::vector<Entry> out;
  // No stack is given back while we walk parked ones (idle_stack.h).
  const IdleStackDumpLock idle_stacks;
  std::map<const Fiber*, int> running;  // fiber -> worker
  std::set<const Fiber*> queued;
  for (const auto& w : s->workers) {
    if (const Fiber* c = running_on(*w, self)) running[c] = w->index;
    if (Fiber* f = w->runnext.load(std::memory_order_relaxed)) queued.insert(f);
    w->runq.for_each_queued([&](const Fiber* f) { queued.insert(f); });
    // Pinned ones, where their worker stopped (or is us): only then do
    // neither of its lists move. A busy worker's show as their state says.
    if (w.get() == self || w->stopped_for_world.load(std::memory_order_acquire)) {
      for (Fiber* f = w->pinned_head; f; f = f->next) queued.insert(f);
      for (Fiber* f = w->pinned_inbox.load(std::memory_order_acquire); f; f = f->next) {
        queued.insert(f);
      }
    }
  }
  s->gq.for_each_locked([&](const Fiber* f) { queued.insert(f); });

  fiber_registry().for_each([&](Fiber* f) {
    if (generation_of(*f) != s->gen || f->is_thread) return;
    Entry e;
    auto run = running.find(f);
    // A fiber that runs on a worker the world did not stop may end while we
    // read it, and its name goes then (Worker::finish): it is read marked,
    // as sysmon's watchdog reads one (records.h). One that stopped running
    // meanwhile is read as its worker left it, once that worker stopped.
    const bool elsewhere = run != running.end() && !(self && self->current == f);
    bool marked = false;
    if (elsewhere) {
      const Worker& holder = *s->workers[static_cast<std::size_t>(run->second)];
      if (void (*hook)() = dump_running_read_hook.load(std::memory_order_acquire)) {
        hook();
        wait_stopped(holder);
      }
      marked = mark_running_fiber(holder.running, f);
      if (!marked) {
        if (!wait_stopped(holder)) return;  // neither marked nor still: not read
        run = running.end();
      }
    }
    if (run != running.end()) {
      e.shown = Shown::running;
      e.worker = run->second;
    } else if (queued.count(f) || f->state == FiberState::yielded) {
      e.shown = Shown::runnable;
    } else if (f->state == FiberState::parked) {
      e.shown = Shown::parked;
    } else {
      return;  // ended (or a spawn not yet queued)
    }
    e.id = f->id;
    e.reason = f->wait_reason;
    e.detail = f->wait_detail;
    e.since_ms = f->parked_since_ms;
    if (f->name) e.name = f->name;
    e.site = f->spawn_site();
    if (e.shown == Shown::running) {
      if (self && self->current == f) {
        walk_here(&e.walk);
        drop_walk_frames(e.walk, 3);  // walk_here, snapshot, dump_fibers
      } else {
        e.no_stack = "running: its stack is not walked while it runs";
      }
    } else if (f->state == FiberState::fresh) {
      e.no_stack = "not started";
    } else if (f->swaps_idle_stack && !idle_stacks.held()) {
      e.no_stack = "its stack may be being given back (idle), and was not walked";
    } else {
      // Given back while idle: it comes back, to be walked where the fiber
      // left it (sysmon gives it back again later).
      if (f->stack.given_back) take_back_stack(f);
      if (!walk_parked(f, e.walk)) {
        e.no_stack = "its stack could not be walked (too little room left on it)";
      }
    }
    if (marked) unmark_running_fiber();
    out.push_back(std::move(e));
  });
  return out;
}

// ---- printing ----------------------------------------------------------------

// Appends the parts in turn: GCC 12 at -O3 reports a false -Wrestrict
// overlap in operator+ on a literal and a std::string temporary.
std::string concat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (std::string_view p : parts) out.append(p);
  return out;
}

std::string demangle(const char* name) {
  if (!name) return "??";
  int status = 0;
  char* d = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  if (status != 0 || !d) return name;
  std::string out(d);
  std::free(d);
  return out;
}

class Symbolizer {
 public:
  Symbolizer() {
#if defined(WEFT_HAVE_LIBDW)
    static const Dwfl_Callbacks callbacks = {
        .find_elf = dwfl_linux_proc_find_elf,
        .find_debuginfo = dwfl_standard_find_debuginfo,
        .section_address = nullptr,
        .debuginfo_path = nullptr,
    };
    dwfl_ = dwfl_begin(&callbacks);
    if (dwfl_ && (dwfl_linux_proc_report(dwfl_, getpid()) != 0 ||
                  dwfl_report_end(dwfl_, nullptr, nullptr) != 0)) {
      dwfl_end(dwfl_);
      dwfl_ = nullptr;
    }
#endif
  }
  ~Symbolizer() {
#if defined(WEFT_HAVE_LIBDW)
    if (dwfl_) dwfl_end(dwfl_);
#endif
  }
  Symbolizer(const Symbolizer&) = delete;
  Symbolizer& operator=(const Symbolizer&) = delete;

  // The frames at a return address (looked up one byte earlier, inside the
  // call): the functions inlined there, innermost first, then the function
  // itself, each "name\n\t    file:line".
  std::vector<std::string> describe(std::uintptr_t pc) {
    const std::uintptr_t at = pc - 1;
#if defined(WEFT_HAVE_LIBDW)
    if (dwfl_) {
      if (Dwfl_Module* mod = dwfl_addrmodule(dwfl_, at)) return describe_dwarf(mod, at);
    }
#endif
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(at), &info) && info.dli_sname) {
      return {demangle(info.dli_sname)};
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "?? (%#lx)", static_cast<unsigned long>(pc));
    return {buf};
  }

 private:
#if defined(WEFT_HAVE_LIBDW)
  static std::string die_name(Dwarf_Die* die) {
    Dwarf_Attribute attr;
    if (dwarf_attr_integrate(die, DW_AT_linkage_name, &attr) ||
        dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &attr)) {
      if (const char* n = dwarf_formstring(&attr)) return demangle(n);
    }
    if (dwarf_attr_integrate(die, DW_AT_name, &attr)) {
      if (const char* n = dwarf_formstring(&attr)) return n;
    }
    return "??";
  }

  static std::string at_line(const char* file, int line) {
    if (!file) return "";
    return concat({"\n\t    ", file, ":", std::to_string(line)});
  }

  std::vector<std::string> describe_dwarf(Dwfl_Module* mod, std::uintptr_t at) {
    std::vector<std::string> frames;
    const char* file = nullptr;
    int line = 0;
    if (Dwfl_Line* l = dwfl_module_getsrc(mod, at)) {
      file = dwfl_lineinfo(l, nullptr, &line, nullptr, nullptr, nullptr);
    }
    Dwarf_Addr bias = 0;
    Dwarf_Die* cu = dwfl_module_addrdie(mod, at, &bias);
    Dwarf_Die* scopes = nullptr;
    const int n = cu ? dwarf_getscopes(cu, at - bias, &scopes) : 0;
    Dwarf_Files* files = nullptr;
    std::size_t nfiles = 0;
    if (cu) dwarf_getsrcfiles(cu, &files, &nfiles);
    bool named_outer = false;
    for (int i = 0; i < n; ++i) {
      Dwarf_Die* scope = &scopes[i];
      const int tag = dwarf_tag(scope);
      if (tag == DW_TAG_inlined_subroutine) {
        frames.push_back(die_name(scope) + at_line(file, line));
        // On to where it was inlined: the caller's file and line.
        Dwarf_Attribute attr;
        Dwarf_Word idx = 0, call_line = 0;
        file = nullptr;
        if (files && dwarf_formudata(dwarf_attr(scope, DW_AT_call_file, &attr), &idx) == 0) {
          file = dwarf_filesrc(files, idx, nullptr, nullptr);
        }
        if (dwarf_formudata(dwarf_attr(scope, DW_AT_call_line, &attr), &call_line) == 0) {
          line = static_cast<int>(call_line);
        }
      } else if (tag == DW_TAG_subprogram) {
        frames.push_back(die_name(scope) + at_line(file, line));
        named_outer = true;
        break;
      }
    }
    std::free(scopes);
    if (!named_outer)
      frames.push_back(demangle(dwfl_module_addrname(mod, at)) + at_line(file, line));
    return frames;
  }

  Dwfl* dwfl_ = nullptr;
#endif
};

std::string sockaddr_text(const sockaddr_storage& ss, socklen_t len) {
  char host[INET6_ADDRSTRLEN] = "";
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    return concat({host, ":", std::to_string(ntohs(a->sin_port))});
  }
  if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    return concat({"[", host, "]:", std::to_string(ntohs(a->sin6_port))});
  }
  if (ss.ss_family == AF_UNIX) {
    const auto* a = reinterpret_cast<const sockaddr_un*>(&ss);
    const std::size_t n =
        len > offsetof(sockaddr_un, sun_path) ? len - offsetof(sockaddr_un, sun_path) : 0;
    std::string path(a->sun_path, strnlen(a->sun_path, n));
    return path.empty() ? "@" : path;
  }
  return "?";
}

// "fd 7, 127.0.0.1:80 <- 127.0.0.1:5123" (local, then peer, when it has one).
std::string fd_text(int fd) {
  std::string text = concat({"fd ", std::to_string(fd)});
  sockaddr_storage local{}, peer{};
  socklen_t llen = sizeof local, plen = sizeof peer;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &llen) == 0) {
    text += concat({", ", sockaddr_text(local, llen)});
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) {
      text += concat({" <- ", sockaddr_text(peer, plen)});
    }
  }
  return text;
}

std::string duration_text(std::uint32_t ms) {
  char buf[32];
  if (ms < 1000) {
    std::snprintf(buf, sizeof buf, "%u ms", ms);
  } else if (ms < 120'000) {
    std::snprintf(buf, sizeof buf, "%.1f s", ms / 1000.0);
  } else {
    std::snprintf(buf, sizeof buf, "%u minutes", ms / 60'000);
  }
  return buf;
}

// Frames every fiber has, which say nothing about it: the park itself and
// the fiber's entry (Go elides its runtime's frames the same way).
bool runtime_internal(const std::string& frame) {
  static constexpr const char* kInternal[] = {
      "weft::detail::park(",
      "park_with<",
      "weft::detail::park_with<",
      "weft::detail::(anonymous namespace)::fiber_main(",
      "fiber_main\n",
      "weft_fiber_trampoline",
  };
  for (const char* prefix : kInternal) {
    if (frame.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

std::string reason_text(const Entry& e) {
  switch (e.shown) {
    case Shown::running:
      return concat({"running on worker ", std::to_string(e.worker)});
    case Shown::runnable:
      return "runnable";
    case Shown::parked:
      break;
  }
  return wait_reason_text(e.reason);
}

void print(std::FILE* out, std::vector<Entry>& entries) {
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.shown, a.reason, a.id) < std::tie(b.shown, b.reason, b.id);
  });
  std::size_t counts[3] = {};
  for (const Entry& e : entries) ++counts[static_cast<int>(e.shown)];
  std::fprintf(out, "weft: %zu fibers: %zu running, %zu runnable, %zu parked\n", entries.size(),
               counts[0], counts[1], counts[2]);
  Symbolizer symbols;
  const std::uint32_t now_ms = coarse_now_ms();
  std::string group;
  for (const Entry& e : entries) {
    const std::string what = reason_text(e);
    if (what != group) {
      group = what;
      std::size_t n = 0;
      for (const Entry& o : entries) n += reason_text(o) == what;
      std::fprintf(out, "\n=== %s: %zu fiber%s ===\n", what.c_str(), n, n == 1 ? "" : "s");
    }
    std::string header = concat({"\nfiber ", std::to_string(e.id)});
    if (!e.name.empty()) header += concat({" \"", e.name, "\""});
    header += concat({" [", what});
    if (e.shown == Shown::parked) {
      if (e.reason == WaitReason::io_read || e.reason == WaitReason::io_write) {
        header += concat({", ", fd_text(static_cast<int>(e.detail))});
      }
      if (e.since_ms != 0) {
        header += concat({", ", duration_text(now_ms - std::min(now_ms, e.since_ms))});
      }
    }
    header += "]:\n";
    std::fputs(header.c_str(), out);
    if (e.no_stack) std::fprintf(out, "\t(%s)\n", e.no_stack);
    for (std::size_t i = 0; i < e.walk.n; ++i) {
      for (const std::string& frame : symbols.describe(e.walk.pcs[i])) {
        if (runtime_internal(frame)) continue;
        std::fprintf(out, "\t%s\n", frame.c_str());
      }
    }
    if (e.site.line != 0) {
      std::fprintf(out, "created at %s:%u\n\tin %s\n", e.site.file, e.site.line, e.site.function);
    }
  }
  std::fflush(out);
}

std::atomic<bool> g_sigquit{false};
struct sigaction g_previous_sigquit;

// WEFT_TRACEBACK, as Go's GOTRACEBACK. none: no stacks. single (the
// default): a crash in a fiber writes that fiber's stack; SIGQUIT and a
// deadlock, which have no fiber of their own, write every fiber. all: a
// crash writes every fiber too.
enum class Traceback { none, single, all };
Traceback traceback_level() {
  static constexpr const char* kLevels[] = {"none", "single", "all", nullptr};
  const auto level = env_word("WEFT_TRACEBACK", kLevels, "using single");
  return level ? static_cast<Traceback>(*level) : Traceback::single;
}
bool traceback_wanted() {
  return traceback_level() != Traceback::none;
}

void on_sigquit(int) {
  // Async-signal-safe: an atomic store and sysmon's futex. sysmon writes the
  // dump and exits (sysmon_loop).
  Scheduler* s = g_sched.load(std::memory_order_acquire);
  if (!s) {
    sigaction(SIGQUIT, &g_previous_sigquit, nullptr);
    raise(SIGQUIT);
    return;
  }
  g_sigquit.store(true, std::memory_order_seq_cst);
  s->sysmon_word.store(1, std::memory_order_release);
  futex_wake(&s->sysmon_word, 1);
}

}  // namespace

void install_sigquit_handler() {
  struct sigaction sa {};
  sa.sa_handler = &on_sigquit;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGQUIT, &sa, &g_previous_sigquit);
}

void restore_sigquit_handler() {
  sigaction(SIGQUIT, &g_previous_sigquit, nullptr);
}

void sigquit_if_pending(Scheduler* s) {
  if (!g_sigquit.load(std::memory_order_relaxed)) return;
  static constexpr char kQuit[] = "SIGQUIT: quit\n";
  (void)!write(STDERR_FILENO, kQuit, sizeof kQuit - 1);
  if (traceback_wanted()) dump_fibers_of(s, stderr);
  std::fflush(stderr);
  _exit(2);
}

void traceback_on_crash() {
  const Traceback level = traceback_level();
  if (level == Traceback::none) return;
  Worker* w = current_worker();
  const Fiber* f = w ? w->current : nullptr;
  if (!f) return;
  Entry e;
  e.id = f->id;
  e.shown = Shown::running;
  e.worker = w->index;
  if (f->name) e.name = f->name;
  e.site = f->spawn_site();
  walk_here(&e.walk);  // this fiber's own stack: only the walk, which needs little room
  drop_walk_frames(e.walk, 1);
  Scheduler* s = w->sched;
  // Symbolizing (and a dump) needs more stack than a fiber may have left.
  std::thread([&] {
    std::vector<Entry> crashed{std::move(e)};
    print(stderr, crashed);
    if (level == Traceback::all) {
      std::fputs("\n", stderr);
      dump_fibers_of(s, stderr);  // the crashing fiber's worker does not stop: listed running
    }
  }).join();
}

void die_of_deadlock(Scheduler* s) {
  static constexpr char kDeadlock[] = "weft: all fibers are asleep - deadlock!\n";
  (void)!write(STDERR_FILENO, kDeadlock, sizeof kDeadlock - 1);
  if (traceback_wanted()) {
    std::fputc('\n', stderr);
    dump_fibers_of(s, stderr);
  }
  std::fflush(stderr);
  _exit(2);
}

void set_dump_running_read_hook(void (*hook)()) {
  dump_running_read_hook.store(hook, std::memory_order_release);
}

void dump_fibers_of(Scheduler* s, std::FILE* out) {
  Worker* self = current_worker();
  if (self && self->sched != s) self = nullptr;
  std::vector<Entry> entries;
  advance_coarse_clock();
  {
    World stopped(s, self);
    entries = snapshot(s, self);
  }
  print(out, entries);
}

Metrics metrics_of(Scheduler* s) {
  Metrics m;
  Worker* self = current_worker();
  if (self && self->sched != s) self = nullptr;
  std::array<std::uint64_t, 256> by_reason{};
  {
    World stopped(s, self);
    std::set<const Fiber*> running;
    for (const auto& w : s->workers) {
      m.fibers_spawned += w->spawned.load(std::memory_order_relaxed);
      m.fibers_live +=
          w->spawned.load(std::memory_order_relaxed) - w->exited.load(std::memory_order_relaxed);
      if (const Fiber* c = running_on(*w, self)) running.insert(c);
      if (w->runnext.load(std::memory_order_relaxed)) ++m.fibers_runnable;
      w->runq.for_each_queued([&](const Fiber*) { ++m.fibers_runnable; });
      m.fibers_runnable += w->pinned_queued.load(std::memory_order_relaxed);
      m.switches += w->schedtick.load(std::memory_order_relaxed);
      m.steals += w->steals.load(std::memory_order_relaxed);
      m.coop_yields += w->coop_yields.load(std::memory_order_relaxed);
      for (int b = 0; b < LatencyHistogram::kBuckets; ++b) {
        m.scheduling_latency.buckets[static_cast<std::size_t>(b)] +=
            w->sched_latency[b].load(std::memory_order_relaxed);
        m.poller_latency.buckets[static_cast<std::size_t>(b)] +=
            w->poll_latency[b].load(std::memory_order_relaxed);
      }
      std::lock_guard lock(w->timers.lock);
      m.timers_pending += w->timers.live();
    }
    const std::uint64_t foreign = s->foreign_spawned.load(std::memory_order_relaxed);
    m.fibers_spawned += foreign;
    m.fibers_live += foreign;
    m.fibers_runnable += s->gq.size();
    m.fibers_running = running.size();
    fiber_registry().for_each([&](Fiber* f) {
      if (generation_of(*f) != s->gen || f->is_thread || running.count(f)) return;
      if (f->state == FiberState::parked) ++by_reason[static_cast<std::size_t>(f->wait_reason)];
    });
  }
  // A parked-state record that was readied since is queued: counted runnable.
  m.fibers_parked = m.fibers_live - std::min(m.fibers_live, m.fibers_running + m.fibers_runnable);
  for (std::size_t r = 0; r < by_reason.size(); ++r) {
    if (by_reason[r] != 0) {
      m.parked_by_reason.emplace_back(wait_reason_text(static_cast<WaitReason>(r)), by_reason[r]);
    }
  }
  m.workers = s->nworkers;
  m.workers_idle = s->idle.idle_workers();
  m.workers_spinning = s->idle.spinning_workers();
  m.workers_watching = s->idle.watched() ? 1 : 0;
  m.watchers_relieved = s->idle.watchers_relieved();
  m.io_waiters = static_cast<std::uint64_t>(std::max(0, netpoll_waiters()));
  m.poller_wakeups = netpoll_wakeups();
  m.worker_wakeups = s->idle.wakeups();
  m.sleeps_refused = s->idle.sleeps_refused();
  m.blocking_threads = blocking_pool_threads();
  m.blocking_jobs = blocking_jobs_in_flight();
  return m;
}

}  // namespace weft::detail

namespace weft {

std::uint64_t LatencyHistogram::count() const noexcept {
  std::uint64_t n = 0;
  for (std::uint64_t b : buckets) n += b;
  return n;
}

std::chrono::nanoseconds LatencyHistogram::quantile(double q) const noexcept {
  const std::uint64_t n = count();
  if (n == 0) return std::chrono::nanoseconds(0);
  const auto rank = static_cast<std::uint64_t>(std::max(1.0, q * static_cast<double>(n) + 0.5));
  std::uint64_t seen = 0;
  for (int b = 0; b < kBuckets; ++b) {
    seen += buckets[static_cast<std::size_t>(b)];
    if (seen >= rank) return std::chrono::nanoseconds(std::int64_t{2} << b);
  }
  return std::chrono::nanoseconds(std::int64_t{2} << (kBuckets - 1));
}

std::string Metrics::to_string() const {
  std::string out;
  auto line = [&](std::string_view name, auto value) {
    out += name;
    out += ' ';
    out += std::to_string(value);
    out += '\n';
  };
  line("fibers.spawned", fibers_spawned);
  line("fibers.live", fibers_live);
  line("fibers.running", fibers_running);
  line("fibers.runnable", fibers_runnable);
  line("fibers.parked", fibers_parked);
  for (const auto& [reason, n] : parked_by_reason)
    line(detail::concat({"fibers.parked[", reason, "]"}), n);
  line("workers", workers);
  line("workers.idle", workers_idle);
  line("workers.spinning", workers_spinning);
  line("workers.watching", workers_watching);
  line("workers.watchers_relieved", watchers_relieved);
  line("poller.io_waiters", io_waiters);
  line("poller.wakeups", poller_wakeups);
  line("scheduler.switches", switches);
  line("scheduler.steals", steals);
  line("workers.wakeups", worker_wakeups);
  line("workers.sleeps_refused", sleeps_refused);
  line("fibers.coop_yields", coop_yields);
  line("timers.pending", timers_pending);
  line("blocking.threads", blocking_threads);
  line("blocking.jobs", blocking_jobs);
  for (const auto& [name, h] : {std::pair{"latency.scheduling", &scheduling_latency},
                                std::pair{"latency.poller", &poller_latency}}) {
    out += name;
    out += " n=" + std::to_string(h->count());
    for (double q : {0.5, 0.9, 0.99}) {
      char buf[48];
      std::snprintf(buf, sizeof buf, " p%g<=%lldns", q * 100,
                    static_cast<long long>(h->quantile(q).count()));
      out += buf;
    }
    out += '\n';
  }
  return out;
}

Metrics metrics() {
  using namespace detail;
  const RuntimeRef runtime;
  if (!runtime.sched()) return {};
  return metrics_of(runtime.sched());
}

void dump_fibers(std::FILE* out) {
  using namespace detail;
  const RuntimeRef runtime;
  if (!runtime.sched()) {
    std::fputs("weft: no runtime is running; no fibers to dump\n", out);
    return;
  }
  // Not on the caller's fiber: the unwinder and libdw need more stack than
  // a fiber may have, and the caller's worker can then stop with the rest.
  // The caller is listed as parked in a blocking call.
  Scheduler* s = runtime.sched();
  if (on_fiber()) {
    weft::blocking([s, out] { dump_fibers_of(s, out); });
  } else {
    dump_fibers_of(s, out);
  }
}

}  // namespace weft
