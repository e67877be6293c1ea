// golang.org/x/sync/errgroup: fibers working on parts of one task, waited
// for together, the first failure reported and, with a context, cancelling
// the rest.
//
//   auto [group, ctx] = weft::Group::with_context(parent);
//   for (const auto& url : urls) {
//     group.go([&, url] { return fetch(ctx, url); });  // std::error_code
//   }
//   if (std::error_code ec = group.wait()) ...  // the first failure
#pragma once

#include <cstdint>
#include <memory>
#include <system_error>
#include <type_traits>
#include <utility>

#include "weft/context.h"
#include "weft/runtime.h"
#include "weft/semaphore.h"
#include "weft/sync.h"

namespace weft {

struct GroupWithContext;

// A default Group has no context: it only collects the first error. Fibers
// refer to their Group, so destroying it waits for them; it cancels its
// context first (std::jthread requests stop before it joins), so fibers
// that watch the context end instead of keeping the destructor waiting.
// Call wait() to learn the result: the destructor drops it.
class Group {
 public:
  Group() noexcept = default;
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  // Go's errgroup.WithContext: a Group and a child of `parent` that is
  // cancelled the first time a fiber of the group fails, with that error as
  // its cause (weft::cause(ctx), Go 1.20's WithCancelCause), or when wait()
  // returns, whichever comes first.
  static GroupWithContext with_context(const Context& parent);

  // Runs fn (returning std::error_code, empty for success) in a new fiber.
  // With a limit set, first waits until fewer than that many of the
  // group's fibers run.
  template <class F>
  void go(F&& fn, detail::SpawnSite site = detail::SpawnSite::here()) {
    static_assert(std::is_convertible_v<std::invoke_result_t<std::decay_t<F>&>, std::error_code>,
                  "weft::Group::go: fn must return std::error_code");
    take_slot();
    spawn(std::forward<F>(fn), site);
  }

  // Like go(), but only if the limit leaves room now; false (and fn not
  // run) otherwise.
  template <class F>
  bool try_go(F&& fn, detail::SpawnSite site = detail::SpawnSite::here()) {
    static_assert(std::is_convertible_v<std::invoke_result_t<std::decay_t<F>&>, std::error_code>,
                  "weft::Group::try_go: fn must return std::error_code");
    if (!try_take_slot()) return false;
    spawn(std::forward<F>(fn), site);
    return true;
  }

  // Waits for every fiber started so far, then cancels the context (if
  // any) and returns the first error, or an empty code.
  std::error_code wait();

  // Go's SetLimit: at most n of the group's fibers run at once; negative,
  // no limit. Zero lets none start: try_go() fails, and go() reports the
  // misuse and aborts (Go's blocks forever). Changing it while fibers of
  // the group run is a bug: reported, then abort, as Go panics.
  void set_limit(std::int64_t n);

 private:
  explicit Group(CancelCauseFunc cancel) noexcept : cancel_(std::move(cancel)) {}

  template <class F>
  void spawn(F&& fn, const detail::SpawnSite& site) {
    running_.add(1);
    try {
      weft::go([this, task = std::forward<F>(fn)]() mutable { finish(task()); }, {}, site);
    } catch (...) {
      // Nothing was spawned (moving fn in threw): give back what it held.
      finish({});
      throw;
    }
  }
  void take_slot();
  bool try_take_slot() noexcept;
  // A fiber of the group ended with `result`: the last access to *this.
  void finish(std::error_code result) noexcept;

  WaitGroup running_;
  Once first_failure_;
  std::error_code first_error_;  // set once, under first_failure_
  CancelCauseFunc cancel_;       // empty for a Group without context
  std::unique_ptr<Semaphore> limit_;
  std::int64_t limit_size_ = -1;
};

// What Group::with_context returns: the Group is built in place (it cannot
// move, its fibers refer to it), so bind it by name:
//   auto [group, ctx] = weft::Group::with_context(parent);
struct GroupWithContext {
  Group group;
  Context ctx;
};

}  // namespace weft
