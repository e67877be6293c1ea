#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include <unistd.h>

#include "scheduler.h"
#include "test_util.h"
#include "timer.h"
#include "weft/channel.h"
#include "weft/detail/park.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

TEST(TimerHeap, PopsInDeadlineOrderAndErasesAnywhere) {
  weft::detail::TimerHeap heap;
  std::mt19937 rng(7);
  std::vector<weft::detail::TimerNode> nodes(2000);
  for (auto& n : nodes) {
    n.when = static_cast<std::int64_t>(rng() % 100000) + 1;
    heap.push(&n);
  }
  // Stop a third of them, at arbitrary positions.
  for (std::size_t i = 0; i < nodes.size(); i += 3) heap.stop(&nodes[i]);
  EXPECT_EQ(heap.live(), nodes.size() - (nodes.size() + 2) / 3);
  std::int64_t last = 0;
  std::size_t popped = 0;
  while (auto* n = heap.pop_due(weft::detail::kNever - 1)) {
    EXPECT_GE(n->when, last);
    EXPECT_EQ(n->index, -1);
    EXPECT_EQ(n->heap.load(), nullptr);
    last = n->when;
    ++popped;
  }
  EXPECT_EQ(popped, nodes.size() - (nodes.size() + 2) / 3);
  EXPECT_EQ(heap.min_when.load(), weft::detail::kNever);
}

