// weft::Semaphore and weft::Group against golang.org/x/sync's semaphore and
// errgroup.
#include "weft/errgroup.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#include "test_util.h"
#include "weft/context.h"
#include "weft/debug.h"
#include "weft/runtime.h"
#include "weft/semaphore.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using weft::errc;

class SemaphoreTest : public ::testing::TestWithParam<int> {
 protected:
  weft::RunOptions opts() const { return weft::RunOptions{.workers = GetParam()}; }
};
class GroupTest : public ::testing::TestWithParam<int> {
 protected:
  weft::RunOptions opts() const { return weft::RunOptions{.workers = GetParam()}; }
};

// A task's own failures, distinct from every weft error.
class TaskCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "task"; }
  std::string message(int v) const override { return "task failed " + std::to_string(v); }
};
std::error_code task_error(int n) {
  static const TaskCategory category;
  return {n, category};
}

using weft::test::eventually;
using weft::test::parked_for;

// Someone is queued: a zero weight is refused exactly then (fibers or
// threads alike).
bool has_waiters(weft::Semaphore& s) {
  return !s.try_acquire(0);
}

TEST_P(SemaphoreTest, NeverGrantsMoreThanItsSize) {
  const int rounds = weft::test::stress_iterations(5000);
  constexpr int kFibers = 8;
  constexpr std::int64_t kSize = 10;
  std::atomic<std::int64_t> in_use{0};
  std::atomic<int> over{0}, failed{0};
  weft::run(
      [&] {
        weft::Semaphore sem(kSize);
        // Never cancelled, but cancelable: its waits go through the DoneHook.
        auto cancelable = weft::with_cancel(weft::background());
        weft::WaitGroup finished;
        finished.add(kFibers);
        for (int f = 0; f < kFibers; ++f) {
          weft::go([&, f] {
            for (int i = 0; i < rounds; ++i) {
              const std::int64_t weight = 1 + (i + f) % 4;
              switch ((i + f) % 3) {
                case 0:
                  if (sem.acquire(weight)) failed.fetch_add(1);
                  break;
                case 1:
                  if (sem.acquire(cancelable.ctx, weight)) failed.fetch_add(1);
                  break;
                default:
                  if (!sem.try_acquire(weight) && sem.acquire(weft::background(), weight)) {
                    failed.fetch_add(1);
                  }
              }
              if (in_use.fetch_add(weight) + weight > kSize) over.fetch_add(1);
              if (i % 3 == 0) weft::yield();
              in_use.fetch_sub(weight);
              sem.release(weight);
            }
            finished.done();
          });
        }
        finished.wait();
        EXPECT_TRUE(sem.try_acquire(kSize));  // everything came back
      },
      opts());
  EXPECT_EQ(over.load(), 0);
  EXPECT_EQ(failed.load(), 0);
}

TEST_P(SemaphoreTest, TryAcquireTakesWhatIsFreeButNeverJumpsTheQueue) {
  weft::run(
      [] {
        weft::Semaphore sem(3);
        EXPECT_TRUE(sem.try_acquire(2));
        EXPECT_FALSE(sem.try_acquire(2));
        EXPECT_TRUE(sem.try_acquire(1));
        EXPECT_FALSE(sem.try_acquire(1));
        sem.release(2);

        std::atomic<bool> got_three{false};
        weft::WaitGroup finished;
        finished.add(1);
        weft::go([&] {
          EXPECT_FALSE(sem.acquire(3));
          got_three.store(true);
          sem.release(3);
          finished.done();
        });
        EXPECT_TRUE(eventually([&] { return parked_for("Semaphore.acquire") == 1; }));
        // Two are free, but the waiter for three came first.
        if (sem.try_acquire(1)) {
          ADD_FAILURE() << "try_acquire overtook a queued waiter";
          sem.release(1);
        }
        EXPECT_FALSE(got_three.load());
        sem.release(1);
        finished.wait();
        EXPECT_TRUE(got_three.load());
        EXPECT_TRUE(sem.try_acquire(3));
      },
      opts());
}

