// Contexts the user implemented (weft::ContextImpl), and what derives from
// them: Go's propagateCancel paths (../shared/SEMANTICS.md, C-9), values and
// causes through custom layers (C-12, C-15), the deadline shortcut (C-13),
// after_func and without_cancel on them, the watcher's accounting, and the
// std::stop_token bridges.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/debug.h"
#include "weft/join.h"
#include "weft/runtime.h"
#include "weft/select.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;
using weft::errc;

const weft::ContextKey<std::string> kUser("user");
const weft::ContextKey<std::string> kRequest("request");

// A user's cause.
class AppCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "app"; }
  std::string message(int v) const override { return "app error " + std::to_string(v); }
};
std::error_code app_error(int v) {
  static const AppCategory category;
  return {v, category};
}

// How a user's context is built, one per propagation path (C-9):
enum class Kind {
  wraps,         // (c) wraps a weft cancel context and keeps its Done
  own_done,      // (e) wraps one but has a Done of its own: a watcher
  after_funcer,  // (d) its own Done, and an after_func
  opaque,        // (e) its own Done, no weft parent at all: a watcher
};

std::string kind_name(Kind k) {
  switch (k) {
    case Kind::wraps:
      return "wraps";
    case Kind::own_done:
      return "own_done";
    case Kind::after_funcer:
      return "after_funcer";
    case Kind::opaque:
      return "opaque";
  }
  return "?";
}

// The user's context: cancel() makes it done (with `cause`), through the
// weft context it wraps or through a Done of its own.
class UserContext final : public weft::ContextImpl {
 public:
  UserContext(Kind kind, weft::Context parent, std::optional<weft::Clock::time_point> deadline)
      : kind_(kind), deadline_(deadline) {
    auto wrapped = weft::with_cancel_cause(std::move(parent));
    wrapped_ = std::move(wrapped.ctx);
    cancel_wrapped_ = std::move(wrapped.cancel);
    auto own = weft::with_cancel_cause(weft::background());
    own_ = std::move(own.ctx);
    cancel_own_ = std::move(own.cancel);
  }

  void cancel(std::error_code cause) const {
    if (kind_ == Kind::wraps || kind_ == Kind::own_done) cancel_wrapped_(cause);
    if (kind_ != Kind::wraps) cancel_own_(cause);
  }

  weft::Done done() const noexcept override {
    return kind_ == Kind::wraps ? wrapped_.done() : own_.done();
  }
  std::error_code err() const noexcept override {
    return kind_ == Kind::wraps ? wrapped_.err() : own_.err();
  }
  std::optional<weft::Clock::time_point> deadline() const noexcept override { return deadline_; }
  const void* value(const void* key) const noexcept override {
    if (key == &kRequest) return &request_;
    // The opaque kind wraps nothing a child could link to.
    return kind_ == Kind::opaque ? nullptr : wrapped_.value(key);
  }
  // The after_funcer kind reports its own cause; the others leave it to
  // Go's rule (the innermost weft cause found through value(), else err()),
  // which cannot see a cause kept in a Done of their own.
  std::error_code cause() const noexcept override {
    return kind_ == Kind::after_funcer ? weft::cause(own_) : weft::ContextImpl::cause();
  }
  std::function<bool()> after_func(std::function<void()> fn) const override {
    if (kind_ != Kind::after_funcer) return {};
    registrations.fetch_add(1);
    weft::AfterFuncStop stop = weft::after_func(own_, std::move(fn));
    return [this, stop] {
      stops.fetch_add(1);
      return stop();
    };
  }
  std::string name() const override { return "user." + kind_name(kind_); }

  mutable std::atomic<int> registrations{0}, stops{0};

 private:
  const Kind kind_;
  const std::optional<weft::Clock::time_point> deadline_;
  const std::string request_ = "req-7";
  weft::Context wrapped_, own_;
  weft::CancelCauseFunc cancel_wrapped_, cancel_own_;
};

struct Custom {
  std::shared_ptr<UserContext> impl;
  weft::Context ctx;
};
Custom make_custom(Kind kind, weft::Context parent = weft::background(),
                   std::optional<weft::Clock::time_point> deadline = std::nullopt) {
  auto impl = std::make_shared<UserContext>(kind, std::move(parent), deadline);
  return {impl, weft::make_context(impl)};
}

bool uses_watcher(Kind k) {
  return k == Kind::own_done || k == Kind::opaque;
}

// What cause() reports for a user's context cancelled with `cause`.
std::error_code expected_cause(Kind k, std::error_code cause) {
  return k == Kind::opaque ? std::error_code(errc::canceled) : cause;
}