// Stopped timers leave tombstones: whatever the order of pushes, stops and
// pops, what pops is exactly the live timers due, in deadline order; every
// node's index is its place; min_when is never later than the earliest live
// timer; tombstones never outnumber the live timers (plus the one that just
// tipped the balance), and a heap with none live is empty.
TEST(TimerHeap, StopsLeaveTombstonesThatNeverFireNorPileUp) {
  using weft::detail::TimerNode;
  weft::detail::TimerHeap heap;
  std::mt19937 rng(42);
  constexpr std::size_t kNodes = 3000;
  std::vector<TimerNode> nodes(kNodes);
  std::vector<bool> queued(kNodes, false);
  std::int64_t now = 0;
  const auto check = [&] {
    std::int64_t earliest = weft::detail::kNever;
    std::size_t live = 0;
    for (std::size_t i = 0; i < kNodes; ++i) {
      if (!queued[i]) continue;
      ++live;
      earliest = std::min(earliest, nodes[i].when);
      ASSERT_GE(nodes[i].index, 0);
      ASSERT_EQ(heap.nodes[static_cast<std::size_t>(nodes[i].index)].node, &nodes[i]);
    }
    ASSERT_EQ(heap.live(), live);
    ASSERT_LE(heap.min_when.load(), earliest);
    ASSERT_LE(heap.dead, live + 1);
    if (live == 0) {
      ASSERT_TRUE(heap.nodes.empty());
    }
  };
  for (int step = 0; step < 200'000; ++step) {
    const std::size_t i = rng() % kNodes;
    switch (rng() % 4) {
      case 0:
      case 1:  // arm (a re-arm of a queued one is a stop and an arm, as Timer::reset)
        if (queued[i]) heap.stop(&nodes[i]);
        nodes[i].when = now + static_cast<std::int64_t>(rng() % 10'000) + 1;
        heap.push(&nodes[i]);
        queued[i] = true;
        break;
      case 2:
        if (queued[i]) {
          heap.stop(&nodes[i]);
          EXPECT_EQ(nodes[i].index, -1);
          EXPECT_EQ(nodes[i].heap.load(), nullptr);
          queued[i] = false;
        }
        break;
      case 3: {  // time passes; everything due pops, in order
        now += static_cast<std::int64_t>(rng() % 200);
        std::int64_t last = 0;
        while (TimerNode* n = heap.pop_due(now)) {
          const auto k = static_cast<std::size_t>(n - nodes.data());
          ASSERT_TRUE(queued[k]) << "a stopped timer fired";
          ASSERT_LE(n->when, now);
          ASSERT_GE(n->when, last);
          last = n->when;
          queued[k] = false;
          n->in_flight.store(0);
        }
        for (std::size_t k = 0; k < kNodes; ++k) {
          ASSERT_FALSE(queued[k] && nodes[k].when <= now) << "a due timer did not pop";
        }
        break;
      }
    }
    if (step % 1000 == 0) check();
  }
  check();
  for (std::size_t i = 0; i < kNodes; ++i) {
    if (queued[i]) heap.stop(&nodes[i]);
  }
  EXPECT_TRUE(heap.nodes.empty());
  EXPECT_EQ(heap.min_when.load(), weft::detail::kNever);
}

class SleepTest : public ::testing::TestWithParam<int> {};

TEST_P(SleepTest, NeverWakesEarly) {
  weft::run(
      [] {
        for (auto d : {50us, 200us, 1000us, 3000us}) {
          const auto start = Clock::now();
          weft::sleep_for(d);
          EXPECT_GE(Clock::now() - start, d);
        }
        weft::sleep_for(0ns);   // returns at once
        weft::sleep_for(-5ms);  // so does a negative one
      },
      weft::RunOptions{.workers = GetParam()});
}

TEST_P(SleepTest, ManySleepersEachWakeAfterTheirDeadline) {
  const int n = weft::test::stress_iterations(2000);
  std::atomic<int> early{0}, woke{0};
  weft::run(
      [&] {
        std::mt19937 rng(11);
        std::atomic<int> done{0};
        for (int i = 0; i < n; ++i) {
          const auto d = std::chrono::microseconds(rng() % 5000);
          weft::go([&, d] {
            const auto deadline = Clock::now() + d;
            weft::sleep_until(deadline);
            if (Clock::now() < deadline) early.fetch_add(1);
            woke.fetch_add(1);
            done.fetch_add(1);
          });
        }
        while (done.load() < n) weft::sleep_for(200us);
      },
      weft::RunOptions{.workers = GetParam()});
  EXPECT_EQ(woke.load(), n);
  EXPECT_EQ(early.load(), 0);
}

TEST_P(SleepTest, TenThousandFibersWokenByOneDeadline) {
  const int n = weft::test::spawn_count(10000);  // 625 under TSan
  std::atomic<int> woke{0};
  weft::run(
      [&] {
        const auto deadline = Clock::now() + 20ms;
        for (int i = 0; i < n; ++i) {
          weft::go([&] {
            weft::sleep_until(deadline);
            woke.fetch_add(1);
          });
        }
        while (woke.load() < n) weft::sleep_for(1ms);
      },
      weft::RunOptions{.workers = GetParam()});
  EXPECT_EQ(woke.load(), n);
}

TEST_P(SleepTest, SleepersOnEveryWorkerAndAPlainThread) {
  weft::run(
      [] {
        std::atomic<int> done{0};
        for (int i = 0; i < 8; ++i) {
          weft::go([&] {
            for (int k = 0; k < 20; ++k) weft::sleep_for(100us);
            done.fetch_add(1);
          });
        }
        std::thread plain([] {
          const auto start = Clock::now();
          weft::sleep_for(2ms);  // a plain thread just sleeps
          EXPECT_GE(Clock::now() - start, 2ms);
        });
        while (done.load() < 8) weft::sleep_for(500us);
        plain.join();
      },
      weft::RunOptions{.workers = GetParam()});
}

TEST_P(SleepTest, TimerRunsItsFunctionOnceInAFiber) {
  weft::run(
      [] {
        std::atomic<int> runs{0};
        std::atomic<std::uint64_t> ran_on{0};
        weft::Timer t(1ms, [&] {
          ran_on.store(weft::fiber_id());
          runs.fetch_add(1);
        });
        while (runs.load() == 0) weft::sleep_for(100us);
        weft::sleep_for(5ms);
        EXPECT_EQ(runs.load(), 1);
        EXPECT_NE(ran_on.load(), 0u);
        EXPECT_NE(ran_on.load(), weft::fiber_id());
        EXPECT_FALSE(t.stop());  // already fired
      },
      weft::RunOptions{.workers = GetParam()});
}

TEST_P(SleepTest, StoppedTimerNeverFires) {
  weft::run(
      [] {
        std::atomic<int> runs{0};
        {
          weft::Timer t(2ms, [&] { runs.fetch_add(1); });
          EXPECT_TRUE(t.stop());
          EXPECT_FALSE(t.stop());
          EXPECT_FALSE(t.reset(1ms));  // was not armed
          EXPECT_TRUE(t.reset(1h));    // was armed: moved far away
        }                              // destroyed armed: stops
        weft::sleep_for(10ms);
        EXPECT_EQ(runs.load(), 0);
      },
      weft::RunOptions{.workers = GetParam()});
}

TEST_P(SleepTest, StopRacingExpiryIsExactlyOnce) {
  // Either stop() returns true or fn runs, never both, never neither.
  const int n = weft::test::stress_iterations(3000);
  std::atomic<int> fired{0};
  int stopped = 0;
  weft::run(
      [&] {
        std::mt19937 rng(3);
        for (int i = 0; i < n; ++i) {
          weft::Timer t(std::chrono::nanoseconds(rng() % 20000), [&] { fired.fetch_add(1); });
          const auto spin_until = Clock::now() + std::chrono::nanoseconds(rng() % 20000);
          while (Clock::now() < spin_until) {
          }
          if (t.stop()) ++stopped;
        }
        while (fired.load() + stopped < n) weft::sleep_for(100us);
      },
      weft::RunOptions{.workers = GetParam()});
  EXPECT_EQ(fired.load() + stopped, n);
}

TEST_P(SleepTest, EarlierTimerWakesTheTimerSleeper) {
  // Every worker idle, one waiting for a timer an hour away: a nearer timer
  // added from another thread must wake it, or this test hangs.
  weft::run(
      [] {
        weft::Timer far(1h, [] {});
        std::atomic<weft::detail::Fiber*> main_fiber{nullptr};
        std::thread other([&] {
          weft::detail::Fiber* waiter;
          while (!(waiter = main_fiber.load())) std::this_thread::yield();
          std::atomic<bool> fired{false};
          weft::Timer near(2ms, [&, waiter] {
            weft::detail::ready(waiter);
            fired.store(true);
          });
          while (!fired.load()) std::this_thread::yield();
        });
        weft::detail::park_with(weft::detail::WaitReason::unknown, [&](weft::detail::Fiber* self) {
          main_fiber.store(self);
          return true;
        });
        other.join();
        EXPECT_TRUE(far.stop());
      },
      weft::RunOptions{.workers = GetParam()});
}

// Fibers that only yield to each other never leave their worker idle: a
// timer on its heap is run by its look between switches, every
// kTimerCheckTicks. That look was once made on a tick count that a yield
// advanced by two per switch, so with an even count it never came; with
// one worker nobody else ran the heap, and the sleeper never woke. Rounds
// cover both parities; each fails after 20 s instead of hanging.
TEST_P(SleepTest, FibersYieldingToEachOtherLetTheirWorkersTimersFire) {
  weft::run(
      [] {
        const std::uint64_t rescues_before = weft::detail::scheduler_stats().timer_rescues;
        for (int round = 0; round < 20; ++round) {
          std::atomic<bool> woke{false};
          weft::WaitGroup wg;
          wg.add(3);
          auto yield_until_woken = [&] {
            const auto give_up = std::chrono::steady_clock::now() + 20s;
            while (!woke.load() && std::chrono::steady_clock::now() < give_up) weft::yield();
            EXPECT_TRUE(woke.load()) << "round " << round << ": the sleeper never woke";
            wg.done();
          };
          weft::go([&] {
            weft::sleep_for(1ms);
            woke.store(true);
            wg.done();
          });
          weft::go(yield_until_woken);
          weft::go(yield_until_woken);
          wg.wait();
          if (::testing::Test::HasFailure()) break;
        }
        // Not left for sysmon to wake an idle worker for (workers > 1).
        EXPECT_EQ(weft::detail::scheduler_stats().timer_rescues, rescues_before);
      },
      weft::RunOptions{.workers = GetParam()});
}

// A worker looks at its timers every kTimerCheckTicks switches. That look
// once ran on the switch path of a fiber that was parking, before the
// park's commit, so while the fiber still held the lock that guards its
// wait: a Ticker or after() due then, delivering to the channel the fiber
// parked on, spun on that lock for good (CI's TSan run hung in
// TimeHelpersTest.TickerRefusesANonPositivePeriodAndMoves). Each round
// makes the timer overdue (a busy fiber runs no timers) and then parks on
// its channel, a yield per round shifting the look's phase, so that some
// round reaches the look at the park. In a child process: the deadlock
// would hang the suite.
TEST(TimerLookDeathTest, ATimerDueAsAFiberParksOnItsChannelIsDelivered) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        alarm(30);  // the deadlock would hang: SIGALRM fails the test instead
        weft::run(
            [] {
              weft::Ticker ticker(1ms);
              for (int round = 0; round < 40; ++round) {
                (void)ticker.chan().recv();  // it just ticked: the next is a period away
                for (int i = 0; i < round; ++i) weft::yield();
                weft::test::busy_for(1500us);
                (void)ticker.chan().recv();  // parks with the next tick overdue
              }
              // An after() received from without a select (a select parks
              // with no channel's lock held).
              for (int round = 0; round < 40; ++round) {
                for (int i = 0; i < round; ++i) weft::yield();
                auto timeout = weft::after(200us);
                weft::test::busy_for(500us);
                (void)timeout.chan().recv();  // parks with the timer overdue
              }
            },
            weft::RunOptions{.workers = 1});
        std::_Exit(0);
      },
      ::testing::ExitedWithCode(0), "");
}