TEST_P(SemaphoreTest, ABigRequestIsNotOvertakenBySmallOnes) {
  weft::run(
      [] {
        weft::Semaphore sem(10);
        ASSERT_FALSE(sem.acquire(6));  // four stay free
        std::atomic<int> step{0}, big_at{0}, small_at{0};
        weft::WaitGroup finished;
        finished.add(2);
        weft::go([&] {
          EXPECT_FALSE(sem.acquire(10));
          big_at.store(step.fetch_add(1) + 1);
          sem.release(10);
          finished.done();
        });
        EXPECT_TRUE(eventually([&] { return parked_for("Semaphore.acquire") == 1; }));
        weft::go([&] {
          EXPECT_FALSE(sem.acquire(1));
          small_at.store(step.fetch_add(1) + 1);
          sem.release(1);
          finished.done();
        });
        EXPECT_TRUE(eventually(
            [&] { return small_at.load() != 0 || parked_for("Semaphore.acquire") == 2; }));
        EXPECT_EQ(small_at.load(), 0) << "a small request overtook the big one queued before it";
        sem.release(6);
        finished.wait();
        EXPECT_EQ(big_at.load(), 1);
        EXPECT_EQ(small_at.load(), 2);
      },
      opts());
}

TEST_P(SemaphoreTest, MoreThanItsSizeFailsAtOnce) {
  weft::run(
      [] {
        weft::Semaphore sem(5);
        const std::error_code ec = sem.acquire(6);
        EXPECT_EQ(ec, errc::exceeds_semaphore_size);
        EXPECT_EQ(ec.message(), "semaphore acquire larger than its size");
        auto cancelable = weft::with_cancel(weft::background());
        EXPECT_EQ(sem.acquire(cancelable.ctx, 6), errc::exceeds_semaphore_size);
        EXPECT_FALSE(sem.try_acquire(6));
        EXPECT_TRUE(sem.try_acquire(5));  // nothing was taken
        sem.release(5);

        weft::Semaphore empty(0);
        EXPECT_EQ(empty.acquire(1), errc::exceeds_semaphore_size);
        EXPECT_FALSE(empty.acquire(0));  // nothing asked, nothing owed
      },
      opts());
}

TEST_P(SemaphoreTest, CancellingTheContextWithdrawsTheWaiter) {
  weft::run(
      [] {
        weft::Semaphore sem(2);
        ASSERT_FALSE(sem.acquire(2));
        auto cancelable = weft::with_cancel_cause(weft::background());
        std::error_code result;
        weft::WaitGroup finished;
        finished.add(1);
        weft::go([&] {
          result = sem.acquire(cancelable.ctx, 1);
          finished.done();
        });
        EXPECT_TRUE(eventually([&] { return parked_for("Semaphore.acquire") == 1; }));
        cancelable.cancel(task_error(3));
        finished.wait();
        EXPECT_EQ(result, errc::canceled);  // err(), as Go's ctx.Err(); not the cause
        sem.release(2);
        EXPECT_TRUE(sem.try_acquire(2));  // the withdrawn waiter took nothing
      },
      opts());
}

TEST_P(SemaphoreTest, ADeadlineEndsTheWait) {
  weft::run(
      [] {
        weft::Semaphore sem(1);
        ASSERT_FALSE(sem.acquire(1));
        auto timed = weft::with_timeout(weft::background(), 1ms);
        EXPECT_EQ(sem.acquire(timed.ctx, 1), errc::deadline_exceeded);
        EXPECT_FALSE(has_waiters(sem));
        sem.release(1);
        EXPECT_TRUE(sem.try_acquire(1));
      },
      opts());
}

TEST_P(SemaphoreTest, ADoneContextFailsEvenWhenTheWeightIsFree) {
  weft::run(
      [] {
        weft::Semaphore sem(4);
        auto cancelable = weft::with_cancel(weft::background());
        cancelable.cancel();
        EXPECT_EQ(sem.acquire(cancelable.ctx, 1), errc::canceled);
        EXPECT_TRUE(sem.try_acquire(4));
      },
      opts());
}

TEST_P(SemaphoreTest, CancellingTheHeadLetsThoseBehindItThrough) {
  weft::run(
      [] {
        weft::Semaphore sem(10);
        ASSERT_FALSE(sem.acquire(8));  // two stay free
        auto cancelable = weft::with_cancel(weft::background());
        std::error_code big_result;
        std::atomic<bool> small_got{false};
        weft::WaitGroup finished;
        finished.add(2);
        weft::go([&] {
          big_result = sem.acquire(cancelable.ctx, 5);
          finished.done();
        });
        EXPECT_TRUE(eventually([&] { return parked_for("Semaphore.acquire") == 1; }));
        weft::go([&] {
          EXPECT_FALSE(sem.acquire(2));
          small_got.store(true);
          finished.done();
        });
        EXPECT_TRUE(
            eventually([&] { return small_got.load() || parked_for("Semaphore.acquire") == 2; }));
        EXPECT_FALSE(small_got.load());
        cancelable.cancel();  // the two free ones now go to the small request
        finished.wait();
        EXPECT_EQ(big_result, errc::canceled);
        EXPECT_TRUE(small_got.load());
        sem.release(10);
        EXPECT_TRUE(sem.try_acquire(10));
      },
      opts());
}

