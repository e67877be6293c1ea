// weft::FiberLocal<T>: a value per fiber, where thread_local gives one per
// worker thread. A fiber that parks may resume on another worker, so a
// thread_local read before a park and after it may be two threads' values
// (README, "thread_local in fibers"); a FiberLocal follows the fiber.
//
//   static weft::FiberLocal<RequestStats> stats;
//   stats->bytes += n;  // this fiber's RequestStats, made on first use
//
// - Each fiber's value is made on its first get() in that fiber: value-
//   initialised (T()), or from the factory given to the constructor.
// - It is destroyed when the fiber's function has returned (after the
//   function object itself is destroyed), on the fiber's own stack, in the
//   reverse order of construction, as thread_local values are. Its
//   destructor may use anything weft offers, parking included (the fiber
//   still exists until they have all run). A destructor that makes a value
//   again (a get() of a FiberLocal already destroyed) gets it destroyed in
//   another pass; what is still being re-made after four passes is left
//   undestroyed, with a message (pthread keys' rule).
// - Outside any fiber (a plain thread, main before weft::run, a worker's
//   own loop) a FiberLocal is per thread, and the thread's values are
//   destroyed when it exits.
// - A fiber abandoned when weft::run returns (Go's exit: see README) keeps
//   its values while it is kept; one reclaimed later (a late ready) hands
//   them to the next weft::run's teardown, which destroys them on the
//   thread that called it. They are never freed under a fiber still using
//   them, and LeakSanitizer sees them reachable meanwhile.
// - The FiberLocal object itself may be destroyed while fibers still hold
//   values: each value carries its own deleter, and a key (the value's
//   index) is never reused, so the values stay with their fibers and are
//   destroyed as above. Meant for static and namespace-scope objects: each
//   FiberLocal ever used takes a key for the life of the process, and a
//   fiber's table grows to its highest key.
// - A factory must not read its own FiberLocal (as a static's initialiser
//   must not recurse), and one that throws leaves no value: the next get()
//   tries again.
// - Cost (docs/ARCHITECTURE.md): get() on a value already made is one call
//   into libweft (the running fiber's table, read fresh every time, so a
//   fiber that migrated never reads through a cached thread's address), a
//   bound check and two loads. The first get() per fiber allocates.
#pragma once

#include "weft/detail/cxx20.h"

#include <atomic>
#include <cstdint>
#include <functional>
#include <type_traits>
#include <utility>

namespace weft {

namespace detail {

// A fiber's (or thread's) values, indexed by key; FiberLocal's fast path
// reads only these two fields. The rest (deleters, construction order) is
// in fiber_local.cc.
struct FiberLocalTable {
  std::uint32_t size = 0;  // values[0..size); key 0 is never given out
  void** values = nullptr;
};
using FiberLocalMake = void* (*)(const void* local);
using FiberLocalDestroy = void (*)(void* value) noexcept;

// The running fiber's table, or this thread's outside any fiber; an empty
// one when there is none yet, never null. Out of line and never inlined,
// for the reason current_worker() is: after any switch the caller may be on
// another thread.
const FiberLocalTable* fiber_local_table() noexcept;
// A key no FiberLocal had before.
std::uint32_t fiber_local_new_key() noexcept;
// The slow half of get(): makes the running fiber's value for `key` with
// make(local) and files it with `destroy`.
void* fiber_local_create(std::uint32_t key, FiberLocalMake make, FiberLocalDestroy destroy,
                         const void* local);
// Destroys the running fiber's value for `key`, if any.
void fiber_local_reset(std::uint32_t key) noexcept;

}  // namespace detail

template <class T>
class FiberLocal {
  static_assert(std::is_object_v<T> && !std::is_array_v<T> && !std::is_const_v<T>,
                "FiberLocal<T>: T must be a non-const, non-array object type");

 public:
  // Each fiber's value starts as T().
  FiberLocal() noexcept {
    static_assert(std::is_default_constructible_v<T>,
                  "FiberLocal<T>: T has no default constructor; give FiberLocal a factory");
  }
  // Each fiber's value starts as factory(), called in that fiber on its
  // first get() (it may park).
  template <class F, std::enable_if_t<!std::is_same_v<std::remove_cvref_t<F>, FiberLocal> &&
                                          std::is_invocable_r_v<T, F&>,
                                      int> = 0>
  explicit FiberLocal(F&& factory) : factory_(std::forward<F>(factory)) {}

  // A FiberLocal is the key itself: a copy would be a second variable.
  FiberLocal(const FiberLocal&) = delete;
  FiberLocal& operator=(const FiberLocal&) = delete;
  // Values fibers still hold stay theirs (see the top of this file).
  ~FiberLocal() = default;

  // The running fiber's value (this thread's outside fibers), made first
  // if it has none. Do not keep the reference past the fiber's end, and do
  // not hand it to another fiber expecting that fiber's value.
  T& get() {
    // relaxed: the key is the only thing published (no data is reached
    // through it but the caller's own table), so no partner is needed.
    const std::uint32_t k = key_.load(std::memory_order_relaxed);
    const detail::FiberLocalTable* t = detail::fiber_local_table();
    if (k < t->size) [[likely]] {
      if (void* v = t->values[k]) [[likely]] {
        return *static_cast<T*>(v);
      }
    }
    return *static_cast<T*>(detail::fiber_local_create(key(), &make, &destroy, this));
  }
  T& operator*() { return get(); }
  T* operator->() { return &get(); }

  // Whether the running fiber has made its value (and not reset it).
  bool has_value() const noexcept {
    const std::uint32_t k = key_.load(std::memory_order_relaxed);
    const detail::FiberLocalTable* t = detail::fiber_local_table();
    return k != 0 && k < t->size && t->values[k] != nullptr;
  }
  // Destroys the running fiber's value now; the next get() makes a new one.
  void reset() noexcept {
    if (const std::uint32_t k = key_.load(std::memory_order_relaxed)) detail::fiber_local_reset(k);
  }

 private:
  // Keys are taken on first use, so that a FiberLocal never used costs none.
  std::uint32_t key() const {
    std::uint32_t k = key_.load(std::memory_order_relaxed);
    if (k != 0) return k;
    const std::uint32_t fresh = detail::fiber_local_new_key();
    // relaxed, as in get(): losing the race wastes a key, nothing else.
    return key_.compare_exchange_strong(k, fresh, std::memory_order_relaxed) ? fresh : k;
  }
  static void* make(const void* self) {
    const auto* me = static_cast<const FiberLocal*>(self);
    if constexpr (std::is_default_constructible_v<T>) {
      if (!me->factory_) return new T();
    }
    return new T(me->factory_());
  }
  static void destroy(void* value) noexcept { delete static_cast<T*>(value); }

  mutable std::atomic<std::uint32_t> key_{0};
  std::function<T()> factory_;
};

}  // namespace weft
