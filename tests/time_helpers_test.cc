// weft::after and weft::Ticker: Go's time.After / time.NewTimer channel and
// time.Ticker, on the deadline heap, usable as select cases. Ticks carry the
// time they were due, so the checks below compare due times (exact) rather
// than when a fiber woke (which only has a lower bound).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <stdexcept>
#include <thread>

#include "test_util.h"
#include "weft/channel.h"
#include "weft/runtime.h"
#include "weft/select.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Tick = std::optional<Clock::time_point>;

class TimeHelpersTest : public ::testing::TestWithParam<int> {
 protected:
  weft::RunOptions opts() const { return weft::RunOptions{.workers = GetParam()}; }
};

// Lets time pass: a wait, not a synchronisation (nothing else is waited for).
void let_pass(std::chrono::nanoseconds d) {
  (void)weft::after(d).chan().recv();
}

// coarse_now() is steady_clock as of the last tick: never ahead of
// now(), never behind a now() read before it by more than a tick or so
// (bounded here by a second: a preempted thread may lose that much between
// its reads), and it moves forward.
TEST(CoarseNowTest, NeverAheadOfTheSteadyClockAndNotFarBehind) {
  Clock::time_point last{};
  for (int i = 0; i < 10'000; ++i) {
    const Clock::time_point before = Clock::now();
    const Clock::time_point coarse = weft::coarse_now();
    const Clock::time_point after = Clock::now();
    ASSERT_LE(coarse, after) << "ahead of steady_clock, round " << i;
    ASSERT_GT(coarse, before - 1s) << "a second behind steady_clock, round " << i;
    ASSERT_GE(coarse, last) << "went back, round " << i;
    last = coarse;
  }
}

TEST_P(TimeHelpersTest, AfterTicksOnceItsTimeHasPassed) {
  weft::run(
      [] {
        const Clock::time_point start = Clock::now();
        auto timer = weft::after(2ms);
        const Tick tick = timer.chan().recv();
        ASSERT_TRUE(tick);
        EXPECT_GE(*tick, start + 2ms) << "the tick is the time it was due";
        EXPECT_GE(Clock::now(), *tick) << "never early";
        EXPECT_FALSE(timer.chan().try_recv()) << "one tick only";
        EXPECT_FALSE(timer.stop()) << "fired and received: nothing left to stop";
      },
      opts());
}

TEST_P(TimeHelpersTest, AfterIsASelectCaseThatTimesOut) {
  weft::run(
      [] {
        weft::Channel<int> never;
        bool got = false;
        Tick timed_out;
        const int index =
            weft::select(weft::on_recv(never, [&](std::optional<int>) { got = true; }),
                         weft::on_recv(weft::after(1ms), [&](Tick t) { timed_out = t; }));
        EXPECT_EQ(index, 1);
        EXPECT_TRUE(timed_out.has_value());
        EXPECT_FALSE(got);
      },
      opts());
}

// A ready case wins over a timeout an hour away, and the After, owned by the
// case, is stopped when the select returns: a timer left on the heap would
// fire into freed memory (ASan) once its time came.
TEST_P(TimeHelpersTest, AfterLosesToAReadyCaseAndIsDroppedWithIt) {
  weft::run(
      [] {
        weft::Channel<int> ready(1);
        for (int i = 0; i < 100; ++i) {
          ASSERT_TRUE(ready.send(i));
          int got = -1;
          const int index =
              weft::select(weft::on_recv(ready, [&](std::optional<int> v) { got = *v; }),
                           weft::on_recv(weft::after(i % 2 ? 1h : 50us), [](auto) {}));
          if (index == 1) {
            (void)ready.recv();  // the short timeout won: drain for the next round
          } else {
            EXPECT_EQ(got, i);
          }
        }
        let_pass(200us);  // past every 50 us timeout that was dropped
      },
      opts());
}