TEST_P(SemaphoreTest, CancelRacingWithReleaseLosesNoWeight) {
  // The waiter is granted, withdrawn, or granted and then gives it back
  // because ctx ended before it ran again: whichever, the weight is whole
  // afterwards (a leak shows as the next round's acquire never returning).
  const int rounds = weft::test::stress_iterations(4000);
  std::atomic<int> granted{0}, refused{0};
  weft::run(
      [&] {
        weft::Semaphore sem(1);
        for (int i = 0; i < rounds; ++i) {
          ASSERT_FALSE(sem.acquire(1));
          auto cancelable = weft::with_cancel(weft::background());
          weft::WaitGroup finished;
          finished.add(1);
          weft::go([&] {
            if (std::error_code ec = sem.acquire(cancelable.ctx, 1)) {
              if (ec == errc::canceled) refused.fetch_add(1);
            } else {
              granted.fetch_add(1);
              sem.release(1);
            }
            finished.done();
          });
          if (i % 2 == 0) weft::yield();  // every other round the waiter queues first
          switch ((i / 2) % 3) {
            case 0:  // granted, then ctx ends before the waiter runs again
              sem.release(1);
              cancelable.cancel();
              break;
            case 1:  // withdrawn, then the weight comes back to nobody
              cancelable.cancel();
              sem.release(1);
              break;
            default: {  // the cancel from another fiber, racing the release
              finished.add(1);
              weft::go([&] {
                cancelable.cancel();
                finished.done();
              });
              if (i % 3 == 0) weft::yield();
              sem.release(1);
            }
          }
          finished.wait();
        }
        EXPECT_TRUE(sem.try_acquire(1));
        EXPECT_FALSE(has_waiters(sem));
      },
      opts());
  EXPECT_EQ(granted.load() + refused.load(), rounds);
}

TEST_P(SemaphoreTest, AWokenWaiterMayDestroyIt) {
  // The waiter frees the semaphore once it has its weight: the release()
  // that woke it must not touch the semaphore after that (ASan).
  const int rounds = weft::test::stress_iterations(2000);
  std::atomic<int> destroyed{0};
  weft::run(
      [&] {
        auto cancelable = weft::with_cancel(weft::background());
        for (int i = 0; i < rounds; ++i) {
          auto* sem = new weft::Semaphore(1);
          ASSERT_FALSE(sem->acquire(1));
          weft::WaitGroup finished;
          finished.add(1);
          weft::go([&, sem, i] {
            const std::error_code ec =
                i % 2 == 0 ? sem->acquire(1) : sem->acquire(cancelable.ctx, 1);
            EXPECT_FALSE(ec);
            delete sem;
            destroyed.fetch_add(1);
            finished.done();
          });
          weft::yield();  // with one worker the waiter queues now; with two, often
          sem->release(1);
          finished.wait();
        }
      },
      opts());
  EXPECT_EQ(destroyed.load(), rounds);
}

TEST_P(SemaphoreTest, PlainThreadsWaitAndAreCancelledToo) {
  weft::run(
      [] {
        weft::Semaphore sem(1);
        ASSERT_FALSE(sem.acquire(1));
        auto cancelable = weft::with_cancel(weft::background());
        std::error_code cancelled_result, granted_result{errc::closed};
        std::thread cancelled([&] { cancelled_result = sem.acquire(cancelable.ctx, 1); });
        EXPECT_TRUE(eventually([&] { return has_waiters(sem); }));
        cancelable.cancel();
        cancelled.join();
        EXPECT_EQ(cancelled_result, errc::canceled);

        std::thread granted([&] { granted_result = sem.acquire(1); });
        EXPECT_TRUE(eventually([&] { return has_waiters(sem); }));
        sem.release(1);
        granted.join();
        EXPECT_FALSE(granted_result);
        sem.release(1);
        EXPECT_TRUE(sem.try_acquire(1));
      },
      opts());
}

// A context weft did not make, which neither is nor wraps a weft cancel
// context: the semaphore must still learn when it is done.
class OwnCancel final : public weft::ContextImpl {
 public:
  OwnCancel() : own_(weft::with_cancel(weft::background())) {}
  void cancel() const { own_.cancel(); }
  weft::Done done() const noexcept override { return own_.ctx.done(); }
  std::error_code err() const noexcept override { return own_.ctx.err(); }