void wait_until_no_watchers(std::int64_t baseline) {
  for (int i = 0; i < 20000 && weft::detail::context_watchers_alive() > baseline; ++i) {
    weft::sleep_for(100us);
  }
}

class CustomContextTest : public ::testing::TestWithParam<std::tuple<Kind, int>> {
 protected:
  Kind kind() const { return std::get<0>(GetParam()); }
  weft::RunOptions opts() const { return weft::RunOptions{.workers = std::get<1>(GetParam())}; }
};

// The parent is cancelled: the child follows with its err and cause, at once
// for a wrapper (the same cancel), through a watcher or after_func otherwise.
TEST_P(CustomContextTest, ParentCancelReachesTheChildWithItsCause) {
  weft::run(
      [&] {
        const std::int64_t alive = weft::detail::context_watchers_alive();
        const std::uint64_t started = weft::detail::context_watchers_started();
        Custom parent = make_custom(kind());
        auto [child, cancel] = weft::with_cancel(parent.ctx);
        EXPECT_EQ(weft::detail::context_watchers_started() - started,
                  uses_watcher(kind()) ? 1u : 0u);
        EXPECT_EQ(parent.impl->registrations.load(), kind() == Kind::after_funcer ? 1 : 0);
        EXPECT_FALSE(child.err());
        parent.impl->cancel(app_error(3));
        if (kind() == Kind::wraps) {
          EXPECT_EQ(child.err(), errc::canceled) << "not synchronous";
        }
        child.done().wait();
        EXPECT_EQ(child.err(), errc::canceled);
        EXPECT_EQ(weft::cause(parent.ctx), expected_cause(kind(), app_error(3)));
        EXPECT_EQ(weft::cause(child), expected_cause(kind(), app_error(3)))
            << "the child takes Cause(parent)";
        wait_until_no_watchers(alive);
        EXPECT_EQ(weft::detail::context_watchers_alive(), alive);
      },
      opts());
}

// The child is cancelled first: it lets go of its parent (no watcher left,
// the after_func registration stopped, the wrapped node's child removed).
TEST_P(CustomContextTest, ChildCancelLetsGoOfTheParent) {
  weft::run(
      [&] {
        const std::int64_t alive = weft::detail::context_watchers_alive();
        Custom parent = make_custom(kind());
        {
          auto [child, cancel] = weft::with_cancel(parent.ctx);
          if (kind() == Kind::wraps) {
            EXPECT_EQ(weft::detail::child_count(parent.ctx), 1u);
          }
          cancel();
          EXPECT_EQ(child.err(), errc::canceled);
          EXPECT_EQ(weft::cause(child), errc::canceled);
        }
        wait_until_no_watchers(alive);
        EXPECT_EQ(weft::detail::context_watchers_alive(), alive);
        EXPECT_EQ(weft::detail::child_count(parent.ctx), 0u);
        EXPECT_EQ(parent.impl->stops.load(), parent.impl->registrations.load());
        EXPECT_FALSE(parent.ctx.err()) << "a child's cancel never reaches its parent";
      },
      opts());
}

// A parent already done: the child is born done with its err and cause, and
// nothing is registered (C-9b).
TEST_P(CustomContextTest, ChildOfADoneParentIsBornDone) {
  weft::run(
      [&] {
        const std::uint64_t started = weft::detail::context_watchers_started();
        Custom parent = make_custom(kind());
        parent.impl->cancel(app_error(4));
        auto [child, cancel] = weft::with_cancel(parent.ctx);
        EXPECT_EQ(child.err(), errc::canceled);
        EXPECT_EQ(weft::cause(child), expected_cause(kind(), app_error(4)));
        EXPECT_EQ(weft::detail::context_watchers_started(), started);
        EXPECT_EQ(parent.impl->registrations.load(), 0);
      },
      opts());
}