TEST_P(TimeHelpersTest, AfterWithNothingToWaitForIsReadyAtOnce) {
  weft::run(
      [] {
        auto now = weft::after(0ns);
        EXPECT_TRUE(now.chan().try_recv());
        bool defaulted = false;
        const int index = weft::select(weft::on_recv(weft::after(-1s), [](auto) {}),
                                       weft::on_default([&] { defaulted = true; }));
        EXPECT_EQ(index, 0) << "ready before the select looked";
        EXPECT_FALSE(defaulted);
      },
      opts());
  // No runtime needed when nothing is armed.
  EXPECT_TRUE(weft::after(0ns).chan().try_recv());
}

TEST_P(TimeHelpersTest, AfterStopAndReset) {
  weft::run(
      [] {
        auto later = weft::after(1h);
        EXPECT_TRUE(later.stop()) << "disarmed before it fired";
        EXPECT_FALSE(later.stop());
        EXPECT_FALSE(later.chan().try_recv());

        auto fired = weft::after(0ns);
        EXPECT_TRUE(fired.stop()) << "its tick, not yet received, is taken back";
        EXPECT_FALSE(fired.chan().try_recv());

        const Clock::time_point start = Clock::now();
        EXPECT_FALSE(later.reset(1ms)) << "stopped: nothing was pending";
        const Tick tick = later.chan().recv();
        ASSERT_TRUE(tick);
        EXPECT_GE(*tick, start + 1ms);
        EXPECT_FALSE(later.reset(1h));
        EXPECT_TRUE(later.reset(0ns)) << "the hour-long arming was pending";
        EXPECT_TRUE(later.chan().try_recv()) << "reset(0) ticks at once";
      },
      opts());
}

// A named After serves a whole loop, as `timeout := time.After(d)` does.
TEST_P(TimeHelpersTest, NamedAfterServesASelectLoop) {
  weft::run(
      [] {
        weft::Channel<int> jobs(3);
        for (int i = 0; i < 3; ++i) ASSERT_TRUE(jobs.send(i));
        auto timeout = weft::after(1h);
        int done = 0;
        bool timed_out = false;
        while (!timed_out) {
          weft::select(weft::on_recv(jobs,
                                     [&](std::optional<int> j) {
                                       ASSERT_TRUE(j);
                                       if (++done == 3) timeout.reset(0ns);
                                     }),
                       weft::on_recv(timeout, [&](auto) { timed_out = true; }));
        }
        EXPECT_EQ(done, 3);
      },
      opts());
}

TEST_P(TimeHelpersTest, AfterIsMovable) {
  weft::run(
      [] {
        auto a = weft::after(1ms);
        weft::After b = std::move(a);
        EXPECT_TRUE(b.chan().recv());
      },
      opts());
}

// Ticks fall on the period's grid: first + k * period, increasing.
TEST_P(TimeHelpersTest, TickerTicksOnItsPeriodGrid) {
  weft::run(
      [] {
        constexpr auto period = 500us;
        const Clock::time_point start = Clock::now();
        weft::Ticker ticker(period);
        const Tick first = ticker.chan().recv();
        ASSERT_TRUE(first);
        EXPECT_GE(*first, start + period);
        Clock::time_point last = *first;
        for (int i = 0; i < 5; ++i) {
          const Tick tick = ticker.chan().recv();
          ASSERT_TRUE(tick);
          EXPECT_GT(*tick, last);
          EXPECT_EQ((*tick - *first) % period, 0ns) << "on the grid";
          EXPECT_GE(Clock::now(), *tick) << "never early";
          last = *tick;
        }
      },
      opts());
}

// A receiver that stops receiving finds one tick waiting, not a backlog, and
// the ticks it missed were dropped, not delivered late.
TEST_P(TimeHelpersTest, TickerDropsTicksForASlowReceiver) {
  weft::run(
      [] {
        constexpr auto period = 1ms;
        weft::Ticker ticker(period);
        let_pass(30 * period);
        EXPECT_EQ(ticker.chan().size(), 1u);
        const Tick stale = ticker.chan().recv();
        const Tick next = ticker.chan().recv();
        ASSERT_TRUE(stale && next);
        EXPECT_GE(*next - *stale, 2 * period) << "the ticks in between were dropped";
        EXPECT_EQ((*next - *stale) % period, 0ns) << "still on the grid";
      },
      opts());
}

