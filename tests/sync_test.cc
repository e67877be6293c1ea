#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "test_util.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;

class SyncTest : public ::testing::TestWithParam<int> {
 protected:
  weft::RunOptions opts() const { return weft::RunOptions{.workers = GetParam()}; }
};

TEST_P(SyncTest, MutexExcludesUnderContention) {
  const int fibers = 16, rounds = weft::test::stress_iterations(5000);
  long counter = 0;  // deliberately not atomic: the mutex must protect it
  std::atomic<int> inside{0}, overlaps{0};
  weft::run(
      [&] {
        weft::Mutex mu;
        weft::WaitGroup wg;
        for (int f = 0; f < fibers; ++f) {
          wg.add(1);
          weft::go([&] {
            for (int i = 0; i < rounds; ++i) {
              std::lock_guard lock(mu);
              if (inside.fetch_add(1) != 0) overlaps.fetch_add(1);
              ++counter;
              if (i % 7 == 0) weft::yield();  // hold it across a switch sometimes
              inside.fetch_sub(1);
            }
            wg.done();
          });
        }
        wg.wait();
      },
      opts());
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(counter, static_cast<long>(fibers) * rounds);
}

TEST_P(SyncTest, TryLock) {
  weft::run(
      [] {
        weft::Mutex mu;
        EXPECT_TRUE(mu.try_lock());
        EXPECT_FALSE(mu.try_lock());
        std::atomic<bool> other{true};
        weft::WaitGroup tried;  // joined: a nap would not prove the other fiber ran
        tried.add(1);
        weft::go([&] {
          other.store(mu.try_lock());
          tried.done();
        });
        tried.wait();
        EXPECT_FALSE(other.load());
        mu.unlock();
        EXPECT_TRUE(mu.try_lock());
        mu.unlock();
      },
      opts());
}

TEST_P(SyncTest, MutexWaiterIsNotStarved) {
  // Two fibers re-lock in a tight loop; a third must still get the lock
  // (handoff after it waited over 1 ms).
  weft::run(
      [] {
        weft::Mutex mu;
        std::atomic<bool> stop{false}, third_got_it{false};
        weft::WaitGroup wg;
        for (int k = 0; k < 2; ++k) {
          wg.add(1);
          weft::go([&] {
            while (!stop.load()) {
              mu.lock();
              weft::yield();  // hold it while others queue up
              mu.unlock();
            }
            wg.done();
          });
        }
        wg.add(1);
        weft::go([&] {
          mu.lock();
          third_got_it.store(true);
          mu.unlock();
          stop.store(true);
          wg.done();
        });
        wg.wait();
        EXPECT_TRUE(third_got_it.load());
      },
      opts());
}

TEST_P(SyncTest, MutexAcrossFibersAndThreads) {
  long counter = 0;
  weft::run(
      [&] {
        weft::Mutex mu;
        std::thread t([&] {
          for (int i = 0; i < 20000; ++i) {
            std::lock_guard lock(mu);
            ++counter;
          }
        });
        for (int i = 0; i < 20000; ++i) {
          std::lock_guard lock(mu);
          ++counter;
          if (i % 100 == 0) weft::yield();
        }
        t.join();
      },
      opts());
  EXPECT_EQ(counter, 40000);
}

TEST_P(SyncTest, CondVarNotifyOneWakesOneNotifyAllWakesAll) {
  weft::run(
      [] {
        weft::Mutex mu;
        weft::CondVar cv;
        int permits = 0, woke = 0, waiting = 0;
        weft::WaitGroup wg;
        for (int i = 0; i < 5; ++i) {
          wg.add(1);
          weft::go([&] {
            std::unique_lock lock(mu);
            ++waiting;
            cv.wait(lock, [&] { return permits > 0; });
            --permits;
            ++woke;
            lock.unlock();  // before wg.done(): mu goes with main's scope
            wg.done();
          });
        }
        auto wait_for = [&](auto pred) {
          for (;;) {
            {
              std::lock_guard lock(mu);
              if (pred()) return;
            }
            weft::sleep_for(100us);
          }
        };
        wait_for([&] { return waiting == 5; });
        {
          std::lock_guard lock(mu);
          permits = 1;
        }
        cv.notify_one();
        wait_for([&] { return woke == 1; });
        weft::sleep_for(2ms);
        {
          std::lock_guard lock(mu);
          EXPECT_EQ(woke, 1);  // the other four stay parked
          permits = 4;
        }
        cv.notify_all();
        wg.wait();
        EXPECT_EQ(woke, 5);
      },
      opts());
}

TEST_P(SyncTest, WaitGroupWaitsForEveryone) {
  const int n = weft::test::stress_iterations(5000);
  std::atomic<int> finished{0};
  weft::run(
      [&] {
        weft::WaitGroup wg;
        wg.add(n);
        for (int i = 0; i < n; ++i) {
          weft::go([&] {
            if (finished.fetch_add(1) % 3 == 0) weft::yield();
            wg.done();
          });
        }
        wg.wait();
        EXPECT_EQ(finished.load(), n);
        wg.wait();  // zero: returns at once
      },
      opts());
}

TEST_P(SyncTest, ManyWaitersOnOneWaitGroup) {
  weft::run(
      [] {
        weft::WaitGroup gate, done;
        gate.add(1);
        std::atomic<int> passed{0};
        for (int i = 0; i < 100; ++i) {
          done.add(1);
          weft::go([&] {
            gate.wait();
            passed.fetch_add(1);
            done.done();
          });
        }
        weft::sleep_for(2ms);
        EXPECT_EQ(passed.load(), 0);
        gate.done();
        done.wait();
        EXPECT_EQ(passed.load(), 100);
      },
      opts());
}

}  // namespace