// Values resolve through custom layers in both directions: a weft value
// above the user's context, the user's own key, and a weft value below.
TEST_P(CustomContextTest, ValuesResolveThroughCustomLayers) {
  weft::run(
      [&] {
        weft::Context top = weft::with_value(weft::background(), kUser, std::string("ada"));
        Custom mid = make_custom(kind(), top);
        weft::Context below = weft::with_value(mid.ctx, kUser, std::string("bob"));
        weft::Context deep = weft::with_cancel(mid.ctx).ctx;
        ASSERT_NE(mid.ctx.value(kRequest), nullptr);
        EXPECT_EQ(*mid.ctx.value(kRequest), "req-7");
        EXPECT_EQ(*deep.value(kRequest), "req-7");
        EXPECT_EQ(*below.value(kUser), "bob");
        if (kind() == Kind::opaque) {
          EXPECT_EQ(mid.ctx.value(kUser), nullptr) << "the opaque kind passes nothing on";
        } else {
          EXPECT_EQ(*mid.ctx.value(kUser), "ada");
          EXPECT_EQ(*deep.value(kUser), "ada");
        }
        // WithoutCancel passes values and hides done, err, deadline, cause.
        mid.impl->cancel(app_error(5));
        const weft::Context detached = weft::without_cancel(mid.ctx);
        EXPECT_EQ(*detached.value(kRequest), "req-7");
        EXPECT_FALSE(detached.done());
        EXPECT_FALSE(detached.err());
        EXPECT_FALSE(weft::cause(detached));
        EXPECT_EQ(mid.ctx.to_string(), "user." + kind_name(kind()));
        EXPECT_EQ(deep.to_string(), "user." + kind_name(kind()) + ".WithCancel");
      },
      opts());
}

// with_deadline consults a custom parent's deadline: a later one gives a
// cancel-only child with the parent's deadline; an earlier one its own (C-13).
TEST_P(CustomContextTest, DeadlineShortcutConsultsTheCustomParent) {
  weft::run(
      [&] {
        const auto soon = weft::Clock::now() + 1h;
        Custom parent = make_custom(kind(), weft::background(), soon);
        EXPECT_EQ(parent.ctx.deadline(), soon);
        auto later = weft::with_deadline(parent.ctx, soon + 1h);
        EXPECT_EQ(later.ctx.deadline(), soon) << "the shortcut: the parent's deadline";
        auto earlier = weft::with_deadline(parent.ctx, soon - 30min);
        EXPECT_EQ(earlier.ctx.deadline(), soon - 30min);
        auto expired = weft::with_timeout(parent.ctx, 1ms);
        expired.ctx.done().wait();
        EXPECT_EQ(expired.ctx.err(), errc::deadline_exceeded);
        EXPECT_FALSE(parent.ctx.err());
      },
      opts());
}

// after_func on a user's context runs fn once it is done; stop before that
// prevents it and lets go of everything (no watcher left).
TEST_P(CustomContextTest, AfterFuncOnACustomContext) {
  weft::run(
      [&] {
        const std::int64_t alive = weft::detail::context_watchers_alive();
        Custom parent = make_custom(kind());
        std::atomic<int> ran{0};
        weft::AfterFuncStop stopped = weft::after_func(parent.ctx, [&] { ran.fetch_add(1); });
        EXPECT_TRUE(stopped());
        weft::Channel<int> done_ch(1);
        weft::AfterFuncStop armed = weft::after_func(parent.ctx, [&] {
          ran.fetch_add(10);
          EXPECT_TRUE(done_ch.send(1));
        });
        parent.impl->cancel({});
        EXPECT_TRUE(done_ch.recv());
        EXPECT_FALSE(armed()) << "fn ran: stop is too late";
        EXPECT_EQ(ran.load(), 10);
        wait_until_no_watchers(alive);
        EXPECT_EQ(weft::detail::context_watchers_alive(), alive);
      },
      opts());
}

// select and done().wait() take a user's context as any other.
TEST_P(CustomContextTest, SelectAndWaitOnACustomContext) {
  weft::run(
      [&] {
        Custom parent = make_custom(kind());
        weft::Channel<int> never;
        // Joined before `parent` goes: cancel() is still running in this
        // fiber when the waiters below see the context done.
        weft::JoinHandle<void> canceller = weft::spawn([&] {
          weft::sleep_for(1ms);
          parent.impl->cancel({});
        });
        bool done = false;
        weft::select(weft::on_done(parent.ctx, [&] { done = true; }),
                     weft::on_recv(never, [](std::optional<int>) {}));
        EXPECT_TRUE(done);
        parent.ctx.done().wait();
        EXPECT_EQ(parent.ctx.err(), errc::canceled);
        canceller.join();
      },
      opts());
}