 private:
  weft::WithCancelResult<weft::CancelFunc> own_;
};

TEST_P(SemaphoreTest, AUsersContextCancelsTheWait) {
  weft::run(
      [] {
        weft::Semaphore sem(1);
        ASSERT_FALSE(sem.acquire(1));
        auto impl = std::make_shared<OwnCancel>();
        const weft::Context ctx = weft::make_context(impl);
        std::error_code result;
        weft::WaitGroup finished;
        finished.add(1);
        weft::go([&] {
          result = sem.acquire(ctx, 1);
          finished.done();
        });
        EXPECT_TRUE(eventually([&] { return parked_for("Semaphore.acquire") == 1; }));
        impl->cancel();
        finished.wait();
        EXPECT_EQ(result, errc::canceled);
        sem.release(1);
        EXPECT_TRUE(sem.try_acquire(1));
      },
      opts());
}

TEST(SemaphoreDeathTest, ReleasingMoreThanHeldIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        weft::Semaphore sem(4);
        sem.release(1);
      },
      "released more than held");
}

TEST_P(GroupTest, WaitReturnsTheFirstErrorAndKeepsIt) {
  weft::run(
      [] {
        weft::Group group;  // no context: it only collects
        std::atomic<int> ran{0};
        for (int i = 0; i < 4; ++i) {
          group.go([&] {
            ran.fetch_add(1);
            return std::error_code{};
          });
        }
        EXPECT_FALSE(group.wait());
        EXPECT_EQ(ran.load(), 4);
        group.go([] { return task_error(1); });
        EXPECT_EQ(group.wait(), task_error(1));
        group.go([] { return task_error(2); });
        EXPECT_EQ(group.wait(), task_error(1));  // the first one stays
      },
      opts());
}

TEST_P(GroupTest, SuccessLeavesTheContextUntilWaitReturns) {
  weft::run(
      [] {
        auto [group, ctx] = weft::Group::with_context(weft::background());
        weft::Group& g = group;  // lambdas capture these (not the bindings)
        const weft::Context task_ctx = ctx;
        std::atomic<int> saw_done{0};
        for (int i = 0; i < 8; ++i) {
          g.go([&] {
            if (task_ctx.err()) saw_done.fetch_add(1);
            return std::error_code{};
          });
        }
        EXPECT_FALSE(g.wait());
        EXPECT_EQ(saw_done.load(), 0);
        EXPECT_EQ(task_ctx.err(), errc::canceled);
        EXPECT_EQ(weft::cause(task_ctx), errc::canceled);
      },
      opts());
}

TEST_P(GroupTest, TheFirstFailureCancelsTheOthersWithItsCause) {
  weft::run(
      [] {
        auto made = weft::Group::with_context(weft::background());
        const weft::Context ctx = made.ctx;
        constexpr int kWatchers = 5;
        std::atomic<int> stopped{0};
        for (int i = 0; i < kWatchers; ++i) {
          made.group.go([&] {
            ctx.done().wait();  // until a sibling fails
            stopped.fetch_add(1);
            return ctx.err();
          });
        }
        made.group.go([] { return task_error(7); });
        EXPECT_EQ(made.group.wait(), task_error(7));
        EXPECT_EQ(stopped.load(), kWatchers);
        EXPECT_EQ(ctx.err(), errc::canceled);
        EXPECT_EQ(weft::cause(ctx), task_error(7));
      },
      opts());
}

TEST_P(GroupTest, CancellingTheParentReachesTheGroup) {
  weft::run(
      [] {
        auto parent = weft::with_cancel(weft::background());
        auto made = weft::Group::with_context(parent.ctx);
        const weft::Context ctx = made.ctx;
        made.group.go([&] {
          ctx.done().wait();
          return ctx.err();
        });
        parent.cancel();
        EXPECT_EQ(made.group.wait(), errc::canceled);
      },
      opts());
}

