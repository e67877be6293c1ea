// weft::RWMutex and weft::Once against Go's sync.RWMutex and sync.Once.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

#include "test_util.h"
#include "weft/debug.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace {

class RWMutexTest : public ::testing::TestWithParam<int> {
 protected:
  weft::RunOptions opts() const { return weft::RunOptions{.workers = GetParam()}; }
};
class OnceTest : public ::testing::TestWithParam<int> {
 protected:
  weft::RunOptions opts() const { return weft::RunOptions{.workers = GetParam()}; }
};

using weft::test::eventually;
using weft::test::parked_for;

static_assert(!std::is_copy_constructible_v<weft::RWMutex>);
static_assert(!std::is_copy_constructible_v<weft::Once>);

TEST_P(RWMutexTest, ReadersHoldItTogether) {
  // Each reader stays inside until all of them are: readers that excluded
  // each other would never all get there (the runtime reports the deadlock).
  weft::run(
      [] {
        constexpr int kReaders = 8;
        weft::RWMutex mu;
        weft::WaitGroup all_inside, leave, finished;
        all_inside.add(kReaders);
        leave.add(1);
        finished.add(kReaders);
        for (int i = 0; i < kReaders; ++i) {
          weft::go([&] {
            std::shared_lock lock(mu);
            all_inside.done();
            leave.wait();
            // Out before saying so: main's try_lock below, and mu's end,
            // come once the last reader is done.
            lock.unlock();
            finished.done();
          });
        }
        all_inside.wait();
        if (mu.try_lock()) {
          ADD_FAILURE() << "a writer got in with readers inside";
          mu.unlock();
        }
        EXPECT_TRUE(mu.try_lock_shared());
        mu.unlock_shared();
        leave.done();
        finished.wait();
        EXPECT_TRUE(mu.try_lock());  // and can once they have gone
        mu.unlock();
      },
      opts());
}

TEST_P(RWMutexTest, TryLockAndTryLockShared) {
  weft::run(
      [] {
        weft::RWMutex mu;
        ASSERT_TRUE(mu.try_lock());
        EXPECT_FALSE(mu.try_lock());
        EXPECT_FALSE(mu.try_lock_shared());
        mu.unlock();

        ASSERT_TRUE(mu.try_lock_shared());
        EXPECT_TRUE(mu.try_lock_shared());
        EXPECT_FALSE(mu.try_lock());
        mu.unlock_shared();
        EXPECT_FALSE(mu.try_lock());  // one reader is still inside
        mu.unlock_shared();
        EXPECT_TRUE(mu.try_lock());
        mu.unlock();
      },
      opts());
}

TEST_P(RWMutexTest, WriterWaitsForReadersAndStopsNewOnes) {
  // Go's writer preference: a writer waiting for the readers inside keeps
  // readers that come after it out until it is done.
  weft::run(
      [] {
        weft::RWMutex mu;
        std::atomic<int> step{0}, writer_at{0}, late_reader_at{0};
        weft::WaitGroup finished;
        finished.add(2);
        mu.lock_shared();
        weft::go([&] {
          mu.lock();
          writer_at.store(step.fetch_add(1) + 1);
          mu.unlock();
          finished.done();
        });
        EXPECT_TRUE(eventually([&] { return parked_for("RWMutex.lock") == 1; }));
        EXPECT_EQ(writer_at.load(), 0) << "the writer got in while a reader held the lock";
        if (mu.try_lock_shared()) {
          ADD_FAILURE() << "the waiting writer should keep new readers out";
          mu.unlock_shared();
        }

        weft::go([&] {
          mu.lock_shared();
          late_reader_at.store(step.fetch_add(1) + 1);
          mu.unlock_shared();
          finished.done();
        });
        EXPECT_TRUE(eventually(
            [&] { return late_reader_at.load() != 0 || parked_for("RWMutex.lock_shared") == 1; }));
        EXPECT_EQ(late_reader_at.load(), 0) << "a reader overtook the waiting writer";

        mu.unlock_shared();
        finished.wait();
        EXPECT_EQ(writer_at.load(), 1);
        EXPECT_EQ(late_reader_at.load(), 2);
      },
      opts());
}

TEST_P(RWMutexTest, ReadersQueuedBehindAWriterAllEnterAfterIt) {
  weft::run(
      [] {
        constexpr int kReaders = 5;
        weft::RWMutex mu;
        int value = 0;  // not atomic: the lock must order the write before the reads
        std::atomic<int> saw_write{0};
        weft::WaitGroup finished;
        mu.lock();
        finished.add(kReaders);
        for (int i = 0; i < kReaders; ++i) {
          weft::go([&] {
            std::shared_lock lock(mu);
            if (value == 7) saw_write.fetch_add(1);
            lock.unlock();  // before finished.done(): mu goes with main's scope
            finished.done();
          });
        }
        EXPECT_TRUE(eventually(
            [&] { return parked_for("RWMutex.lock_shared") == std::uint64_t{kReaders}; }));
        value = 7;
        mu.unlock();  // lets all of them in at once
        finished.wait();
        EXPECT_EQ(saw_write.load(), kReaders);
      },
      opts());
}