namespace weft::detail {
struct WaitGroupProbe {
  static bool sharded(const WaitGroup& wg) { return wg.shards_.load() != nullptr; }
  static bool shard_now(WaitGroup& wg) { return wg.start_sharding(); }
};
}  // namespace weft::detail

namespace {

using weft::detail::WaitGroupProbe;

// A fiber adding while fibers on other workers finish, nobody waiting yet:
// the group moves to per-worker counters, and still counts exactly.
TEST_P(SyncTest, WaitGroupShardsUnderCrossWorkerTrafficAndStaysExact) {
  weft::run(
      [&] {
        std::atomic<int> finished{0};
        weft::WaitGroup wg;
        int spawned = 0;
        auto spawn = [&] {
          wg.add(1);
          ++spawned;
          weft::go([&] {
            finished.fetch_add(1);
            wg.done();
          });
        };
        if (GetParam() == 1) {
          for (int i = 0; i < 5000; ++i) spawn();
          EXPECT_FALSE(WaitGroupProbe::sharded(wg));  // nobody to share the word with
        } else {
          // Hand the word over on purpose: this fiber keeps its worker while
          // it waits, so each new fiber runs on another one. Spawning in a
          // loop hands it over only as often as the two workers really run
          // at once, which a loaded machine may not allow.
          while (spawned < 1000 && !WaitGroupProbe::sharded(wg)) {
            const int before = finished.load();
            spawn();
            while (finished.load() == before) weft::detail::cpu_relax();
          }
          EXPECT_TRUE(WaitGroupProbe::sharded(wg));
        }
        for (int i = 0; i < 1000; ++i) spawn();  // counted on the shards, if any
        wg.wait();
        EXPECT_EQ(finished.load(), spawned);
        wg.wait();  // folded and zero: returns at once
      },
      opts());
}

// Waiters fold the per-worker counters while done() calls land on them, on
// the word, or between the two; several waiters fold at once. No done() may
// be lost or counted twice, and wait() returns only after every one.
TEST_P(SyncTest, WaitGroupFoldRacesWithDoneAndOtherWaiters) {
  if (GetParam() < 2) GTEST_SKIP() << "sharding needs two workers";
  const int rounds = weft::test::stress_iterations(2000);
  weft::run(
      [&] {
        for (int round = 0; round < rounds; ++round) {
          const int n = 1 + round % 16, waiters = 1 + round % 3;
          std::atomic<int> finished{0}, checked{0};
          weft::WaitGroup wg, all_waited;
          wg.add(n);
          ASSERT_TRUE(WaitGroupProbe::shard_now(wg));
          for (int i = 0; i < n; ++i) {
            weft::go([&, i] {
              if (i % 2 == 0) weft::yield();
              finished.fetch_add(1);
              wg.done();
            });
          }
          all_waited.add(waiters);
          for (int i = 0; i < waiters; ++i) {
            weft::go([&] {
              wg.wait();
              if (finished.load() == n) checked.fetch_add(1);
              all_waited.done();
            });
          }
          wg.wait();
          ASSERT_EQ(finished.load(), n) << "round " << round;
          all_waited.wait();
          ASSERT_EQ(checked.load(), waiters) << "round " << round;
        }
      },
      opts());
}

// A plain thread's add() and done() always use the word, beside fibers
// using the per-worker counters.
TEST_P(SyncTest, WaitGroupMixesThreadsWithShardedFibers) {
  if (GetParam() < 2) GTEST_SKIP() << "sharding needs two workers";
  weft::run(
      [&] {
        weft::WaitGroup wg;
        wg.add(1000);
        ASSERT_TRUE(WaitGroupProbe::shard_now(wg));
        std::atomic<int> finished{0};
        std::thread helper([&] {
          for (int i = 0; i < 500; ++i) {
            finished.fetch_add(1);
            wg.done();
          }
        });
        for (int i = 0; i < 500; ++i) {
          weft::go([&] {
            finished.fetch_add(1);
            wg.done();
          });
        }
        wg.wait();
        EXPECT_EQ(finished.load(), 1000);
        helper.join();
      },
      opts());
}

TEST(SyncDeathTest, NegativeWaitGroupCounterIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        weft::WaitGroup wg;
        wg.done();
      },
      "negative counter");
}

// Sharded, one done() too many only shows when the counters are folded: by
// wait(), or by the destructor of a group nobody waited on.
TEST(SyncDeathTest, NegativeShardedWaitGroupIsReportedByWait) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(weft::run(
                   [] {
                     weft::WaitGroup wg, other_done;
                     wg.add(1);
                     if (!WaitGroupProbe::shard_now(wg)) return;
                     other_done.add(1);
                     weft::go([&] {
                       wg.done();
                       other_done.done();
                     });
                     wg.done();
                     other_done.wait();
                     wg.wait();
                   },
                   weft::RunOptions{.workers = 2}),
               "negative counter");
}

TEST(SyncDeathTest, NegativeShardedWaitGroupIsReportedByTheDestructor) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(weft::run(
                   [] {
                     weft::WaitGroup wg;
                     if (!WaitGroupProbe::shard_now(wg)) return;
                     wg.done();
                   },
                   weft::RunOptions{.workers = 2}),
               "negative counter");
}

INSTANTIATE_TEST_SUITE_P(Workers, SyncTest, ::testing::Values(1, 2, 4), weft::test::workers_name);

}  // namespace