TEST_P(GroupTest, OneOfManyFailuresIsReportedAndIsTheCause) {
  // Failures race: whichever wins must be both what wait() returns and the
  // context's cause.
  const int rounds = weft::test::stress_iterations(1000);
  std::atomic<int> mismatched{0};
  weft::run(
      [&] {
        for (int i = 0; i < rounds; ++i) {
          auto made = weft::Group::with_context(weft::background());
          for (int k = 1; k <= 4; ++k) {
            made.group.go([k, i] {
              if ((i + k) % 3 == 0) weft::yield();
              return task_error(k);
            });
          }
          const std::error_code first = made.group.wait();
          const int v = first.value();
          if (first.category() != task_error(1).category() || v < 1 || v > 4 ||
              weft::cause(made.ctx) != first) {
            mismatched.fetch_add(1);
          }
        }
      },
      opts());
  EXPECT_EQ(mismatched.load(), 0);
}

TEST_P(GroupTest, SetLimitBoundsTheFibersRunning) {
  const int rounds = weft::test::stress_iterations(200);
  constexpr int kLimit = 3, kTasks = 20;
  std::atomic<int> running{0}, most{0}, ran{0};
  weft::run(
      [&] {
        for (int r = 0; r < rounds; ++r) {
          weft::Group group;
          group.set_limit(kLimit);
          for (int i = 0; i < kTasks; ++i) {
            group.go([&, i] {
              const int now = running.fetch_add(1) + 1;
              int seen = most.load();
              while (now > seen && !most.compare_exchange_weak(seen, now)) {
              }
              for (int y = 0; y < 1 + i % 3; ++y) weft::yield();
              running.fetch_sub(1);
              ran.fetch_add(1);
              return std::error_code{};
            });
          }
          EXPECT_FALSE(group.wait());
        }
      },
      opts());
  EXPECT_LE(most.load(), kLimit);
  EXPECT_GE(most.load(), 1);
  EXPECT_EQ(ran.load(), rounds * kTasks);
}

TEST_P(GroupTest, GoWaitsForASlotAndTryGoDoesNot) {
  weft::run(
      [] {
        weft::Group group;
        group.set_limit(1);
        weft::WaitGroup hold, spawner;
        hold.add(1);
        spawner.add(1);
        std::atomic<bool> go_returned{false}, second_ran{false}, never_ran{true};
        group.go([&] {
          hold.wait();
          return std::error_code{};
        });
        weft::go([&] {
          group.go([&] {
            second_ran.store(true);
            return std::error_code{};
          });
          go_returned.store(true);
          spawner.done();
        });
        EXPECT_TRUE(eventually([&] { return parked_for("Semaphore.acquire") == 1; }));
        EXPECT_FALSE(go_returned.load());
        EXPECT_FALSE(group.try_go([&] {
          never_ran.store(false);
          return std::error_code{};
        }));
        hold.done();
        spawner.wait();
        EXPECT_FALSE(group.wait());
        EXPECT_TRUE(second_ran.load());
        EXPECT_TRUE(never_ran.load());
        EXPECT_TRUE(group.try_go([] { return std::error_code{}; }));
        EXPECT_FALSE(group.wait());

        weft::Group closed;
        closed.set_limit(0);
        EXPECT_FALSE(closed.try_go([] { return std::error_code{}; }));
        closed.set_limit(-1);  // no limit at all
        EXPECT_TRUE(closed.try_go([] { return std::error_code{}; }));
        EXPECT_FALSE(closed.wait());
      },
      opts());
}

TEST_P(GroupTest, ADestroyedGroupCancelsAndWaitsForItsFibers) {
  weft::run(
      [] {
        std::atomic<bool> finished{false};
        {
          auto made = weft::Group::with_context(weft::background());
          made.group.go([&finished, ctx = made.ctx] {
            ctx.done().wait();
            finished.store(true);
            return std::error_code{};
          });
        }
        EXPECT_TRUE(finished.load());
      },
      opts());
}

TEST(GroupDeathTest, ChangingTheLimitWhileFibersRunIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(weft::run([] {
                 weft::Group group;
                 group.set_limit(2);
                 weft::WaitGroup hold;
                 hold.add(1);
                 group.go([&] {
                   hold.wait();
                   return std::error_code{};
                 });
                 group.set_limit(3);
                 hold.done();
               }),
               "set_limit\\(\\) while fibers of the group run");
}

TEST(GroupDeathTest, GoWithALimitOfZeroIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(weft::run([] {
                 weft::Group group;
                 group.set_limit(0);
                 group.go([] { return std::error_code{}; });
               }),
               "limit of 0");
}

INSTANTIATE_TEST_SUITE_P(Workers, SemaphoreTest, ::testing::Values(1, 2), weft::test::workers_name);
INSTANTIATE_TEST_SUITE_P(Workers, GroupTest, ::testing::Values(1, 2), weft::test::workers_name);

}  // namespace