// Go saturates `now + d`: a duration too long to represent means "never",
// not an overflow into the past that fires at once.
TEST_P(SleepTest, HugeTimerDurationsSaturateToNever) {
  weft::run(
      [] {
        std::atomic<int> fired{0};
        weft::Timer t(std::chrono::nanoseconds::max(), [&] { fired.fetch_add(1); });
        weft::Timer reset([&] { fired.fetch_add(1); });
        reset.reset(std::chrono::nanoseconds::max());
        // Not a synchronisation: the window in which a wrapped deadline, long
        // past, would have fired.
        weft::sleep_for(50ms);
        EXPECT_EQ(fired.load(), 0);
        EXPECT_TRUE(t.stop());  // still armed
        EXPECT_TRUE(reset.stop());
      },
      weft::RunOptions{.workers = GetParam()});
}

// The same for sleeps, which then park for good, as Go's time.Sleep. A fiber
// parked for good is never reclaimed, so they sleep in a child process that
// exits with how many woke.
TEST(SleepDeathTest, HugeSleepsParkForGood) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(weft::run(
                  [] {
                    static std::atomic<int> woke{0};
                    weft::go([] {
                      weft::sleep_for(std::chrono::nanoseconds::max());
                      woke.fetch_add(1);
                    });
                    weft::go([] {
                      weft::sleep_until(Clock::time_point::max());
                      woke.fetch_add(1);
                    });
                    // Not a synchronisation: the window in which a wrapped
                    // deadline would have woken them, while other fibers run.
                    weft::sleep_for(50ms);
                    std::_Exit(woke.load());
                  },
                  weft::RunOptions{.workers = 2}),
              ::testing::ExitedWithCode(0), "");
}