// 10,000 children of a user's context, half cancelled by themselves and then
// the rest by the parent: no watcher outlives its child, and no fiber is
// left behind (Go's watcher goroutines leak exactly when this fails).
TEST_P(CustomContextTest, TenThousandChildrenLeaveNoWatcherBehind) {
  weft::run(
      [&] {
        const std::int64_t alive = weft::detail::context_watchers_alive();
        const std::uint64_t fibers = weft::metrics().fibers_live;
        Custom parent = make_custom(kind());
        constexpr int kChildren = 10000;
        std::vector<weft::WithCancelResult<weft::CancelFunc>> children;
        children.reserve(kChildren);
        for (int i = 0; i < kChildren; ++i) children.push_back(weft::with_cancel(parent.ctx));
        if (uses_watcher(kind())) {
          EXPECT_EQ(weft::detail::context_watchers_alive() - alive, kChildren);
        }
        for (int i = 0; i < kChildren; i += 2) children[static_cast<std::size_t>(i)].cancel();
        parent.impl->cancel({});
        for (auto& c : children) c.ctx.done().wait();
        for (auto& c : children) EXPECT_EQ(c.ctx.err(), errc::canceled);
        children.clear();
        wait_until_no_watchers(alive);
        EXPECT_EQ(weft::detail::context_watchers_alive(), alive);
        for (int i = 0; i < 20000 && weft::metrics().fibers_live > fibers; ++i) {
          weft::sleep_for(100us);
        }
        EXPECT_EQ(weft::metrics().fibers_live, fibers);
      },
      opts());
}

// Parent and child cancelled at once, from two fibers: the child ends done
// with one of the two causes, and whichever path linked them lets go (no
// watcher left, every after_func registration stopped or fired).
TEST_P(CustomContextTest, CancelFromBothSidesRace) {
  weft::run(
      [&] {
        const std::int64_t alive = weft::detail::context_watchers_alive();
        const int n = weft::test::stress_iterations(2000);
        for (int i = 0; i < n; ++i) {
          Custom parent = make_custom(kind());
          auto child = weft::with_cancel_cause(parent.ctx);
          weft::WaitGroup wg;
          wg.add(2);
          weft::go([&] {
            parent.impl->cancel(app_error(1));
            wg.done();
          });
          weft::go([&] {
            child.cancel(app_error(2));
            wg.done();
          });
          wg.wait();
          child.ctx.done().wait();
          const std::error_code c = weft::cause(child.ctx);
          ASSERT_TRUE(c == app_error(2) || c == expected_cause(kind(), app_error(1))) << c;
        }
        wait_until_no_watchers(alive);
        EXPECT_EQ(weft::detail::context_watchers_alive(), alive);
      },
      opts());
}

// after_func's stop racing the user's context being cancelled: exactly one
// of "stop returned true" and "fn ran" (C-17), on every path.
TEST_P(CustomContextTest, AfterFuncStopRacingCancelRace) {
  weft::run(
      [&] {
        const int n = weft::test::stress_iterations(2000);
        for (int i = 0; i < n; ++i) {
          Custom parent = make_custom(kind());
          weft::Channel<int> ran(1);
          weft::AfterFuncStop stop =
              weft::after_func(parent.ctx, [&] { EXPECT_TRUE(ran.send(1)); });
          weft::WaitGroup wg;
          wg.add(1);
          weft::go([&] {
            parent.impl->cancel({});
            wg.done();
          });
          if (i % 2) weft::yield();
          const bool stopped = stop();
          wg.wait();
          if (stopped) {
            weft::sleep_for(std::chrono::microseconds(50));
            ASSERT_FALSE(ran.try_recv()) << "fn ran after a stop that returned true";
          } else {
            ASSERT_TRUE(ran.recv());
          }
        }
      },
      opts());
}

INSTANTIATE_TEST_SUITE_P(Paths, CustomContextTest,
                         ::testing::Combine(::testing::Values(Kind::wraps, Kind::own_done,
                                                              Kind::after_funcer, Kind::opaque),
                                            ::testing::Values(1, 2)),
                         [](const auto& info) {
                           return kind_name(std::get<0>(info.param)) + "_w" +
                                  std::to_string(std::get<1>(info.param));
                         });

// A context that can never be done (a null Done): children register nothing.
class NeverDone final : public weft::ContextImpl {
 public:
  weft::Done done() const noexcept override { return weft::background().done(); }
  std::error_code err() const noexcept override { return {}; }
};

TEST(CustomContext, ANeverDoneParentCostsNothing) {
  weft::run([] {
    const std::uint64_t started = weft::detail::context_watchers_started();
    const weft::Context parent = weft::make_context(std::make_shared<NeverDone>());
    auto [child, cancel] = weft::with_cancel(parent);
    weft::AfterFuncStop stop = weft::after_func(parent, [] {});
    EXPECT_EQ(weft::detail::context_watchers_started(), started);
    EXPECT_FALSE(parent.done());
    EXPECT_TRUE(child.done());
    EXPECT_FALSE(weft::cause(parent));
    cancel();
    EXPECT_EQ(child.err(), errc::canceled);
  });
}

