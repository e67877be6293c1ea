// FiberLocal (weft/fiber_local.h): the tables behind it. The fast path,
// fiber_local_table(), is in scheduler.cc beside the TLS it reads.
//
// - A table belongs to one fiber (its record's `locals`) or one thread, and
//   only that fiber or thread touches it while it lives, so it takes no
//   lock: a fiber runs on one thread at a time, and the switch that moves
//   it orders its accesses (the run queues' release/acquire pairs).
// - Keys come from one counter and are never reused: a value outlives the
//   FiberLocal that made it, carrying its own deleter, and no later
//   FiberLocal can mistake it for its own.
// - The only shared state is the key counter and the orphan list (tables of
//   fibers reclaimed without ending, destroyed at the next teardown).
#include "weft/fiber_local.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <new>
#include <utility>
#include <vector>

#include "fiber.h"
#include "scheduler.h"

namespace weft::detail {

namespace {

// pthread's PTHREAD_DESTRUCTOR_ITERATIONS: destructors that keep making
// values again get this many passes.
constexpr int kDestructorPasses = 4;

struct Table : FiberLocalTable {
  std::vector<void*> store;                // by key; FiberLocalTable::values is its data
  std::vector<FiberLocalDestroy> deleter;  // by key, beside store
  std::vector<std::uint32_t> order;        // keys with a value, in construction order

  void grow_to(std::uint32_t key) {
    if (key < store.size()) return;
    // Doubling: a fiber that touches keys 1, 2, 3... reallocates log n times.
    const std::size_t n = std::max<std::size_t>(std::size_t{key} + 1, store.size() * 2);
    store.resize(n, nullptr);
    deleter.resize(n, nullptr);
    values = store.data();
    size = static_cast<std::uint32_t>(n);
  }
  // Takes the value of `key` out (null if none), and its deleter.
  void* take(std::uint32_t key, FiberLocalDestroy* destroy) {
    if (key >= store.size()) return nullptr;
    void* v = std::exchange(store[key], nullptr);
    *destroy = deleter[key];
    return v;
  }
};

std::atomic<std::uint32_t> next_key{1};  // 0 is FiberLocal's "no key yet"

std::mutex orphans_mu;
std::vector<FiberLocalTable*> orphans;  // held here, so LeakSanitizer sees them reachable

// Destroys this thread's values when it exits. Touched (and its destructor
// registered) only by a thread that makes a value outside any fiber.
struct ThreadLocals {
  bool armed = false;
  ~ThreadLocals() { destroy_fiber_locals(*fiber_local_home()); }
};
thread_local ThreadLocals thread_locals_owner;

}  // namespace

std::uint32_t fiber_local_new_key() noexcept {
  // relaxed: keys need only be distinct, which the RMW alone ensures.
  const std::uint32_t key = next_key.fetch_add(1, std::memory_order_relaxed);
  if (key > UINT32_MAX / 2) {
    // Never in a program whose FiberLocals are static; one that makes them
    // by the billion would otherwise wrap onto keys in use.
    std::fputs("weft: FiberLocal keys exhausted (FiberLocal objects are meant to be static)\n",
               stderr);
    std::abort();
  }
  return key;
}

void* fiber_local_create(std::uint32_t key, FiberLocalMake make, FiberLocalDestroy destroy,
                         const void* local) {
  // Made before the table is looked up: make() may park (and resume on
  // another thread), or make other FiberLocals' values (and grow the table).
  void* value = make(local);
  bool on_thread = false;
  FiberLocalTable*& home = *fiber_local_home(&on_thread);
  try {
    if (!home) {
      if (on_thread) thread_locals_owner.armed = true;  // registers its destructor
      home = new Table;
    }
    auto* t = static_cast<Table*>(home);
    t->grow_to(key);
    // Room first, so that nothing below throws; doubling, as reserve() alone
    // would reallocate on every value.
    if (t->order.size() == t->order.capacity()) t->order.reserve(2 * t->order.size() + 4);
    if (t->store[key]) {
      // make() read this very FiberLocal after all and made it meanwhile;
      // keep the first, as a second construction must not be observable.
      destroy(value);
      return t->store[key];
    }
    t->store[key] = value;
    t->deleter[key] = destroy;
    t->order.push_back(key);
  } catch (...) {
    destroy(value);
    throw;
  }
  return value;
}

void fiber_local_reset(std::uint32_t key) noexcept {
  FiberLocalTable* home = *fiber_local_home();
  if (!home) return;
  auto* t = static_cast<Table*>(home);
  FiberLocalDestroy destroy = nullptr;
  void* v = t->take(key, &destroy);
  if (!v) return;
  // Absent while destroy_fiber_locals holds the pass's keys (a destructor
  // resetting a value not yet destroyed): the pass then finds it gone.
  if (auto it = std::find(t->order.begin(), t->order.end(), key); it != t->order.end()) {
    t->order.erase(it);
  }
  destroy(v);  // last: it may touch the table (other FiberLocals)
}

void destroy_fiber_locals(FiberLocalTable*& home) noexcept {
  if (!home) return;
  // `home` is a record's field or this thread's TLS slot, both stable while
  // a destructor parks or migrates; the table stays installed meanwhile, so
  // a destructor that reads another FiberLocal finds its value (or makes a
  // new one, destroyed in the next pass).
  auto* t = static_cast<Table*>(home);
  for (int pass = 0; pass < kDestructorPasses && !t->order.empty(); ++pass) {
    // Reverse order of construction, as thread_local (a value made from
    // another's factory goes before the one it used).
    std::vector<std::uint32_t> keys = std::move(t->order);
    t->order.clear();
    for (auto k = keys.rbegin(); k != keys.rend(); ++k) {
      FiberLocalDestroy destroy = nullptr;
      if (void* v = t->take(*k, &destroy)) destroy(v);
    }
  }
  if (!t->order.empty()) {
    std::fprintf(stderr,
                 "weft: %zu FiberLocal values were made again by destructors after %d passes; "
                 "left undestroyed\n",
                 t->order.size(), kDestructorPasses);
  }
  home = nullptr;
  delete t;
}

void orphan_fiber_locals(Fiber* f) noexcept {
  FiberLocalTable* t = std::exchange(f->locals, nullptr);
  std::lock_guard lock(orphans_mu);
  try {
    orphans.push_back(t);
  } catch (...) {
    // Out of memory: leaking the values is safe, destroying them here is not.
  }
}

void destroy_orphaned_fiber_locals() noexcept {
  std::vector<FiberLocalTable*> tables;
  {
    std::lock_guard lock(orphans_mu);
    tables.swap(orphans);
  }
  for (FiberLocalTable* t : tables) destroy_fiber_locals(t);
}

}  // namespace weft::detail