// A Timer's function runs in a fiber of its own: an exception escaping it is
// fatal there, at its throw site, and says so with its text.
TEST(TimerDeathTest, ExceptionFromTheFunctionIsFatalAtItsThrowSite) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(weft::run(
                  [] {
                    weft::Timer t(1ms, [] {
                      weft::test::ExitIfUnwound guard;
                      throw std::runtime_error("timer boom");
                    });
                    weft::sleep_for(std::chrono::nanoseconds::max());
                  },
                  weft::RunOptions{.workers = 1}),
              ::testing::KilledBySignal(SIGABRT),
              "weft: fiber [0-9]+: uncaught exception std::runtime_error: timer boom");
}

// A function object whose copy throws: the expiry copies the Timer's function
// into the fiber it starts, on a worker with no caller to hand the exception.
struct ThrowsWhenCopied {
  ThrowsWhenCopied() = default;
  ThrowsWhenCopied(ThrowsWhenCopied&&) noexcept {}
  ThrowsWhenCopied(const ThrowsWhenCopied&) { throw std::runtime_error("copy at expiry"); }
  void operator()() const {}
};

TEST(TimerDeathTest, ExceptionFromAnExpiryIsFatalWithItsText) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(weft::run(
                   [] {
                     weft::Timer t(1ms, ThrowsWhenCopied{});
                     weft::sleep_for(std::chrono::nanoseconds::max());
                   },
                   weft::RunOptions{.workers = 1}),
               "weft: a timer's expiry threw std::runtime_error: copy at expiry");
}

INSTANTIATE_TEST_SUITE_P(Workers, SleepTest, ::testing::Values(1, 2, 4), weft::test::workers_name);

}  // namespace