TEST_P(RWMutexTest, ReadersAndWritersNeverOverlapUnderContention) {
  // Go's HammerRWMutex: a reader adds 1 to `activity`, a writer 10000; each
  // checks what it finds. Writers bump a plain counter that readers watch:
  // it must never go backwards for a reader (and TSan sees every pair).
  const int rounds = weft::test::stress_iterations(10000);
  constexpr int kReaders = 6, kWriters = 2;
  std::atomic<int> activity{0}, overlaps{0}, went_back{0};
  long counter = 0;
  weft::run(
      [&] {
        weft::RWMutex mu;
        weft::WaitGroup finished;
        finished.add(kReaders + kWriters);
        for (int r = 0; r < kReaders; ++r) {
          weft::go([&, r] {
            long last_seen = 0;
            for (int i = 0; i < rounds; ++i) {
              const bool tried = (i + r) % 11 == 0;
              if (!tried || !mu.try_lock_shared()) mu.lock_shared();
              const int now = activity.fetch_add(1) + 1;
              if (now < 1 || now >= 10000) overlaps.fetch_add(1);
              if (counter < last_seen) went_back.fetch_add(1);
              last_seen = counter;
              if (i % 5 == r % 5) weft::yield();  // hold it across a switch sometimes
              activity.fetch_sub(1);
              mu.unlock_shared();
            }
            finished.done();
          });
        }
        for (int w = 0; w < kWriters; ++w) {
          weft::go([&, w] {
            for (int i = 0; i < rounds; ++i) {
              if ((i + w) % 7 != 0 || !mu.try_lock()) mu.lock();
              const int now = activity.fetch_add(10000) + 10000;
              if (now != 10000) overlaps.fetch_add(1);
              ++counter;
              if (i % 3 == 0) weft::yield();
              activity.fetch_sub(10000);
              mu.unlock();
            }
            finished.done();
          });
        }
        finished.wait();
      },
      opts());
  EXPECT_EQ(overlaps.load(), 0);
  EXPECT_EQ(went_back.load(), 0);
  EXPECT_EQ(counter, static_cast<long>(kWriters) * rounds);
}

TEST_P(RWMutexTest, LastReaderLeavingMayLetTheWriterDestroyIt) {
  // The writer frees the mutex as soon as it has had it: the reader whose
  // unlock_shared() woke it must not touch the mutex after that (ASan).
  const int rounds = weft::test::stress_iterations(2000);
  std::atomic<int> writers_done{0};
  weft::run(
      [&] {
        for (int i = 0; i < rounds; ++i) {
          auto* mu = new weft::RWMutex;
          mu->lock_shared();
          weft::WaitGroup finished;
          finished.add(1);
          weft::go([&, mu] {
            mu->lock();
            mu->unlock();
            delete mu;
            writers_done.fetch_add(1);
            finished.done();
          });
          // Once the writer is pending, new readers are refused.
          while (mu->try_lock_shared()) {
            mu->unlock_shared();
            weft::yield();
          }
          mu->unlock_shared();
          finished.wait();
        }
      },
      opts());
  EXPECT_EQ(writers_done.load(), rounds);
}

TEST_P(RWMutexTest, FibersAndPlainThreadsShareIt) {
  // Threads outside the runtime wait on the same mutex as fibers do.
  const int rounds = weft::test::stress_iterations(20000);
  long counter = 0;
  std::atomic<int> overlaps{0};
  std::atomic<int> writers_inside{0};
  weft::run(
      [&] {
        weft::RWMutex mu;
        auto write = [&] {
          std::unique_lock lock(mu);
          if (writers_inside.fetch_add(1) != 0) overlaps.fetch_add(1);
          ++counter;
          writers_inside.fetch_sub(1);
        };
        auto read = [&] {
          std::shared_lock lock(mu);
          if (writers_inside.load() != 0) overlaps.fetch_add(1);
          return counter;
        };
        std::thread thread([&] {
          for (int i = 0; i < rounds; ++i) {
            if (i % 4 == 0) {
              write();
            } else {
              (void)read();
            }
          }
        });
        weft::WaitGroup finished;
        finished.add(2);
        for (int f = 0; f < 2; ++f) {
          weft::go([&] {
            for (int i = 0; i < rounds; ++i) {
              if (i % 4 == 1) {
                write();
              } else {
                (void)read();
              }
              if (i % 64 == 0) weft::yield();
            }
            finished.done();
          });
        }
        finished.wait();
        thread.join();
      },
      opts());
  EXPECT_EQ(overlaps.load(), 0);
  // The thread writes in rounds 0, 4, 8, ...; each fiber in rounds 1, 5, 9, ...
  EXPECT_EQ(counter, static_cast<long>((rounds + 3) / 4 + 2 * ((rounds + 2) / 4)));
}