TEST_P(TimeHelpersTest, TickerStopAndReset) {
  weft::run(
      [] {
        weft::Ticker ticker(200us);
        EXPECT_TRUE(ticker.chan().recv());
        let_pass(1ms);  // a tick now waits in the channel
        ticker.stop();
        EXPECT_FALSE(ticker.chan().try_recv()) << "the waiting tick was taken back";
        let_pass(1ms);
        EXPECT_EQ(ticker.chan().size(), 0u) << "stopped: no tick";
        ticker.stop();  // again: nothing

        const Clock::time_point start = Clock::now();
        ticker.reset(2ms);
        const Tick first = ticker.chan().recv();
        ASSERT_TRUE(first);
        EXPECT_GE(*first, start + 2ms) << "the new period, from the reset";
        const Tick second = ticker.chan().recv();
        ASSERT_TRUE(second);
        EXPECT_GE(*second - *first, 2ms);
        EXPECT_EQ((*second - *first) % 2ms, 0ns) << "on the new period's grid";
      },
      opts());
}

TEST_P(TimeHelpersTest, TickerInASelectLoop) {
  weft::run(
      [] {
        weft::Ticker ticker(300us);
        weft::Channel<int> quit;
        int ticks = 0;
        bool stop = false;
        while (!stop) {
          weft::select(weft::on_recv(ticker.chan(),
                                     [&](Tick t) {
                                       ASSERT_TRUE(t);
                                       if (++ticks == 3) quit.close();
                                     }),
                       weft::on_recv(quit, [&](std::optional<int> v) { stop = !v; }));
        }
        EXPECT_GE(ticks, 3);
      },
      opts());
}

TEST_P(TimeHelpersTest, TickerRefusesANonPositivePeriodAndMoves) {
  weft::run(
      [] {
        EXPECT_THROW(weft::Ticker(0ns), std::invalid_argument);
        EXPECT_THROW(weft::Ticker(-1ms), std::invalid_argument);
        weft::Ticker a(100us);
        EXPECT_THROW(a.reset(0ns), std::invalid_argument);
        weft::Ticker b = std::move(a);
        a.stop();  // NOLINT(bugprone-use-after-move): moved-from stop does nothing
        EXPECT_TRUE(b.chan().recv());
      },
      opts());
}

// The races the Go 1.23 guarantee rests on, thousands of times: stop() and
// reset() against an expiry in flight on another worker (its seq check), and
// destruction against one (stop_timer_and_wait). After stop() returns, no
// tick is waiting and none comes until the next reset.
TEST_P(TimeHelpersTest, StopResetAndDestroyRaceTheExpiryStress) {
  const int rounds = weft::test::stress_iterations(3000);
  weft::run(
      [&] {
        weft::Ticker ticker(1us);
        auto timer = weft::after(1us);
        for (int i = 0; i < rounds; ++i) {
          if (i % 3 == 0) weft::yield();  // expiries pop on other workers meanwhile
          ticker.stop();
          EXPECT_FALSE(ticker.chan().try_recv()) << "round " << i;
          (void)timer.stop();
          EXPECT_FALSE(timer.chan().try_recv()) << "round " << i;
          if (i % 64 == 0) {
            weft::yield();
            EXPECT_EQ(ticker.chan().size(), 0u) << "a stale expiry sent after stop()";
            EXPECT_EQ(timer.chan().size(), 0u) << "a stale expiry sent after stop()";
          }
          ticker.reset(std::chrono::microseconds(1 + i % 3));
          (void)timer.reset(std::chrono::microseconds(i % 3));
          // Dropped while due now or soon: destruction waits out the expiry.
          { weft::Ticker brief(std::chrono::microseconds(1 + i % 2)); }
          { auto brief = weft::after(std::chrono::microseconds(i % 2)); }
        }
      },
      opts());
}