TEST(CustomContext, NullImplementationIsAClearError) {
  try {
    (void)weft::make_context(nullptr);
    FAIL() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("make_context"), std::string::npos) << e.what();
  }
}

// A merge of two parents, the first example: done when either is.
class Merged final : public weft::ContextImpl {
 public:
  Merged(weft::Context a, weft::Context b) : a_(std::move(a)), b_(std::move(b)) {
    auto own = weft::with_cancel_cause(weft::background());
    own_ = std::move(own.ctx);
    cancel_ = std::move(own.cancel);
    stop_a_ = weft::after_func(a_, [this] { cancel_(weft::cause(a_)); });
    stop_b_ = weft::after_func(b_, [this] { cancel_(weft::cause(b_)); });
  }
  ~Merged() override {
    stop_a_();
    stop_b_();
  }
  weft::Done done() const noexcept override { return own_.done(); }
  std::error_code err() const noexcept override { return own_.err(); }
  std::error_code cause() const noexcept override { return weft::cause(own_); }
  const void* value(const void* key) const noexcept override {
    if (const void* v = a_.value(key)) return v;
    return b_.value(key);
  }
  std::function<bool()> after_func(std::function<void()> fn) const override {
    weft::AfterFuncStop stop = weft::after_func(own_, std::move(fn));
    return [stop] { return stop(); };
  }

 private:
  weft::Context a_, b_, own_;
  weft::CancelCauseFunc cancel_;
  weft::AfterFuncStop stop_a_, stop_b_;
};

TEST(CustomContext, AMergeOfTwoParentsIsDoneWhenEitherIs) {
  weft::run([] {
    auto a = weft::with_cancel_cause(weft::with_value(weft::background(), kUser, std::string("a")));
    auto b = weft::with_cancel_cause(weft::background());
    const weft::Context merged = weft::make_context(std::make_shared<Merged>(a.ctx, b.ctx));
    auto [child, cancel] = weft::with_cancel(merged);
    EXPECT_EQ(*child.value(kUser), "a");
    b.cancel(app_error(9));
    child.done().wait();
    EXPECT_EQ(weft::cause(child), app_error(9));
    EXPECT_FALSE(a.ctx.err());
  });
}

// std::stop_token in: a stop request cancels the context before
// request_stop() returns; a token already stopped gives one born done.
TEST(StopToken, AStopRequestCancelsTheContext) {
  std::stop_source source;
  auto [ctx, cancel] = weft::with_stop_token(weft::background(), source.get_token());
  EXPECT_FALSE(ctx.err());
  EXPECT_TRUE(source.request_stop());
  EXPECT_EQ(ctx.err(), errc::canceled);
  auto [late, late_cancel] = weft::with_stop_token(weft::background(), source.get_token());
  EXPECT_EQ(late.err(), errc::canceled);
  // A token that can never stop costs nothing and never cancels.
  auto [plain, plain_cancel] = weft::with_stop_token(weft::background(), std::stop_token{});
  EXPECT_FALSE(plain.err());
}

// Destroyed while another thread requests stop: the callback is waited out.
TEST(StopToken, DestroyedWhileAStopIsRequested) {
  for (int i = 0; i < 2000; ++i) {
    std::stop_source source;
    auto made = std::make_unique<weft::WithCancelResult<weft::CancelFunc>>(
        weft::with_stop_token(weft::background(), source.get_token()));
    std::thread requester([&] { source.request_stop(); });
    made.reset();
    requester.join();
  }
}

// std::stop_source out: requested once the context is done, so a
// std::stop_callback (or a jthread's loop) sees it.
TEST(StopToken, AStopSourceFollowsTheContext) {
  weft::run([] {
    auto [ctx, cancel] = weft::with_cancel(weft::background());
    std::stop_source source = weft::stop_source_of(ctx);
    weft::Channel<int> stopped(1);
    std::stop_callback on_stop(source.get_token(), [&] { EXPECT_TRUE(stopped.send(1)); });
    EXPECT_FALSE(source.stop_requested());
    cancel();
    EXPECT_TRUE(stopped.recv());
    EXPECT_TRUE(source.stop_requested());
    // A user's context too.
    Custom custom = make_custom(Kind::opaque);
    std::stop_source custom_source = weft::stop_source_of(custom.ctx);
    custom.impl->cancel({});
    for (int i = 0; i < 20000 && !custom_source.stop_requested(); ++i) weft::sleep_for(100us);
    EXPECT_TRUE(custom_source.stop_requested());
  });
}

}  // namespace
