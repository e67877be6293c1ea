// Traps users fell into, closed: the cancel handle of a temporary context
// result, and a non-blocking send that could not take an rvalue. (A send's
// ignored result and a select handler of the wrong signature are compile
// errors now: tests/compile_fail/ checks those.)
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "test_util.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/runtime.h"
#include "weft/select.h"

namespace {

using namespace std::chrono_literals;
using weft::errc;

template <class F>
void in_runtime(F body) {
  weft::run(body, weft::RunOptions{.workers = 1});
}

weft::Context copy_of(const weft::Context& ctx) {
  return ctx;
}

// ---- the forms of a with_cancel & co. result (context.h) -------------------

// Go's `ctx, _ := context.WithTimeout(...)`: the context outlives the
// statement, live, with its deadline. Its cancel used to run at the end of
// the statement, so every use failed with "context canceled".
TEST(CancelResultForms, ContextTakenFromATemporaryStaysLive) {
  in_runtime([] {
    auto ctx = weft::with_timeout(weft::background(), 1h).ctx;
    EXPECT_FALSE(ctx.err());
    EXPECT_FALSE(ctx.done().ready());
    EXPECT_TRUE(ctx.deadline());
    weft::Context assigned;
    assigned = weft::with_cancel(weft::background()).ctx;
    EXPECT_FALSE(assigned.err());
    weft::Context caused = weft::with_cancel_cause(weft::background()).ctx;
    EXPECT_FALSE(caused.err());
    weft::Context dated = weft::with_deadline(weft::background(), weft::Clock::now() + 1h).ctx;
    EXPECT_FALSE(dated.err());
  });
}

TEST(CancelResultForms, ContextTakenFromATemporaryEndsAtItsDeadline) {
  in_runtime([] {
    auto ctx = weft::with_timeout(weft::background(), 1ms).ctx;
    ctx.done().wait();
    EXPECT_EQ(ctx.err(), errc::deadline_exceeded);
  });
}

TEST(CancelResultForms, ContextTakenFromATemporaryEndsWithItsParent) {
  in_runtime([] {
    auto [parent, cancel] = weft::with_cancel(weft::background());
    auto child = weft::with_cancel(parent).ctx;
    EXPECT_FALSE(child.err());
    cancel();
    EXPECT_EQ(child.err(), errc::canceled);
  });
}

// Nothing leaks: the child leaves its parent when its last copy goes.
TEST(CancelResultForms, ContextTakenFromATemporaryLeavesItsParentWithItsLastCopy) {
  in_runtime([] {
    auto [parent, cancel] = weft::with_cancel(weft::background());
    {
      auto child = weft::with_timeout(parent, 1h).ctx;
      weft::Context copy = child;
      EXPECT_EQ(weft::detail::child_count(parent), 1u);
    }
    EXPECT_EQ(weft::detail::child_count(parent), 0u);
    EXPECT_FALSE(parent.err());
  });
}

// Used within the statement, the temporary's context is borrowed, not taken:
// its cancel runs at the statement's end, as before.
TEST(CancelResultForms, ATemporaryBorrowedForOneStatementCancelsAtItsEnd) {
  in_runtime([] {
    EXPECT_FALSE(weft::with_timeout(weft::background(), 1h).ctx.err());
    weft::Context borrowed = copy_of(weft::with_cancel(weft::background()).ctx);
    EXPECT_EQ(borrowed.err(), errc::canceled);
  });
}

TEST(CancelResultForms, UnpackedNamesCancelAtScopeEnd) {
  in_runtime([] {
    weft::Context seen;
    {
      auto [ctx, cancel] = weft::with_timeout(weft::background(), 1h);
      seen = ctx;
      EXPECT_FALSE(seen.err());
    }
    EXPECT_EQ(seen.err(), errc::canceled);
    // Moving the context out of the names keeps their cancel.
    {
      auto [ctx, cancel] = weft::with_cancel(weft::background());
      seen = std::move(ctx);
    }
    EXPECT_EQ(seen.err(), errc::canceled);
    {
      const auto& [ctx, cancel] = weft::with_cancel_cause(weft::background());
      seen = ctx;
    }
    EXPECT_EQ(seen.err(), errc::canceled);
    {
      auto made = weft::with_cancel(weft::background());
      auto& [ctx, cancel] = made;
      seen = std::move(ctx);
    }
    EXPECT_EQ(seen.err(), errc::canceled);
  });
}

TEST(CancelResultForms, NamedResultCancelsWhenCalledOrDestroyed) {
  in_runtime([] {
    auto made = weft::with_cancel(weft::background());
    EXPECT_FALSE(made.ctx.err());
    made.cancel();
    EXPECT_EQ(made.ctx.err(), errc::canceled);
    weft::Context seen;
    {
      auto timed = weft::with_timeout(weft::background(), 1h);
      seen = timed.ctx;
    }
    EXPECT_EQ(seen.err(), errc::canceled);
  });
}

// The documented price: a named result whose ctx was moved out lets go of
// its context at destruction, as a temporary does. Calling its cancel, or
// moving the cancel out too, still cancels.
TEST(CancelResultForms, NamedResultWithItsContextMovedOutDropsItsCancel) {
  in_runtime([] {
    weft::Context seen;
    {
      auto made = weft::with_cancel(weft::background());
      seen = std::move(made.ctx);
    }
    EXPECT_FALSE(seen.err());
    {
      auto made = weft::with_cancel(weft::background());
      seen = std::move(made.ctx);
      made.cancel();
    }
    EXPECT_EQ(seen.err(), errc::canceled);
    weft::CancelFunc kept;
    {
      auto made = weft::with_cancel(weft::background());
      seen = std::move(made.ctx);
      kept = std::move(made.cancel);
    }
    EXPECT_FALSE(seen.err());
    kept();
    EXPECT_EQ(seen.err(), errc::canceled);
  });
}

// Results moved around (a vector growing) keep their cancel; moved-from
// husks do nothing.
TEST(CancelResultForms, MovedResultsKeepTheirCancel) {
  in_runtime([] {
    std::vector<weft::Context> seen;
    {
      std::vector<weft::WithCancelResult<weft::CancelFunc>> results;
      for (int i = 0; i < 20; ++i) {
        results.push_back(weft::with_cancel(weft::background()));
        seen.push_back(results.back().ctx);
      }
      for (const weft::Context& c : seen) EXPECT_FALSE(c.err());
    }
    for (const weft::Context& c : seen) EXPECT_EQ(c.err(), errc::canceled);
  });
}

// ---- try_send with rvalues and move-only values ------------------------------

TEST(TrySend, TakesRvaluesAndKeepsThemWhenNotSent) {
  weft::Channel<std::unique_ptr<int>> ch(1);
  EXPECT_TRUE(ch.try_send(std::make_unique<int>(1)));
  auto second = std::make_unique<int>(2);
  EXPECT_FALSE(ch.try_send(std::move(second))) << "full";
  ASSERT_NE(second, nullptr) << "not sent: still the caller's";
  EXPECT_EQ(**ch.try_recv(), 1);
  EXPECT_TRUE(ch.try_send(std::move(second)));
  EXPECT_EQ(second, nullptr);  // NOLINT(bugprone-use-after-move): sent, so moved from
  EXPECT_EQ(**ch.try_recv(), 2);
  ch.close();
  EXPECT_FALSE(ch.try_send(std::make_unique<int>(3))) << "closed";
}

TEST(TrySend, CopiesConstValues) {
  weft::Channel<std::string> ch(1);
  const std::string text = "kept";
  EXPECT_TRUE(ch.try_send(text));
  EXPECT_EQ(text, "kept");
  EXPECT_EQ(ch.try_recv(), "kept");
  std::string mine = "moved";
  EXPECT_TRUE(ch.try_send(mine)) << "an lvalue is moved from when sent, as before";
  EXPECT_EQ(ch.try_recv(), "moved");
}

// A receiver parked on an unbuffered channel takes an rvalue straight away.
TEST(TrySend, RvalueReachesAParkedReceiver) {
  in_runtime([] {
    weft::Channel<std::unique_ptr<std::string>> ch;
    weft::Channel<std::string> out(1);
    weft::go([ch, out]() mutable {
      auto v = ch.recv();
      EXPECT_TRUE(out.send(v && *v ? **v : std::string("none")));
    });
    while (!ch.try_send(std::make_unique<std::string>("direct"))) weft::yield();
    EXPECT_EQ(out.recv(), "direct");
  });
}

// on_send takes the channel's type from the channel alone, as a send does.
TEST(TrySend, OnSendConvertsTheValueToTheChannelsType) {
  weft::Channel<long> longs(1);
  bool sent = false;
  weft::select(weft::on_send(longs, 7, [&](bool ok) { sent = ok; }));
  EXPECT_TRUE(sent);
  EXPECT_EQ(longs.try_recv(), 7L);
}

}  // namespace