// The same from a plain thread (the blocking pool's), so that the workers,
// idle, run the expiries at the moments the thread stops and resets: with
// one worker too. A stale expiry lands within moments of stop(), if at all,
// so the thread looks a few times before it moves on.
TEST_P(TimeHelpersTest, StopAndResetFromAThreadRaceTheExpiryStress) {
  const int rounds = weft::test::stress_iterations(5000);
  weft::run(
      [&] {
        weft::Ticker ticker(1us);
        auto timer = weft::after(1us);
        int stale = 0;
        weft::blocking([&] {
          for (int i = 0; i < rounds; ++i) {
            ticker.stop();
            (void)timer.stop();
            for (int look = 0; look < 4; ++look) {
              if (ticker.chan().size() != 0 || timer.chan().size() != 0) {
                ++stale;
                break;
              }
              std::this_thread::yield();
            }
            ticker.reset(std::chrono::microseconds(1 + i % 3));
            (void)timer.reset(std::chrono::microseconds(i % 3));
            for (int k = 0; k < i % 8; ++k) std::this_thread::yield();
            if (i % 16 == 0) {
              weft::Ticker brief(1us);
              auto once = weft::after(std::chrono::microseconds(i % 2));
              std::this_thread::yield();
            }
          }
        });
        EXPECT_EQ(stale, 0) << "ticks sent after stop() returned";
      },
      opts());
}

// A select between a peer's send and a tiny timeout: exactly one case runs
// each round, and a value the timeout beat is still delivered afterwards.
TEST_P(TimeHelpersTest, AfterRacingAPeerStress) {
  const int rounds = weft::test::stress_iterations(3000);
  weft::run(
      [&] {
        weft::Channel<int> ch;
        long sum = 0;
        int timeouts = 0;
        for (int i = 0; i < rounds; ++i) {
          weft::go([ch, i]() mutable { EXPECT_TRUE(ch.send(i)); });
          int ran = 0;
          weft::select(weft::on_recv(ch,
                                     [&](std::optional<int> v) {
                                       ++ran;
                                       sum += *v;
                                     }),
                       weft::on_recv(weft::after(std::chrono::microseconds(i % 4)), [&](auto) {
                         ++ran;
                         ++timeouts;
                         sum += *ch.recv();
                       }));
          EXPECT_EQ(ran, 1);
        }
        EXPECT_EQ(sum, static_cast<long>(rounds) * (rounds - 1) / 2);
        RecordProperty("timeouts", timeouts);
      },
      opts());
}

// Stop and reset from a plain thread while a fiber receives ticks: the
// Ticker's methods are safe alongside each other and the expiry.
TEST_P(TimeHelpersTest, TickerControlledFromAThreadWhileAFiberReceives) {
  const int rounds = weft::test::stress_iterations(2000);
  weft::run(
      [&] {
        weft::Ticker ticker(5us);
        weft::Channel<int> quit;
        weft::WaitGroup wg;
        wg.add(1);
        std::atomic<int> received{0};
        weft::go([&] {
          bool stop = false;
          while (!stop) {
            weft::select(weft::on_recv(ticker.chan(), [&](auto) { received.fetch_add(1); }),
                         weft::on_recv(quit, [&](std::optional<int>) { stop = true; }));
          }
          wg.done();
        });
        std::thread controller([&] {
          for (int i = 0; i < rounds; ++i) {
            if (i % 2) {
              ticker.stop();
            } else {
              ticker.reset(std::chrono::microseconds(1 + i % 7));
            }
          }
          ticker.reset(1us);
        });
        weft::blocking([&] { controller.join(); });
        while (received.load() == 0) weft::yield();  // the last reset ticks on
        quit.close();
        wg.wait();
      },
      opts());
}

INSTANTIATE_TEST_SUITE_P(Workers, TimeHelpersTest, ::testing::Values(1, 2),
                         weft::test::workers_name);

}  // namespace
