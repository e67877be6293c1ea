// notify_context (Go's signal.NotifyContext): a signal cancels the contexts
// that wait for it instead of ending the process, before weft::run or
// inside it; stop unregisters and gives the signal its old disposition.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>

#include "weft/select.h"
#include "weft/signal.h"
#include "weft/time.h"
#include "weft/weft.h"

namespace {

using namespace std::chrono_literals;

// Waits for ctx to be done, at most 10 s (a signal is delivered in
// microseconds; the bound only keeps a broken build from hanging).
bool done_within_10s(const weft::Context& ctx) {
  for (int i = 0; i < 100000 && !ctx.err(); ++i) weft::sleep_for(100us);
  return static_cast<bool>(ctx.err());
}

sighandler_t disposition(int sig) {
  struct sigaction now {};
  sigaction(sig, nullptr, &now);
  return now.sa_handler;
}

TEST(NotifyContext, ASignalCancelsTheContextInsteadOfEndingTheProcess) {
  for (int workers : {1, 2}) {
    weft::run(
        [] {
          auto [ctx, stop] = weft::notify_context(weft::background(), {SIGUSR2, SIGHUP});
          EXPECT_FALSE(ctx.err());
          ASSERT_EQ(::kill(::getpid(), SIGUSR2), 0);  // its default action ends the process
          ASSERT_TRUE(done_within_10s(ctx));
          EXPECT_EQ(ctx.err(), weft::errc::canceled);
          const std::error_code why = weft::cause(ctx);
          EXPECT_EQ(why, std::error_code(SIGUSR2, weft::signal_category()));
          EXPECT_EQ(why.message(), "signal received: user defined signal 2");
        },
        weft::RunOptions{.workers = workers});
    EXPECT_EQ(disposition(SIGUSR2), SIG_DFL) << "the signal kept weft's handler after stop";
  }
}

// Made before weft::run, as a main() does; every worker thread starts
// after it and none of them may take the signal's default action.
TEST(NotifyContext, WorksWhenMadeBeforeRun) {
  auto [ctx, stop] = weft::notify_context(weft::background(), {SIGUSR2});
  weft::run(
      [&ctx = ctx] {
        ASSERT_EQ(::kill(::getpid(), SIGUSR2), 0);
        ASSERT_TRUE(done_within_10s(ctx));
      },
      weft::RunOptions{.workers = 2});
  EXPECT_EQ(weft::cause(ctx).value(), SIGUSR2);
}

TEST(NotifyContext, OneSignalCancelsEveryContextWaitingForIt) {
  weft::run([] {
    auto a = weft::notify_context(weft::background(), {SIGUSR2});
    auto b = weft::notify_context(weft::background(), {SIGHUP, SIGUSR2});
    auto other = weft::notify_context(weft::background(), {SIGHUP});
    ASSERT_EQ(::kill(::getpid(), SIGUSR2), 0);
    ASSERT_TRUE(done_within_10s(a.ctx));
    ASSERT_TRUE(done_within_10s(b.ctx));
    EXPECT_FALSE(other.ctx.err()) << "a context waiting for another signal was canceled";
  });
}

TEST(NotifyContext, StopCancelsUnregistersAndRestoresTheOldDisposition) {
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  struct sigaction before {};
  ASSERT_EQ(sigaction(SIGHUP, &ignore, &before), 0);
  weft::run([] {
    auto first = weft::notify_context(weft::background(), {SIGHUP});
    auto second = weft::notify_context(weft::background(), {SIGHUP});
    EXPECT_NE(disposition(SIGHUP), SIG_IGN);
    first.cancel();  // the stop
    EXPECT_EQ(first.ctx.err(), weft::errc::canceled);
    EXPECT_FALSE(weft::cause(first.ctx).category() == weft::signal_category());
    // The other context still waits: weft's handler stays.
    EXPECT_NE(disposition(SIGHUP), SIG_IGN);
    ASSERT_EQ(::kill(::getpid(), SIGHUP), 0);
    ASSERT_TRUE(done_within_10s(second.ctx));
    EXPECT_EQ(weft::cause(second.ctx).value(), SIGHUP);
  });
  // Both stopped (the second by its destructor): SIGHUP is ignored again,
  // as it was before.
  EXPECT_EQ(disposition(SIGHUP), SIG_IGN);
  sigaction(SIGHUP, &before, nullptr);
}

TEST(NotifyContext, AParentCancelReachesTheContext) {
  weft::run([] {
    auto parent = weft::with_cancel(weft::background());
    auto [ctx, stop] = weft::notify_context(parent.ctx, {SIGUSR2});
    parent.cancel();
    EXPECT_EQ(ctx.err(), weft::errc::canceled);
  });
}

// Go's `ctx, _ := signal.NotifyContext(...)`: the context taken out of
// the temporary result keeps its registration (context.h's rule). That
// registration stays for the life of the process, so it takes a signal no
// other test checks the disposition of, and one whose default action
// (ignore) cannot end the process if the registration is lost.
TEST(NotifyContext, AContextTakenOutOfTheResultStillHearsTheSignal) {
  weft::run([] {
    auto ctx = weft::notify_context(weft::background(), {SIGWINCH}).ctx;
    EXPECT_FALSE(ctx.err());
    ASSERT_EQ(::kill(::getpid(), SIGWINCH), 0);
    ASSERT_TRUE(done_within_10s(ctx));
    EXPECT_EQ(weft::cause(ctx).value(), SIGWINCH);
  });
  EXPECT_NE(disposition(SIGWINCH), SIG_DFL) << "the registration went with the temporary result";
}

TEST(NotifyContextDeathTest, ASignalThatCannotBeCaughtIsNamed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      (void)weft::notify_context(weft::background(), {SIGKILL}),
      "weft::notify_context: signal 9 cannot be caught \\(SIGKILL and SIGSTOP never can\\)");
}

}  // namespace
