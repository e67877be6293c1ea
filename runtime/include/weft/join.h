// Joinable fibers, the habit of std::jthread and Tokio's JoinHandle:
//
//   weft::JoinHandle<int> h = weft::spawn([&] { return work(input); });
//   ...
//   int n = h.join();  // parks until the fiber returns; rethrows what it threw
//
// spawn() is weft::go plus one allocation (the shared result); go() itself is
// untouched and stays the cheaper way to start a fiber nobody waits for.
//
// - join() returns fn's result, or rethrows the exception fn let escape, as
//   weft::blocking and std::future do: the joiner is the one place that can
//   handle it. So a spawned fiber's exception is caught in the fiber, where a
//   go()'d fiber's ends the process at its throw site.
// - The destructor joins (std::jthread's choice, not std::thread's terminate
//   nor Tokio's detach): a fiber handed references into the caller's frame
//   (`[&]`) cannot outlive it, and a result or an exception is never dropped
//   unseen. detach() lets the fiber run on alone.
// - An exception that no join() takes ends the process, as it would have in
//   a go()'d fiber: from the fiber itself when it was detached first, else
//   where the handle is destroyed or detached, with the exception's text.
// - A fiber that never ran when weft::run returned is abandoned (its
//   closure destroyed unrun): its join() throws std::runtime_error, and the
//   destructor and detach() pass over it. One abandoned mid-call (parked
//   when run returned) never ends: its handle's join waits for good, so
//   join or detach before main returns.
#pragma once

#include "weft/detail/cxx20.h"

#include <atomic>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <type_traits>
#include <utility>

#include "weft/detail/park.h"
#include "weft/runtime.h"

namespace weft {

namespace detail {

// The word a handle and its fiber share: who is waiting, and who frees the
// state. The handle frees it once the fiber is done; a detached state is
// freed by the fiber, or by detach() when the fiber finished first.
class JoinWord {
 public:
  bool finished() const noexcept {
    // Acquire pairs with the release half of finish()'s exchange: a caller
    // told "done" may read the result.
    return word_.load(std::memory_order_acquire) == kDone;
  }

  // The fiber's last step after storing its result: true if the handle was
  // detached, and the caller now owns the state.
  bool finish() noexcept {
    // Release pairs with the acquire in finished(), wait()'s commit and
    // detach(): they read the result stored before this. Acquire pairs with
    // detach()'s release: a detached state is now the fiber's to free.
    const std::uintptr_t prev = word_.exchange(kDone, std::memory_order_acq_rel);
    if (prev == kDetached) return true;
    // A parked joiner: woken with a copy, since it may free the state as soon
    // as it runs.
    if (prev != kRunning) ready(reinterpret_cast<Fiber*>(prev));
    return false;
  }

  // Parks the caller (fiber or thread) until finish().
  void wait() noexcept {
    if (finished()) return;
    std::atomic<std::uintptr_t>* word = &word_;
    park_with(WaitReason::unknown, [word](Fiber* self) {
      std::uintptr_t expected = kRunning;
      // Release publishes the waiter to finish()'s exchange (its acquire);
      // a failure found kDone, and its acquire pairs with finish()'s release.
      return word->compare_exchange_strong(expected, reinterpret_cast<std::uintptr_t>(self),
                                           std::memory_order_acq_rel, std::memory_order_acquire);
    });
    // Back only once finish() has stored kDone (only it readies a committed
    // waiter): this acquire pairs with its release whatever path the
    // wake-up took, so the result is visible.
    (void)word_.load(std::memory_order_acquire);
  }

  // True if the fiber had already finished: the caller then owns the state.
  bool detach() noexcept {
    // Acquire pairs with finish()'s release (the result may be read, then
    // freed); release pairs with finish()'s acquire (the fiber frees it).
    return word_.exchange(kDetached, std::memory_order_acq_rel) == kDone;
  }

 private:
  // Otherwise the word holds the parked joiner (a Fiber*, never 0, 1 or 2).
  static constexpr std::uintptr_t kRunning = 0, kDone = 1, kDetached = 2;
  std::atomic<std::uintptr_t> word_{kRunning};
};

template <class T>
struct JoinState {
  JoinWord word;
  std::exception_ptr error;
  bool never_ran = false;  // abandoned unrun at teardown: no result, no error
  std::optional<T> result;
};
template <>
struct JoinState<void> {
  JoinWord word;
  std::exception_ptr error;
  bool never_ran = false;
};

// Lets spawn() build a handle around its state.
struct JoinTag {};

// An exception nobody will join: fatal, as one escaping a go()'d fiber.
[[noreturn]] inline void die_unjoined(std::uint64_t fiber, std::exception_ptr error) noexcept {
  std::fprintf(stderr, "weft: fiber %llu ended with an exception that no join() took\n",
               static_cast<unsigned long long>(fiber));
  // Out of a noexcept function: std::terminate, whose handler prints the text.
  std::rethrow_exception(std::move(error));
}

}  // namespace detail

template <class T>
class JoinHandle {
  static_assert(!std::is_reference_v<T>,
                "weft::spawn: the function must return a value (or a pointer), not a reference");

