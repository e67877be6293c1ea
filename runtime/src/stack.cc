#include "stack.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <type_traits>
#include <vector>

#include "log.h"
#include "registry.h"
#include "sanitizer.h"
#include "scheduler.h"

// Linux 6.13's guard markers (madvise(2)): pages that fault like PROT_NONE
// without a VMA of their own. Debian 12's headers predate them.
#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

namespace weft::detail {
namespace {

std::size_t page_size() {
  static const std::size_t size = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

// A guarded stack costs two VMAs (guard + stack, different protections), and
// the kernel refuses mappings past vm.max_map_count (65530 on Debian). Keep a
// margin for the heap, libraries and whatever else the program maps.
std::size_t default_guarded_budget() {
  static const std::size_t budget = [] {
    long limit = 65530;
    if (FILE* f = std::fopen("/proc/sys/vm/max_map_count", "r")) {
      if (std::fscanf(f, "%ld", &limit) != 1) limit = 65530;
      std::fclose(f);
    }
    const long reserve = 8192;
    return limit > reserve ? static_cast<std::size_t>((limit - reserve) / 2) : 0;
  }();
  return budget;
}

std::atomic<std::size_t> budget_override{0};

std::size_t guarded_budget() {
  const std::size_t forced = budget_override.load(std::memory_order_relaxed);
  return forced ? forced : default_guarded_budget();
}

constexpr std::size_t kSlabStacks = 64;
// Stacks move between a worker's cache and the shared pool in batches, so
// one lock covers many spawns (fibers often end on another worker).
constexpr std::size_t kStackBatch = 32;
// Sizes other than the default that each worker caches too. A server that
// gives its connection fibers a size of their own spawns and ends them as
// often as default ones; through the shared pool, every spawn and every exit
// took its lock, a contended futex per fiber with two workers (a cancel
// waking 1,000 readers with 16 KiB stacks: 0.5 ms of the 1.6 ms).
constexpr std::size_t kOtherSizes = 3;
// Enough for bursts of tens of thousands of fibers: unmapping a stack on exit
// costs ~5 us (and mapping a new one as much again), 30x a whole spawn+join.
constexpr std::size_t kPoolMaxPerSize = 65536;

// Guarded stacks mapped, live or pooled: what the map budget limits (a
// pooled stack holds its two VMAs as much as a live one).
std::atomic<std::size_t> guarded_mapped{0};

// The pooled stacks of one size. `warm` ones may still hold the pages their
// last fiber touched; the scavenger gives back the pages of those pooled
// longest and moves them to `cold` (Go's background scavenger, for stacks).
// Spawns take warm ones first, newest first: their pages are likeliest to
// be resident and in cache.
struct PooledStack {
  Stack stack;
  std::uint32_t since_ms;  // coarse_now_ms() when pooled
};
struct SizePool {
  std::deque<PooledStack> warm;  // oldest at the front
  std::vector<Stack> cold;
  std::size_t size() const { return warm.size() + cold.size(); }
  bool empty() const { return warm.empty() && cold.empty(); }
  Stack take() {
    if (!warm.empty()) {
      const Stack s = warm.back().stack;
      warm.pop_back();
      return s;
    }
    const Stack s = cold.back();
    cold.pop_back();
    return s;
  }
};

struct Pool {
  std::mutex mu;
  std::map<std::size_t, SizePool> free_by_size;
  std::size_t pooled = 0;     // in the lists, and out with the scavenger
  std::size_t scavenged = 0;  // stacks whose pages were given back, ever
  std::size_t trips = 0;      // spawns and exits that took the lock
};

std::atomic<std::uint32_t> scavenge_delay_ms{5000};
Pool& pool() {
  static Pool* p = new Pool;  // outlives every thread that may return a stack
  return *p;
}

// What a worker thread keeps of its own: default-size stacks, and its share
// of the live-stack counts. Trivially constructed and destroyed, so that no
// access goes through a TLS guard (in a shared library, a __tls_get_addr call
// on every spawn and exit). Workers attach at start and detach at exit.
//
// The live counts are per thread and summed on demand: one shared counter,
// bumped on every spawn on one core and every exit on another, cost a
// cross-core cache miss per fiber (a tenth of a 2-worker spawn+join). A stack
// may be taken on one thread and returned on another, so one thread's counts
// may go negative; only the sum means anything.
// A worker's stacks of one size, at most two batches.
struct SizeCache {
  std::size_t size = 0;  // 0: not claimed yet (the default's is set at attach)
  std::uint32_t cached = 0;
  Stack stacks[2 * kStackBatch];

  // A full cache gives the pool its older half; the most recently used
  // (warmest) stay.
  void spill_older_half();
  void spill_all();
};
struct ThreadStacks {
  SizeCache defaults;  // kDefaultStackSize, what every plain spawn takes
  bool attached = false;
  // kOtherSizes caches, while attached; on the heap, not in this
  // initial-exec block, which a dlopen of libweft must find room for.
  SizeCache* others = nullptr;
  std::atomic<std::int64_t> live_mapped{0}, live_slab{0};
  ThreadStacks* next = nullptr;  // in the registry while attached
};
static_assert(std::is_trivially_destructible_v<ThreadStacks>);
__attribute__((tls_model("initial-exec"))) thread_local ThreadStacks tls_stacks;

// This thread's cache for `size`: the default's, or among the others the one
// that holds it, else one left empty (claimed for it); null if every one
// holds stacks of other sizes, or the thread is not a worker.
SizeCache* size_cache(std::size_t size) {
  ThreadStacks& t = tls_stacks;
  if (!t.attached) return nullptr;
  if (size == kDefaultStackSize) return &t.defaults;
  SizeCache* others = t.others;
  SizeCache* empty = nullptr;
  for (std::size_t i = 0; i < kOtherSizes; ++i) {
    if (others[i].size == size) return &others[i];
    if (others[i].cached == 0 && empty == nullptr) empty = &others[i];
  }
  if (empty != nullptr) empty->size = size;
  return empty;
}

struct LiveRegistry {
  std::mutex mu;
  ThreadStacks* attached = nullptr;
  // Threads that never attached (teardown frees abandoned fibers' stacks),
  // and what detached threads left behind.
  std::atomic<std::int64_t> other_mapped{0}, other_slab{0};
};
LiveRegistry& live_registry() {
  static LiveRegistry* r = new LiveRegistry;  // outlives every thread
  return *r;
}

// Below every guarded stack: 1 MiB that faults, not one page. Code built
// without -fstack-clash-protection moves the stack pointer past a whole
// frame before it touches any of it, so a frame larger than the guard (a
// 128 KiB array in a 64 KiB stack) lands below it: in another mapping,
// which it then corrupts silently, or in none, an anonymous SIGSEGV. 1 MiB
// is the gap Linux keeps below a main thread's stack since Stack Clash
// (stack_guard_gap), for the same reason. It costs address space only: no
// memory, no page tables until touched, and still two VMAs.
constexpr std::size_t kGuardBytes = std::size_t{1} << 20;

bool map_guarded(std::size_t usable, Stack* out) {
  // All of it inaccessible first, then the stack opened: only the writable
  // part counts against strict overcommit (vm.overcommit_memory=2).
  void* mem = mmap(nullptr, usable + kGuardBytes, PROT_NONE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (mem == MAP_FAILED) return false;
  if (mprotect(static_cast<char*>(mem) + kGuardBytes, usable, PROT_READ | PROT_WRITE) != 0) {
    munmap(mem, usable + kGuardBytes);
    return false;
  }
  out->lo = static_cast<char*>(mem) + kGuardBytes;
  out->size = static_cast<std::uint32_t>(usable);
  out->guarded = true;
  guarded_mapped.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// Whether this kernel has guard markers (Linux 6.13), asked once.
bool guard_markers_supported() {
  static const bool supported = [] {
    const std::size_t page = page_size();
    void* probe =
        mmap(nullptr, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (probe == MAP_FAILED) return false;
    const bool ok = madvise(probe, page, MADV_GUARD_INSTALL) == 0;
    munmap(probe, 2 * page);
    return ok;
  }();
  return supported;
}

[[noreturn]] void cannot_map_stacks(std::size_t bytes, const char* how) {
  std::fprintf(stderr, "weft: cannot map fiber stacks (%zu bytes): %s: %s\n", bytes, how,
               std::strerror(errno));
  std::abort();
}

// Past the guarded budget: a slab of kSlabStacks stacks in one mapping, one
// VMA for all of them. Each gets the same 1 MiB guard below it, as guard
// markers, which cost page-table entries, not VMAs, so no fiber's overflow
// reaches its neighbour at any fiber count. A kernel without them gets the
// stacks packed back to back, checked only at switches, and a warning.
// Slab stacks are never unmapped: unmapping a piece would split the VMA.
Stack map_from_slab(std::size_t usable) {
  const bool guarded = guard_markers_supported();
  if (!guarded) {
    static std::once_flag warned;
    std::call_once(warned, [] {
      log().warn(
          "fiber stacks past {} lose their guard (vm.max_map_count is too low, and this kernel "
          "has no guard markers, Linux 6.13); overflow is then detected at the next switch, not "
          "at the faulting access. Raise it with: sysctl -w vm.max_map_count=1048576",
          guarded_budget());
    });
  }
  const std::size_t guard = guarded ? kGuardBytes : 0;
  const std::size_t stride = guard + usable;
  void* mem = mmap(nullptr, stride * kSlabStacks, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
  if (mem == MAP_FAILED) cannot_map_stacks(stride * kSlabStacks, "mmap");
  char* base = static_cast<char*>(mem);
  for (std::size_t i = 0; guarded && i < kSlabStacks; ++i) {
    if (madvise(base + i * stride, guard, MADV_GUARD_INSTALL) != 0) {
      cannot_map_stacks(stride * kSlabStacks, "madvise(MADV_GUARD_INSTALL)");
    }
  }
  const auto stack_at = [&](std::size_t i) {
    return Stack{base + i * stride + guard, static_cast<std::uint32_t>(usable), guarded, true};
  };
  Pool& p = pool();
  std::lock_guard lock(p.mu);
  auto& list = p.free_by_size[usable].cold;  // never touched
  for (std::size_t i = 1; i < kSlabStacks; ++i) {
    list.push_back(stack_at(i));
    ++p.pooled;
  }
  return stack_at(0);
}

void unmap_guarded(const Stack& s) {
  // The frames its last fiber never returned from (fiber_main's) left their
  // redzones poisoned; whatever the kernel maps here next is not a stack.
  san::asan_unpoison_stack(s.lo, s.size);
  munmap(s.lo - kGuardBytes, s.size + kGuardBytes);
  guarded_mapped.fetch_sub(1, std::memory_order_relaxed);
}

void count_live(const Stack& s, int delta) {
  ThreadStacks& t = tls_stacks;
  if (!t.attached) {
    LiveRegistry& r = live_registry();
    (s.slab ? r.other_slab : r.other_mapped).fetch_add(delta, std::memory_order_relaxed);
    return;
  }
  // Written by this thread only (read by stack_stats): no locked instruction.
  auto& counter = s.slab ? t.live_slab : t.live_mapped;
  counter.store(counter.load(std::memory_order_relaxed) + delta, std::memory_order_relaxed);
}

struct sigaction previous_segv;
struct sigaction previous_bus;

void write_str(const char* s) {
  std::size_t n = std::strlen(s);
  while (n > 0) {
    ssize_t w = ::write(STDERR_FILENO, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

void write_u64(std::uint64_t v) {
  char buf[21];
  write_str(decimal(v, buf));
}

void write_hex(std::uintptr_t v) {
  char buf[2 + 2 * sizeof v + 1];
  int i = sizeof buf;
  buf[--i] = '\0';
  do {
    buf[--i] = "0123456789abcdef"[v % 16];
    v /= 16;
  } while (v != 0);
  buf[--i] = 'x';
  buf[--i] = '0';
  write_str(buf + i);
}

// Only for the fiber running on this thread (or one that just stopped
// here): its name is freed when it ends, and the spawn site is static data.
void write_fiber(const Fiber* f) {
  name_fiber(*f, write_str);
}

const char* fault_cause(int sig, int code) {
  if (sig == SIGSEGV && code == SEGV_MAPERR) return "address not mapped";
  if (sig == SIGSEGV && code == SEGV_ACCERR) return "access not permitted";
  if (sig == SIGBUS && code == BUS_ADRALN) return "misaligned address";
  if (sig == SIGBUS && code == BUS_ADRERR) return "no such physical address (a truncated file?)";
  return nullptr;
}

// Async-signal-safe throughout: write(2) only, no allocation, no locks.
void on_fault(int sig, siginfo_t* info, void* uctx) {
  Stack stack;
  const Fiber* f = signal_current_fiber(&stack);
  // A fault in the guard below the running fiber's stack is that fiber's
  // overflow, wherever in the guard a large frame put it. (An unguarded
  // stack has another stack below it, which never faults.)
  const char* addr = static_cast<const char*>(info->si_addr);
  if (f != nullptr && stack.guarded && addr < stack.lo && addr >= stack.lo - kGuardBytes) {
    report_overflow(f, stack, nullptr);
  }
  // Not a stack overflow: a handler installed before ours owns it (it may
  // even recover, as sanitizers and WebAssembly runtimes do), so it gets it
  // untouched.
  const struct sigaction& prev = sig == SIGSEGV ? previous_segv : previous_bus;
  if (prev.sa_flags & SA_SIGINFO) {
    if (prev.sa_sigaction) return prev.sa_sigaction(sig, info, uctx);
  } else if (prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN) {
    return prev.sa_handler(sig);
  }
  // The default action follows: say which fiber first.
  if (f != nullptr) {
    write_str("weft: ");
    write_fiber(f);
    write_str(sig == SIGSEGV ? " got SIGSEGV" : " got SIGBUS");
    if (info->si_code > 0) {  // from the kernel, for an access: it has an address
      write_str(" at ");
      write_hex(reinterpret_cast<std::uintptr_t>(addr));
      if (const char* cause = fault_cause(sig, info->si_code)) {
        write_str(" (");
        write_str(cause);
        write_str(")");
      }
    }
    write_str("\n");
  }
  signal(sig, SIG_DFL);
  // Returning re-executes a faulting access, which now kills us with the
  // signal (and its core dump); one sent by kill(2) would not come back.
  if (info->si_code <= 0) raise(sig);
}

}  // namespace

std::size_t round_stack_size(std::size_t requested) {
  const std::size_t min = std::size_t{16} * 1024;
  const std::size_t max = std::size_t{1} << 30;
  if (requested > max) {
    std::fprintf(stderr, "weft::go: stack_size %zu is over the 1 GiB limit\n", requested);
    std::abort();
  }
  if (requested == kDefaultStackSize) return requested;  // every spawn asks; skip the page math
  std::size_t size = std::max(requested, min);
  const std::size_t page = page_size();
  return (size + page - 1) / page * page;
}

namespace {
// Out of line, so that the cached paths (every spawn and exit) need no frame.
__attribute__((noinline)) void acquire_stack_slow(std::size_t usable, Stack* out) {
  // The cache a batch from the pool refills: none off a worker. (An empty
  // default cache is why we are here; another size's may hold one.)
  SizeCache* cache = size_cache(usable);
  if (cache != nullptr && cache->cached != 0) {
    *out = cache->stacks[--cache->cached];
    count_live(*out, +1);
    return;
  }
  Stack s;
  {
    Pool& p = pool();
    std::lock_guard lock(p.mu);
    ++p.trips;
    auto it = p.free_by_size.find(usable);
    if (it != p.free_by_size.end() && !it->second.empty()) {
      auto& list = it->second;
      s = list.take();
      --p.pooled;
      for (std::size_t i = 1; cache != nullptr && i < kStackBatch && !list.empty(); ++i) {
        cache->stacks[cache->cached++] = list.take();
        --p.pooled;
      }
    }
  }
  if (s.lo == nullptr) {
    if (guarded_mapped.load(std::memory_order_relaxed) >= guarded_budget() ||
        !map_guarded(usable, &s)) {
      s = map_from_slab(usable);
    }
  }
  count_live(s, +1);
  *out = s;
}

// Returns stacks of one size to the shared pool; guarded ones past the
// pool's cap are unmapped (slab stacks cannot be: they stay pooled).
void pool_put(const Stack* stacks, std::size_t n) {
  if (n == 0) return;
  Pool& p = pool();
  std::lock_guard lock(p.mu);
  ++p.trips;
  auto& list = p.free_by_size[stacks[0].size];
  const std::uint32_t now = coarse_now_ms();
  for (std::size_t i = 0; i < n; ++i) {
    if (stacks[i].slab || list.size() < kPoolMaxPerSize) {
      list.warm.push_back(PooledStack{stacks[i], now});
      ++p.pooled;
    } else {
      unmap_guarded(stacks[i]);
    }
  }
}

void SizeCache::spill_older_half() {
  pool_put(stacks, kStackBatch);
  std::copy(stacks + kStackBatch, stacks + cached, stacks);
  cached -= kStackBatch;
}

void SizeCache::spill_all() {
  pool_put(stacks, cached);
  cached = 0;
}

// The default size's cache is full (release_stack put s in it), or s is of
// another size, or this thread has no cache.
__attribute__((noinline)) void release_stack_slow(const Stack& s) {
  SizeCache* cache = size_cache(s.size);
  if (cache == nullptr) {
    pool_put(&s, 1);
    return;
  }
  if (s.size != kDefaultStackSize) cache->stacks[cache->cached++] = s;
  if (cache->cached == 2 * kStackBatch) cache->spill_older_half();
}
}  // namespace

void acquire_stack(std::size_t usable, Stack* out) {
  ThreadStacks& t = tls_stacks;
  if (usable == kDefaultStackSize && t.defaults.cached != 0) {
    *out = t.defaults.stacks[--t.defaults.cached];
    count_live(*out, +1);
    return;
  }
  acquire_stack_slow(usable, out);
}

void release_stack(const Stack& s) {
  count_live(s, -1);
  ThreadStacks& t = tls_stacks;
  if (s.size == kDefaultStackSize && t.attached) {
    t.defaults.stacks[t.defaults.cached++] = s;
    if (t.defaults.cached < 2 * kStackBatch) return;
  }
  release_stack_slow(s);  // the cache is full (s is in it), or s is not for it
}

void attach_stack_cache() {
  ThreadStacks& t = tls_stacks;
  LiveRegistry& r = live_registry();
  std::lock_guard lock(r.mu);
  t.next = r.attached;
  r.attached = &t;
  t.attached = true;
  t.defaults.size = kDefaultStackSize;
  t.others = new SizeCache[kOtherSizes];
}

void detach_stack_cache() {
  ThreadStacks& t = tls_stacks;
  if (!t.attached) return;
  spill_stack_cache();
  delete[] t.others;
  t.others = nullptr;
  LiveRegistry& r = live_registry();
  std::lock_guard lock(r.mu);
  r.other_mapped.fetch_add(t.live_mapped.exchange(0), std::memory_order_relaxed);
  r.other_slab.fetch_add(t.live_slab.exchange(0), std::memory_order_relaxed);
  ThreadStacks** link = &r.attached;
  while (*link != &t) link = &(*link)->next;
  *link = t.next;
  t.attached = false;
}

bool saved_sp_in_bounds(const Fiber* f) {
  const char* sp = static_cast<const char*>(f->sp);
  return sp >= f->stack.lo && sp <= f->stack.hi();
}

void give_back_stack_pages(const Stack& s) {
  // The mapping, its guard and its addresses stay; the next touch faults a
  // zero page in.
  madvise(s.lo, s.size, MADV_DONTNEED);
}

std::size_t scavenge_pooled_stacks(std::size_t max_stacks) {
  const std::uint32_t now = coarse_now_ms();
  const std::uint32_t delay = scavenge_delay_ms.load(std::memory_order_relaxed);
  Pool& p = pool();
  std::vector<Stack> taken;
  {
    std::lock_guard lock(p.mu);
    for (auto& [size, list] : p.free_by_size) {
      while (!list.warm.empty() && taken.size() < max_stacks &&
             now - list.warm.front().since_ms >= delay) {
        taken.push_back(list.warm.front().stack);
        list.warm.pop_front();
      }
    }
  }
  // Outside the lock: a madvise of a touched stack takes microseconds, and
  // spawns must not wait for it. The taken stacks stay counted as pooled.
  for (const Stack& s : taken) give_back_stack_pages(s);
  if (!taken.empty()) {
    std::lock_guard lock(p.mu);
    for (const Stack& s : taken) p.free_by_size[s.size].cold.push_back(s);
    p.scavenged += taken.size();
  }
  return taken.size();
}

std::size_t unmap_cold_stacks(std::size_t keep) {
  Pool& p = pool();
  std::vector<Stack> unmapping;
  {
    std::lock_guard lock(p.mu);
    for (auto& [size, list] : p.free_by_size) {
      // Slab stacks stay: their slab cannot be unmapped a stack at a time.
      std::size_t kept = 0;
      for (const Stack& s : list.cold) {
        if (s.slab || kept < keep) {
          list.cold[kept++] = s;  // kept <= this one's index: compacts in place
        } else {
          unmapping.push_back(s);
        }
      }
      list.cold.resize(kept);
      // The list of a burst's stacks is itself a burst's worth of memory.
      if (list.cold.capacity() > 4 * list.cold.size() + 64) list.cold.shrink_to_fit();
    }
    p.pooled -= unmapping.size();
  }
  for (const Stack& s : unmapping) unmap_guarded(s);
  return unmapping.size();
}

bool slab_stacks_guarded() {
  return guard_markers_supported();
}

void set_stack_scavenge_delay(std::chrono::milliseconds delay) {
  scavenge_delay_ms.store(static_cast<std::uint32_t>(delay.count()), std::memory_order_relaxed);
}

void spill_stack_cache() {
  ThreadStacks& t = tls_stacks;
  if (!t.attached) return;
  t.defaults.spill_all();
  for (std::size_t i = 0; i < kOtherSizes; ++i) t.others[i].spill_all();
}

bool stacks_cached() {
  const ThreadStacks& t = tls_stacks;
  if (t.defaults.cached != 0) return true;
  for (std::size_t i = 0; t.others != nullptr && i < kOtherSizes; ++i) {
    if (t.others[i].cached != 0) return true;
  }
  return false;
}

void set_guarded_stack_budget(std::size_t stacks) {
  budget_override.store(stacks, std::memory_order_relaxed);
}

StackStats stack_stats() {
  Pool& p = pool();
  std::lock_guard lock(p.mu);
  LiveRegistry& r = live_registry();
  std::lock_guard live_lock(r.mu);
  std::int64_t mapped = r.other_mapped.load(), slab = r.other_slab.load();
  for (const ThreadStacks* t = r.attached; t; t = t->next) {
    mapped += t->live_mapped.load(std::memory_order_relaxed);
    slab += t->live_slab.load(std::memory_order_relaxed);
  }
  return StackStats{static_cast<std::size_t>(mapped),
                    static_cast<std::size_t>(slab),
                    p.pooled,
                    guarded_mapped.load(),
                    p.scavenged,
                    p.trips};
}

void report_overflow(const Fiber* fiber, const Stack& stack, const char* how) {
  write_str("weft: ");
  write_fiber(fiber);
  write_str(" overflowed its ");
  write_u64(stack.size / 1024);
  write_str(" KiB stack");
  if (how) {
    write_str(" (");
    write_str(how);
    write_str(")");
  }
  write_str("; give it more with weft::SpawnOptions{.stack_size = ...}\n");
  signal(SIGABRT, SIG_DFL);
  abort();
}

void install_overflow_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
    sigaction(SIGBUS, &sa, &previous_bus);
  });
}

void* enter_signal_stack() {
  const std::size_t size = std::size_t{64} * 1024;
  void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) return nullptr;
  stack_t ss{};
  ss.ss_sp = mem;
  ss.ss_size = size;
  ss.ss_flags = 0;
  if (sigaltstack(&ss, nullptr) != 0) {
    munmap(mem, size);
    return nullptr;
  }
  return mem;
}

void leave_signal_stack(void* handle) {
  if (!handle) return;
  stack_t ss{};
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, nullptr);
  munmap(handle, std::size_t{64} * 1024);
}

}  // namespace weft::detail
