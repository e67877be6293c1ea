// Idle stacks: see idle_stack.h for the protocol.
#include "idle_stack.h"

#include <chrono>
#include <cstdlib>
#include <mutex>
#include <thread>
#include <vector>

#include "chaos.h"
#include "env.h"
#include "grace.h"
#include "netpoll.h"
#include "stack.h"
#include "weft/detail/park.h"

namespace weft::detail {

namespace {

constexpr std::uint32_t kDefaultAfterMs = 1000;
constexpr std::uint32_t kUnsetAfterMs = ~std::uint32_t{0};
// Fibers held off their slots at once by a sweep: a wake-up that comes for
// one waits for the batch's give-backs (a few microseconds each).
constexpr std::size_t kSweepBatch = 16;

std::atomic<std::uint32_t> after_ms{kUnsetAfterMs};

// The fibers that may give their stacks back, for the sweep.
std::mutex list_mu;
std::vector<Fiber*> fibers;  // under list_mu
std::size_t cursor = 0;      // under list_mu: where the next sweep starts

// Held by each give-back and by a dump (IdleStackDumpLock). Never by a
// worker: a dump waits for workers to stop, and must not wait for one
// waiting for it.
std::mutex give_mu;

std::atomic<std::uint64_t> given_back{0}, taken_back{0}, saved_bytes{0};

// A copy that no sanitizer checks: a parked stack holds the poisoned
// redzones of ASan's frames, and its bytes are the fiber's, not the
// copier's, as far as TSan is concerned (the park and the queue order the
// two threads).
void copy_unchecked(char* dst, const char* src, std::size_t n) noexcept {
#if defined(__x86_64__)
  asm volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
#else
  auto* d = reinterpret_cast<volatile char*>(dst);
  const auto* s = reinterpret_cast<const volatile char*>(src);
  for (std::size_t i = 0; i < n; ++i) d[i] = s[i];
#endif
}

std::size_t used_bytes(const Fiber* f) {
  return static_cast<std::size_t>(f->stack.hi() - static_cast<char*>(f->sp));
}

// f is held off its slot (netpoll_hold_parked): parked in block(), with its
// stack in place (the sweep clears the slot it gave back, so it never holds
// a given-back one); nobody runs it or reads its stack but a dump, which
// give_mu keeps out.
bool give_back(Fiber* f) {
  const std::size_t n = used_bytes(f);
  char* saved = static_cast<char*>(std::malloc(n));
  if (!saved) return false;  // the pages stay; nothing else changes
  std::lock_guard lock(give_mu);
  copy_unchecked(saved, static_cast<const char*>(f->sp), n);
  give_back_stack_pages(f->stack);
  idle_stack_of(f)->saved = saved;
  f->stack.given_back = true;
  given_back.fetch_add(1, std::memory_order_relaxed);
  saved_bytes.fetch_add(n, std::memory_order_relaxed);
  return true;
}

}  // namespace

std::uint32_t idle_stack_after_ms() {
  std::uint32_t ms = after_ms.load(std::memory_order_relaxed);
  if (ms != kUnsetAfterMs) return ms;
  const auto v =
      env_number("WEFT_IDLE_STACK_MS", 0, 86'400'000, "milliseconds from 0 to 86400000", "1000");
  ms = v ? static_cast<std::uint32_t>(*v) : kDefaultAfterMs;
  std::uint32_t unset = kUnsetAfterMs;
  // A test's setting, stored meanwhile, wins.
  after_ms.compare_exchange_strong(unset, ms, std::memory_order_relaxed);
  return after_ms.load(std::memory_order_relaxed);
}

void set_idle_stack_after_ms(std::uint32_t ms) {
  after_ms.store(ms, std::memory_order_relaxed);
}

void remember_idle_stack(Fiber* f) {
  std::lock_guard lock(list_mu);
  idle_stack_of(f)->index = static_cast<std::uint32_t>(fibers.size());
  fibers.push_back(f);
}

void forget_idle_stack(Fiber* f) {
  std::lock_guard lock(list_mu);
  const std::uint32_t i = idle_stack_of(f)->index;
  if (i >= fibers.size() || fibers[i] != f) return;  // never ran, or forgotten at the end
  fibers[i] = fibers.back();
  idle_stack_of(fibers[i])->index = i;
  fibers.pop_back();
}

std::size_t give_back_idle_stacks(std::uint32_t now_ms, std::size_t max) {
  const std::uint32_t after = idle_stack_after_ms();
  std::size_t done = 0, looked = 0;
  for (;;) {
    // Taken off their slots under the list's lock, given back outside it: a
    // worker starting or ending such a fiber takes that lock, and must not
    // wait for a batch of madvise calls. A held fiber cannot end, so its
    // record stays.
    struct Held {
      Fiber* f;
      std::atomic<std::uintptr_t>* slot;
    } held[kSweepBatch];
    std::size_t n = 0;
    bool pass_done = false;
    {
      // A stale slot may point into a desc freed since: its page is not
      // given back while we look.
      GraceSection section;
      std::lock_guard lock(list_mu);
      const std::size_t size = fibers.size();
      while (n < kSweepBatch && done + n < max && looked < size) {
        ++looked;
        if (cursor >= size) cursor = 0;
        Fiber* f = fibers[cursor++];
        IdleStack* idle = idle_stack_of(f);
        std::atomic<std::uintptr_t>* slot = idle->slot.load(std::memory_order_relaxed);
        if (!slot || now_ms - idle->since_ms.load(std::memory_order_relaxed) < after) continue;
        if (netpoll_hold_parked(slot, f)) held[n++] = {f, slot};  // else it woke since
      }
      pass_done = looked >= size || done + n >= max;
    }
    for (std::size_t i = 0; i < n; ++i) {
      Fiber* f = held[i].f;
      IdleStack* idle = idle_stack_of(f);
      // Held: a wake-up now finds the slot as a commit in progress leaves it.
      chaos::at(chaos::Point::park_commit);
      // Read again now that the hold ordered us after the commit that
      // published f: the park it describes is this one.
      if (now_ms - idle->since_ms.load(std::memory_order_relaxed) >= after && give_back(f)) {
        ++done;
        idle->slot.store(nullptr, std::memory_order_relaxed);  // the next park sets it
      }
      chaos::at(chaos::Point::park_commit);
      if (!netpoll_put_back_parked(held[i].slot, f)) ready(f);  // a waker came meanwhile
    }
    if (pass_done) return done;
  }
}

void take_back_stack(Fiber* f) {
  IdleStack* idle = idle_stack_of(f);
  const std::size_t n = used_bytes(f);
  copy_unchecked(static_cast<char*>(f->sp), idle->saved, n);
  std::free(idle->saved);
  idle->saved = nullptr;
  f->stack.given_back = false;
  taken_back.fetch_add(1, std::memory_order_relaxed);
  saved_bytes.fetch_sub(n, std::memory_order_relaxed);
}

IdleStackStats idle_stack_stats() {
  IdleStackStats s{};
  s.given_back = given_back.load(std::memory_order_relaxed);
  s.taken_back = taken_back.load(std::memory_order_relaxed);
  s.saved_bytes = saved_bytes.load(std::memory_order_relaxed);
  std::lock_guard lock(list_mu);
  s.fibers = fibers.size();
  return s;
}

IdleStackDumpLock::IdleStackDumpLock() noexcept {
  // A give-back holds it for microseconds; a dump taken on the thread that
  // holds it (a fault inside one) must still print, without the walks.
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(100);
  while (!(held_ = give_mu.try_lock()) && std::chrono::steady_clock::now() < until) {
    std::this_thread::yield();
  }
}

IdleStackDumpLock::~IdleStackDumpLock() {
  if (held_) give_mu.unlock();
}

}  // namespace weft::detail