TEST(RWMutexDeathTest, UnlockSharedWithoutReaderIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        weft::RWMutex mu;
        mu.unlock_shared();
      },
      "unlock_shared of an RWMutex not locked for reading");
}

TEST(RWMutexDeathTest, UnlockWithoutWriterIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        weft::RWMutex mu;
        mu.lock_shared();
        mu.unlock();
      },
      "unlock of an RWMutex not locked for writing");
}

TEST_P(OnceTest, RunsOnceAndLaterCallsDoNothing) {
  weft::run(
      [] {
        weft::Once once;
        int runs = 0;
        once.call([&] { ++runs; });
        once.call([&] { ++runs; });
        const auto add_ten = [&] { runs += 10; };  // a const lvalue works too
        once.call(add_ten);
        EXPECT_EQ(runs, 1);
      },
      opts());
}

TEST_P(OnceTest, ConcurrentCallersReturnAfterFnHasReturned) {
  // Go's TestOnce: every caller returns with fn's effects visible, however
  // the calls interleave, and fn runs once per Once.
  const int rounds = weft::test::stress_iterations(2000);
  constexpr int kCallers = 4;
  std::atomic<int> runs{0}, too_early{0};
  weft::run(
      [&] {
        for (int i = 0; i < rounds; ++i) {
          weft::Once once;
          int value = 0;  // not atomic: call() must order fn's write before every return
          weft::WaitGroup finished;
          finished.add(kCallers);
          for (int c = 0; c < kCallers; ++c) {
            weft::go([&] {
              once.call([&] {
                runs.fetch_add(1);
                weft::yield();  // let other callers arrive while fn runs
                value = 42;
              });
              if (value != 42) too_early.fetch_add(1);
              finished.done();
            });
          }
          finished.wait();
        }
      },
      opts());
  EXPECT_EQ(runs.load(), rounds);
  EXPECT_EQ(too_early.load(), 0);
}

TEST_P(OnceTest, AnExceptionLeavesItToTheNextCall) {
  // As std::call_once, not Go: a throwing fn does not count as done.
  weft::run(
      [] {
        weft::Once once;
        int runs = 0;
        EXPECT_THROW(once.call([&] {
          ++runs;
          throw std::runtime_error("init failed");
        }),
                     std::runtime_error);
        once.call([&] { ++runs; });
        once.call([&] { ++runs; });
        EXPECT_EQ(runs, 2);
      },
      opts());
}

TEST_P(OnceTest, AWaitingCallerRunsItsFnWhenTheFirstThrows) {
  weft::run(
      [] {
        weft::Once once;
        std::atomic<bool> first_started{false}, first_threw{false};
        std::atomic<int> second_runs{0}, third_runs{0};
        std::atomic<bool> second_returned{false};
        weft::WaitGroup fail_now, finished;
        fail_now.add(1);
        finished.add(2);
        weft::go([&] {
          try {
            once.call([&] {
              first_started.store(true);
              fail_now.wait();
              throw std::runtime_error("init failed");
            });
          } catch (const std::runtime_error&) {
            first_threw.store(true);
          }
          finished.done();
        });
        EXPECT_TRUE(eventually([&] { return first_started.load(); }));
        weft::go([&] {
          once.call([&] { second_runs.fetch_add(1); });
          second_returned.store(true);
          finished.done();
        });
        // The second caller waits for the first fn to end, whichever way.
        EXPECT_TRUE(eventually([&] { return parked_for("Mutex.lock") == 1; }));
        EXPECT_FALSE(second_returned.load());
        fail_now.done();
        finished.wait();
        EXPECT_TRUE(first_threw.load());
        EXPECT_EQ(second_runs.load(), 1);
        once.call([&] { third_runs.fetch_add(1); });
        EXPECT_EQ(third_runs.load(), 0);
      },
      opts());
}

TEST_P(OnceTest, FibersAndPlainThreadsShareIt) {
  const int rounds = weft::test::stress_iterations(500);
  std::atomic<int> runs{0}, too_early{0};
  weft::run(
      [&] {
        for (int i = 0; i < rounds; ++i) {
          weft::Once once;
          int value = 0;
          auto init = [&] {
            runs.fetch_add(1);
            value = 1;
          };
          std::thread thread([&] {
            once.call(init);
            if (value != 1) too_early.fetch_add(1);
          });
          once.call(init);
          if (value != 1) too_early.fetch_add(1);
          thread.join();
        }
      },
      opts());
  EXPECT_EQ(runs.load(), rounds);
  EXPECT_EQ(too_early.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Workers, RWMutexTest, ::testing::Values(1, 2), weft::test::workers_name);
INSTANTIATE_TEST_SUITE_P(Workers, OnceTest, ::testing::Values(1, 2), weft::test::workers_name);

}  // namespace