 public:
  JoinHandle() noexcept = default;  // joins nothing
  JoinHandle(detail::JoinTag, detail::JoinState<T>* state, std::uint64_t id) noexcept
      : state_(state), id_(id) {}
  JoinHandle(JoinHandle&& other) noexcept
      : state_(std::exchange(other.state_, nullptr)), id_(other.id_) {}
  // Joins the fiber this handle had, as the destructor does, then takes over.
  JoinHandle& operator=(JoinHandle&& other) noexcept {
    if (this != &other) {
      join_and_drop();
      state_ = std::exchange(other.state_, nullptr);
      id_ = other.id_;
    }
    return *this;
  }
  JoinHandle(const JoinHandle&) = delete;
  JoinHandle& operator=(const JoinHandle&) = delete;
  // Joins: parks until the fiber returns and drops its result. An exception
  // it threw, not taken by join(), ends the process.
  ~JoinHandle() { join_and_drop(); }

  // True until join() or detach() (false for a default or moved-from handle).
  bool joinable() const noexcept { return state_ != nullptr; }
  // Non-blocking: true once fn has returned or thrown, when join() will not
  // park.
  bool finished() const noexcept { return state_ && state_->word.finished(); }
  // The fiber's id (weft::fiber_id() inside it), kept after join and detach.
  std::uint64_t id() const noexcept { return id_; }

  // Parks the caller (fiber or plain thread) until the fiber ends; returns
  // fn's result, or rethrows what fn threw. Once: the handle is then empty.
  T join() {
    if (!state_) throw std::logic_error("weft::JoinHandle::join: no fiber to join");
    state_->word.wait();
    Owned state(std::exchange(state_, nullptr));
    if (state.get()->error) std::rethrow_exception(std::move(state.get()->error));
    if (state.get()->never_ran) {
      throw std::runtime_error("weft::JoinHandle::join: the fiber never ran (weft::run returned)");
    }
    if constexpr (!std::is_void_v<T>) return std::move(*state.get()->result);
  }

  // Lets the fiber run on alone; its result is dropped, and an exception it
  // throws ends the process. Does nothing on an empty handle.
  void detach() noexcept {
    if (!state_) return;
    detail::JoinState<T>* state = std::exchange(state_, nullptr);
    if (state->word.detach()) drop(Owned(state));
  }

 private:
  // Deletes a finished state on every way out of the caller.
  class Owned {
   public:
    explicit Owned(detail::JoinState<T>* s) noexcept : s_(s) {}
    Owned(Owned&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
    Owned(const Owned&) = delete;
    Owned& operator=(const Owned&) = delete;
    ~Owned() { delete s_; }
    detail::JoinState<T>* get() const noexcept { return s_; }

   private:
    detail::JoinState<T>* s_;
  };

  void drop(Owned state) noexcept {
    if (state.get()->error) detail::die_unjoined(id_, std::move(state.get()->error));
  }

  void join_and_drop() noexcept {
    if (!state_) return;
    state_->word.wait();
    drop(Owned(std::exchange(state_, nullptr)));
  }

  detail::JoinState<T>* state_ = nullptr;
  std::uint64_t id_ = 0;
};

// Spawns a fiber that runs fn, as weft::go (same options, same spawn site in
// dumps), and returns the handle that joins it. fn is destroyed in the fiber
// before join() returns, so what it captured is released by then.
template <class F>
[[nodiscard(
    "the handle joins the fiber when destroyed: keep it, detach() it, or use weft::go")]] auto
spawn(F&& fn, const SpawnOptions& opts = {}, detail::SpawnSite site = detail::SpawnSite::here()) {
  using Fn = std::decay_t<F>;
  using T = std::invoke_result_t<Fn&>;
  using State = detail::JoinState<T>;
  auto* state = new State();
  struct Body {
    State* state;  // null once run, and in a moved-from Body
    std::optional<Fn> fn;

    Body(State* s, std::optional<Fn> f) noexcept(std::is_nothrow_move_constructible_v<Fn>)
        : state(s), fn(std::move(f)) {}
    Body(Body&& other) noexcept(std::is_nothrow_move_constructible_v<Fn>)
        : state(std::exchange(other.state, nullptr)), fn(std::move(other.fn)) {}
    Body(const Body&) = delete;
    Body& operator=(const Body&) = delete;
    Body& operator=(Body&&) = delete;
    // Destroyed unrun (abandoned at teardown): the handle must still learn
    // the fiber is over, and a detached state still needs freeing.
    ~Body() {
      if (!state) return;
      fn.reset();
      state->never_ran = true;
      if (state->word.finish()) delete state;
    }

    void operator()() {
      try {
        if constexpr (std::is_void_v<T>) {
          std::invoke(*fn);
        } else {
          state->result.emplace(std::invoke(*fn));
        }
      } catch (...) {
        state->error = std::current_exception();
      }
      // Before finish(): once a joiner returns, its frame, which fn may
      // reference, can be gone.
      fn.reset();
      State* const s = std::exchange(state, nullptr);
      if (s->word.finish()) {
        // Detached: nobody will read the result.
        std::exception_ptr error = std::move(s->error);
        const std::uint64_t id = weft::fiber_id();
        delete s;
        if (error) detail::die_unjoined(id, std::move(error));
      }
    }
  };
  std::uint64_t id = 0;
  try {
    id = weft::go(Body(state, std::optional<Fn>(std::forward<F>(fn))), opts, site);
  } catch (...) {
    delete state;  // nothing was spawned
    throw;
  }
  return JoinHandle<T>(detail::JoinTag{}, state, id);
}

}  // namespace weft
