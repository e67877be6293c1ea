#include <dirent.h>
#include <gtest/gtest.h>
#include <linux/membarrier.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cfenv>
#include <chrono>
#include <csignal>
#include <fstream>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "records.h"
#include "scheduler.h"
#include "test_util.h"
#include "weft/detail/park.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

class RuntimeTest : public ::testing::TestWithParam<int> {
 protected:
  weft::RunOptions opts() const { return weft::RunOptions{.workers = GetParam()}; }
};

TEST_P(RuntimeTest, RunReturnsMainResult) {
  EXPECT_EQ(weft::run([] { return 42; }, opts()), 42);
  EXPECT_EQ(weft::run([] {}, opts()), 0);
}

TEST_P(RuntimeTest, MainIsFiberOneAndWorkersAreCounted) {
  weft::run(
      [&] {
        EXPECT_EQ(weft::fiber_id(), 1u);
        EXPECT_EQ(weft::num_workers(), GetParam());
        EXPECT_GE(weft::worker_index(), 0);
        EXPECT_LT(weft::worker_index(), GetParam());
      },
      opts());
  EXPECT_EQ(weft::fiber_id(), 0u);
  EXPECT_EQ(weft::worker_index(), -1);
  EXPECT_EQ(weft::num_workers(), 0);
}

// Waits on a plain atomic counter by parking through the runtime's own
// primitive, so these tests do not depend on the sync library.
struct Latch {
  std::atomic<int> remaining;
  std::atomic<weft::detail::Fiber*> waiter{nullptr};
  explicit Latch(int n) : remaining(n) {}
  void count_down() {
    if (remaining.fetch_sub(1) == 1) {
      weft::detail::Fiber* w = waiter.exchange(reinterpret_cast<weft::detail::Fiber*>(1));
      if (w) weft::detail::ready(w);
    }
  }
  void wait() {
    weft::detail::park_with(weft::detail::WaitReason::unknown, [this](weft::detail::Fiber* self) {
      weft::detail::Fiber* none = nullptr;
      return waiter.compare_exchange_strong(none, self);  // fails once counted down
    });
  }
};

// A token handed between two fibers through park/ready (runnext ping-pong).
struct Baton {
  std::atomic<weft::detail::Fiber*> parked{nullptr};
  std::atomic<bool> token{false};
  void give() {
    token.store(true);
    if (weft::detail::Fiber* w = parked.exchange(nullptr)) weft::detail::ready(w);
  }
  void take() {
    while (!token.exchange(false)) {
      weft::detail::park_with(weft::detail::WaitReason::unknown, [this](weft::detail::Fiber* self) {
        std::atomic<weft::detail::Fiber*>& slot = parked;
        std::atomic<bool>& tok = token;
        slot.store(self);
        if (tok.load()) {
          weft::detail::Fiber* me = self;
          return !slot.compare_exchange_strong(me, nullptr);
        }
        return true;
      });
    }
  }
};

TEST_P(RuntimeTest, SpawnRunsEveryFiberOnceWithUniqueIds) {
  const int n = weft::test::spawn_count(20000);
  std::vector<std::atomic<int>> runs(static_cast<std::size_t>(n));
  std::vector<std::uint64_t> ids(static_cast<std::size_t>(n));
  weft::run(
      [&] {
        Latch latch(n);
        for (int i = 0; i < n; ++i) {
          ids[static_cast<std::size_t>(i)] = weft::go([&, i] {
            runs[static_cast<std::size_t>(i)].fetch_add(1);
            latch.count_down();
          });
        }
        latch.wait();
      },
      opts());
  for (auto& r : runs) ASSERT_EQ(r.load(), 1);
  std::set<std::uint64_t> unique(ids.begin(), ids.end());
  EXPECT_EQ(unique.size(), ids.size());
  EXPECT_EQ(unique.count(1), 0u);  // 1 is main's
}

// A closure that records where it is built (its record's closure storage)
// and can refuse to be copied there.
struct CopyProbe {
  bool throw_on_copy;
  const void** built_at;
  CopyProbe(bool throws, const void** at) : throw_on_copy(throws), built_at(at) {}
  CopyProbe(const CopyProbe& other) : throw_on_copy(other.throw_on_copy), built_at(other.built_at) {
    *built_at = this;
    if (throw_on_copy) throw std::runtime_error("closure copy failed");
  }
  void operator()() const {}
};

// go() whose closure cannot be built lets the exception through and hands the
// record back (it was leaked): free records are reused last in, first out,
// so the next spawn on this worker is built in the same place.
TEST_P(RuntimeTest, SpawnWhoseClosureThrowsReturnsItsRecord) {
  weft::run(
      [] {
        const void* failed_at = nullptr;
        const void* next_at = nullptr;
        const CopyProbe bad(true, &failed_at);
        EXPECT_THROW(weft::go(bad), std::runtime_error);
        ASSERT_NE(failed_at, nullptr);
        const CopyProbe good(false, &next_at);
        weft::go(good);
        EXPECT_EQ(next_at, failed_at);
      },
      opts());
}

// Bursts larger than the free-record depot holds, twice: records move
// between workers' free arrays and the depot, the excess is freed, and the
// second burst reuses what is left. Every fiber runs exactly once; ASan
// checks that no record is used after it was freed or freed twice.
TEST_P(RuntimeTest, RecordsRecycleAcrossBurstsLargerThanTheDepot) {
  // The depot holds a million records by default: a smaller one here, so
  // that a burst overflows it at a cost the sanitizer builds can pay.
  // Smaller still under TSan (16), where every fiber the burst spawns is dear.
  constexpr std::size_t kDepotBatches = weft::test::spawn_count(256);
  weft::detail::set_record_depot_cap(kDepotBatches);
  // What the runtime keeps without freeing (scheduler.cc): the depot's
  // batches of 128, and up to two batches in the free array of each worker
  // (4 at most here).
  constexpr int kKept = kDepotBatches * 128 + 4 * 2 * 128;
  // 60k in a plain build; never fewer than overflow the depot.
  const int n = weft::test::spawn_count(60'000, kKept + 1000);
  std::vector<std::uint8_t> runs(static_cast<std::size_t>(n));
  weft::run(
      [&] {
        for (int burst = 0; burst < 2; ++burst) {
          weft::WaitGroup wg;
          wg.add(n);
          for (int i = 0; i < n; ++i) {
            weft::go([&, i] {
              ++runs[static_cast<std::size_t>(i)];  // each index has one writer
              wg.done();
            });
          }
          wg.wait();
        }
      },
      opts());
  weft::detail::set_record_depot_cap(0);
  for (std::uint8_t r : runs) ASSERT_EQ(r, 2);
}

// A burst of fibers leaves its records pooled, and the next burst of the
// same size runs on them: no malloc and free per fiber, burst after burst
// (with a depot of 256 batches, 60% of this burst's records were freed and
// allocated again each time). One worker, so that every fiber of a burst
// is spawned before any runs: its records are all live at once.
TEST(RecordDepot, RecordsOfABurstAreReusedByTheNext) {
  // Larger than the old depot in a plain build, where the test tells the
  // two apart; smaller under TSan, whose every fiber run is dear.
  const int burst_size = weft::test::spawn_count(40'000);
  std::uint64_t allocated_by_second = 0;
  weft::run(
      [&] {
        auto burst = [burst_size] {
          weft::WaitGroup wg;
          wg.add(burst_size);
          for (int i = 0; i < burst_size; ++i) weft::go([&wg] { wg.done(); });
          wg.wait();
        };
        burst();
        const std::uint64_t before = weft::detail::records_allocated();
        burst();
        allocated_by_second = weft::detail::records_allocated() - before;
      },
      weft::RunOptions{.workers = 1});
  // sysmon may give back a little of what sat unused for a whole round.
  EXPECT_LT(allocated_by_second, static_cast<std::uint64_t>(burst_size / 10));
}

// What a burst left in the depot goes back to the heap once unused, even
// while the runtime stays busy (a fiber yields throughout here, so the
// whole-runtime idle trim never runs): down to the steady reserve. One
// worker, as above.
TEST(RecordDepot, UnusedPooledRecordsAreGivenBackWhileBusy) {
#ifdef WEFT_TSAN
  // Every fiber run costs ~1 ms under TSan, so the burst's 40,000 records
  // come back over 40 s or more, and sysmon gives back what sat unused
  // while the rest still run: by the burst's end the depot is down to the
  // reserve already (seen at 32,768 on a loaded machine). The burst cannot
  // be smaller: it must exceed the reserve.
  GTEST_SKIP() << "the burst outlasts the trim's pace under TSan";
#endif
  constexpr int kBurst = 40'000;  // 313 batches, more than the reserve
  constexpr std::uint64_t kSteady = weft::detail::kDepotSteadyBatches * weft::detail::kRecordBatch;
  std::uint64_t after_burst = 0, in_the_end = 0;
  weft::run(
      [&] {
        weft::WaitGroup wg;
        wg.add(kBurst);
        for (int i = 0; i < kBurst; ++i) weft::go([&wg] { wg.done(); });
        wg.wait();
        after_burst = weft::detail::scheduler_stats().records_pooled;
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (weft::detail::scheduler_stats().records_pooled > kSteady &&
               std::chrono::steady_clock::now() < give_up) {
          weft::yield();
        }
        in_the_end = weft::detail::scheduler_stats().records_pooled;
      },
      weft::RunOptions{.workers = 1});
  EXPECT_GT(after_burst, kSteady);
  EXPECT_LE(in_the_end, kSteady);
}

TEST_P(RuntimeTest, ParkAndReadyPingPongStress) {
  // Two fibers hand a token back and forth through park/ready; a lost wakeup
  // hangs, a double wakeup corrupts the count.
  const int rounds = weft::test::stress_iterations(20000);
  std::atomic<int> a_count{0}, b_count{0};
  weft::run(
      [&] {
        Baton to_a, to_b;
        Latch done(2);
        weft::go([&] {
          for (int i = 0; i < rounds; ++i) {
            to_b.give();
            to_a.take();
            a_count.fetch_add(1);
          }
          done.count_down();
        });
        weft::go([&] {
          for (int i = 0; i < rounds; ++i) {
            to_b.take();
            b_count.fetch_add(1);
            to_a.give();
          }
          done.count_down();
        });
        done.wait();
      },
      opts());
  EXPECT_EQ(a_count.load(), rounds);
  EXPECT_EQ(b_count.load(), rounds);
}

TEST_P(RuntimeTest, YieldLetsOthersRun) {
  weft::run(
      [&] {
        std::atomic<bool> other_ran{false};
        weft::go([&] { other_ran.store(true); });
        // Cooperative: the spawned fiber can only run on this worker once we
        // yield (or on another worker).
        while (!other_ran.load()) weft::yield();
        EXPECT_TRUE(other_ran.load());
      },
      opts());
}

TEST_P(RuntimeTest, ReadyFromForeignThread) {
  const int rounds = weft::test::stress_iterations(2000);
  weft::run(
      [&] {
        for (int i = 0; i < rounds; ++i) {
          std::atomic<weft::detail::Fiber*> me{nullptr};
          std::thread t([&] {
            weft::detail::Fiber* w;
            while (!(w = me.load())) std::this_thread::yield();
            weft::detail::ready(w);
          });
          weft::detail::park_with(weft::detail::WaitReason::unknown,
                                  [&](weft::detail::Fiber* self) {
                                    me.store(self);
                                    return true;
                                  });
          t.join();
        }
      },
      opts());
  SUCCEED();
}

TEST_P(RuntimeTest, GoFromForeignThread) {
  weft::run(
      [&] {
        // Enough to fill several of the global queue's chunks while the
        // workers take from it.
        Latch latch(2000);
        std::thread t([&] {
          for (int i = 0; i < 2000; ++i) weft::go([&] { latch.count_down(); });
        });
        latch.wait();
        t.join();
      },
      opts());
}

TEST_P(RuntimeTest, PlainThreadCanParkAndBeReadied) {
  weft::run(
      [&] {
        std::atomic<weft::detail::Fiber*> thread_waiter{nullptr};
        std::atomic<bool> woke{false};
        std::thread t([&] {
          EXPECT_FALSE(weft::detail::on_fiber());
          weft::detail::park_with(weft::detail::WaitReason::unknown,
                                  [&](weft::detail::Fiber* self) {
                                    EXPECT_EQ(weft::detail::waiter_id(self), 0u);
                                    thread_waiter.store(self);
                                    return true;
                                  });
          woke.store(true);
        });
        while (!thread_waiter.load()) weft::yield();
        weft::detail::ready(thread_waiter.load());
        t.join();
        EXPECT_TRUE(woke.load());
      },
      opts());
}

TEST_P(RuntimeTest, FloatingPointControlIsPerFiber) {
  // The switch must carry MXCSR/FPCR: a fiber that changes the rounding mode
  // must not leak it to the fiber that runs next.
  weft::run(
      [&] {
        Latch latch(2);
        std::atomic<int> bad{0};
        for (int k = 0; k < 2; ++k) {
          weft::go([&, k] {
            for (int i = 0; i < 200; ++i) {
              const int mode = k == 0 ? FE_UPWARD : FE_DOWNWARD;
              fesetround(mode);
              weft::yield();
              if (fegetround() != mode) bad.fetch_add(1);
            }
            fesetround(FE_TONEAREST);
            latch.count_down();
          });
        }
        latch.wait();
        EXPECT_EQ(bad.load(), 0);
      },
      opts());
}

TEST_P(RuntimeTest, RunCanBeCalledRepeatedly) {
  for (int i = 0; i < 50; ++i) {
    std::atomic<int> ran{0};
    weft::run(
        [&] {
          Latch latch(10);
          for (int j = 0; j < 10; ++j)
            weft::go([&] {
              ran.fetch_add(1);
              latch.count_down();
            });
          latch.wait();
        },
        opts());
    ASSERT_EQ(ran.load(), 10);
  }
}

// An exception from main reaches run()'s caller once the runtime is torn
// down (it aborted the process), and run() works again afterwards.
TEST_P(RuntimeTest, ExceptionFromMainReachesRunsCaller) {
  for (int i = 0; i < 3; ++i) {
    EXPECT_THROW(weft::run(
                     [] {
                       weft::go([] {});  // queued, abandoned
                       throw std::runtime_error("main failed");
                     },
                     opts()),
                 std::runtime_error);
    EXPECT_EQ(weft::num_workers(), 0);
    EXPECT_EQ(weft::run([] { return 7; }, opts()), 7);
  }
}

INSTANTIATE_TEST_SUITE_P(Workers, RuntimeTest, ::testing::Values(1, 2, 4),
                         weft::test::workers_name);

pid_t gettid_now() {
  return static_cast<pid_t>(syscall(SYS_gettid));
}

// An exception escaping a fiber ends the process at the throw site, with the
// stack whole for the core dump and gdb (it was caught, which unwound it
// first), saying which fiber and what was thrown.
TEST(RuntimeDeathTest, ExceptionEscapingAFiberAbortsAtItsThrowSite) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(weft::run(
                  [] {
                    weft::go([] {
                      weft::test::ExitIfUnwound guard;
                      throw std::runtime_error("fiber boom");
                    });
                    weft::sleep_for(std::chrono::nanoseconds::max());
                  },
                  weft::RunOptions{.workers = 1}),
              ::testing::KilledBySignal(SIGABRT),
              "weft: fiber [0-9]+: uncaught exception std::runtime_error: fiber boom");
}

[[gnu::noinline]] void throw_named_boom() {
  throw std::runtime_error("named boom");
}

void crash_a_named_fiber() {
  weft::run(
      [] {
        weft::go([] { throw_named_boom(); }, {.name = "request-handler"});
        weft::sleep_for(std::chrono::nanoseconds::max());
      },
      weft::RunOptions{.workers = 1});
}

// The fiber's name (SpawnOptions::name) is in the message, and its stack
// from the throw site follows (WEFT_TRACEBACK=single, the default), as a
// panicking goroutine's does.
TEST(RuntimeDeathTest, AnUncaughtExceptionNamesTheFiberAndShowsItsStack) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(crash_a_named_fiber(), ::testing::KilledBySignal(SIGABRT),
              "weft: fiber [0-9]+ \"request-handler\": uncaught exception std::runtime_error: "
              "named boom\n(.|\n)*\"request-handler\" \\[running(.|\n)*throw_named_boom");
}

// WEFT_TRACEBACK=all: every other fiber too; none: no stack at all.
TEST(RuntimeDeathTest, TracebackLevelsOnACrash) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        setenv("WEFT_TRACEBACK", "all", 1);
        crash_a_named_fiber();
      },
      ::testing::KilledBySignal(SIGABRT), "throw_named_boom(.|\n)*\\[sleep");
  EXPECT_EXIT(
      {
        setenv("WEFT_TRACEBACK", "none", 1);
        crash_a_named_fiber();
      },
      ::testing::KilledBySignal(SIGABRT), "named boom\n$");
}

// A park commit runs on whichever fiber resumed next, or on the worker's own
// stack, where an exception has nobody to reach: it is fatal, with its text.
TEST(RuntimeDeathTest, ExceptionFromAParkCommitIsFatalWithItsText) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(weft::run(
                   [] {
                     weft::detail::park_with(weft::detail::WaitReason::unknown,
                                             [](weft::detail::Fiber*) -> bool {
                                               throw std::runtime_error("commit boom");
                                             });
                   },
                   weft::RunOptions{.workers = 1}),
               "weft: a park commit threw std::runtime_error: commit boom");
}

TEST(RuntimeMigration, FiberMovesBetweenWorkersMidFunction) {
  // A fiber readied from a foreign thread lands on whichever worker takes it
  // from the global queue; over many rounds it must change threads, and every
  // read of per-thread state after a switch must see the new thread's.
  const int rounds = weft::test::stress_iterations(3000);
  int migrations = 0;
  int mismatches = 0;
  weft::run(
      [&] {
        std::atomic<bool> stop{false};
        // Keep every worker busy from time to time so that the global queue
        // is served by different workers.
        Latch churn_done(3);
        for (int k = 0; k < 3; ++k) {
          weft::go([&] {
            while (!stop.load()) weft::yield();
            churn_done.count_down();
          });
        }
        pid_t tid = gettid_now();
        int worker = weft::worker_index();
        for (int i = 0; i < rounds; ++i) {
          std::atomic<weft::detail::Fiber*> me{nullptr};
          std::thread t([&] {
            weft::detail::Fiber* w;
            while (!(w = me.load())) std::this_thread::yield();
            weft::detail::ready(w);
          });
          weft::detail::park_with(weft::detail::WaitReason::unknown,
                                  [&](weft::detail::Fiber* self) {
                                    me.store(self);
                                    return true;
                                  });
          t.join();
          const pid_t now_tid = gettid_now();
          const int now_worker = weft::worker_index();
          if (now_tid != tid) ++migrations;
          // Same thread iff same worker: a cached TLS address would break this.
          if ((now_tid == tid) != (now_worker == worker)) ++mismatches;
          tid = now_tid;
          worker = now_worker;
        }
        stop.store(true);
        churn_done.wait();
      },
      weft::RunOptions{.workers = 4});
  EXPECT_GT(migrations, 0);
  EXPECT_EQ(mismatches, 0);
}

// A worker on its way to sleep (on its futex or in the poller) as the runtime
// shuts down must still be woken and joined: each round ends with the other
// worker somewhere on that path. (The shutdown hang that was seen, a wake-up
// swallowed by the poller's eventfd, is reproduced by
// NetContextTest.CompletionRacingCancelLosesNothing under ASan, not here.)
TEST(RuntimeShutdown, NeverStrandsAWorkerGoingToSleep) {
  const int rounds = weft::test::stress_iterations(1500);
  std::mt19937 rng(11);
  for (int i = 0; i < rounds; ++i) {
    const auto pause = std::chrono::microseconds(rng() % 40);
    const int yields = static_cast<int>(rng() % 4);
    weft::run(
        [&] {
          weft::go([] {});
          for (int y = 0; y < yields; ++y) weft::yield();
          if (pause.count() > 0) weft::sleep_for(pause);
        },
        weft::RunOptions{.workers = 2});
  }
  SUCCEED() << rounds << " runtimes started and stopped";
}

TEST(RuntimeStats, NoFiberOutlivesItsWork) {
  weft::run(
      [] {
        Latch latch(1000);
        for (int i = 0; i < 1000; ++i) weft::go([&] { latch.count_down(); });
        latch.wait();
        // Fibers count down just before they end; let them finish.
        while (weft::detail::scheduler_stats().live_fibers > 1) weft::yield();
        auto st = weft::detail::scheduler_stats();
        EXPECT_EQ(st.live_fibers, 1);  // main only
        EXPECT_GE(st.spawned, 1001u);
      },
      weft::RunOptions{.workers = 2});
}

}  // namespace

namespace {

TEST(RuntimeWatchdog, ReportsAFiberThatHogsItsWorker) {
  weft::run(
      [] {
        const auto before = weft::detail::scheduler_stats().watchdog_reports;
        // Spin without yielding until the watchdog has seen it (threshold 10 ms);
        // the 20 s cap only stops a broken watchdog from hanging the suite.
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (weft::detail::scheduler_stats().watchdog_reports == before &&
               std::chrono::steady_clock::now() < give_up) {
        }
        EXPECT_GT(weft::detail::scheduler_stats().watchdog_reports, before);
      },
      weft::RunOptions{.workers = 1});
}

// The report names the fiber as every message does, and the fiber may end
// the moment it is reported (here it ends as soon as it sees the count
// rise, while sysmon still formats the line): its name must not be freed
// under the reader, here one that pauses 1 ms before it reads. Without the
// mark, a plain build printed malloc's free-list pointers in place of the
// name's first bytes, and ASan reported a heap-use-after-free.
TEST(RuntimeWatchdog, TheReportNamesTheFiberEvenAsItEnds) {
  const long barriers = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  if (barriers < 0 || (barriers & MEMBARRIER_CMD_PRIVATE_EXPEDITED) == 0) {
    GTEST_SKIP() << "membarrier(2) is not available here: reports name no fiber";
  }
  const int rounds = weft::test::stress_iterations(20);
  const std::string name = "hog" + std::string(61, 'x');
  weft::detail::set_name_read_pause(std::chrono::milliseconds(1));
  testing::internal::CaptureStderr();
  std::uint64_t reports = 0;
  weft::run(
      [&] {
        const auto before = weft::detail::scheduler_stats().watchdog_reports;
        for (int i = 0; i < rounds; ++i) {
          weft::WaitGroup wg;
          wg.add(1);
          // Round i ends i * 50 us after it sees the count rise: at once in
          // the first (usually before sysmon's membarrier has let it look,
          // so "a fiber"), later in the others, but always within the 1 ms
          // that sysmon pauses before it reads a name it marked.
          const auto linger = std::chrono::microseconds(std::min(50 * i, 950));
          weft::go(
              [&wg, linger] {
                const auto seen = weft::detail::scheduler_stats().watchdog_reports;
                const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
                while (weft::detail::scheduler_stats().watchdog_reports == seen &&
                       std::chrono::steady_clock::now() < give_up) {
                }
                const auto end = std::chrono::steady_clock::now() + linger;
                while (std::chrono::steady_clock::now() < end) {
                }
                wg.done();
              },
              weft::SpawnOptions{.name = name});
          wg.wait();
        }
        reports = weft::detail::scheduler_stats().watchdog_reports - before;
      },
      weft::RunOptions{.workers = 2});
  const std::string err = testing::internal::GetCapturedStderr();
  weft::detail::set_name_read_pause(std::chrono::microseconds(0));
  EXPECT_GE(reports, static_cast<std::uint64_t>(rounds));
  // Each report names the fiber whole, or, if it stopped running before
  // sysmon looked, says "a fiber".
  const std::string whole = "\"" + name + "\" (created at ";
  int named = 0, lines = 0;
  std::size_t at = 0;
  while ((at = err.find("has held worker", at)) != std::string::npos) {
    const std::size_t start = err.rfind('\n', at) + 1;  // npos + 1 == 0 on the first line
    const std::string line = err.substr(start, at - start);
    ++lines;
    if (line.find(whole) != std::string::npos &&
        line.find("runtime_test.cc:") != std::string::npos) {
      ++named;
    } else {
      EXPECT_NE(line.find("] a fiber "), std::string::npos) << line;
    }
    ++at;
  }
  EXPECT_GE(lines, rounds);
  EXPECT_GT(named, 0);
}

TEST(RuntimeWatchdog, EveryYieldAdvancesTheTickItWatches) {
  // The watchdog reports a worker whose tick has not moved for 10 ms; a
  // fiber that yields must move it on every yield, fast path included.
  weft::run(
      [] {
        const auto before = weft::detail::scheduler_stats().schedticks;
        for (int i = 0; i < 10000; ++i) weft::yield();
        EXPECT_GE(weft::detail::scheduler_stats().schedticks - before, 10000u);
      },
      weft::RunOptions{.workers = 1});
}

}  // namespace

namespace {

TEST(RuntimeFairness, RunnextPingPongCannotStarveTheQueue) {
  // One worker: A and B hand off through runnext forever; C sits in the run
  // queue (it yields). Without the runnext cap C would not run again until
  // A and B are done.
  const int rounds = 200000;
  std::atomic<int> c_turns{0};
  int c_turns_while_pingponging = 0;
  weft::run(
      [&] {
        std::atomic<bool> stop{false};
        Latch done(3);
        Baton to_a, to_b;
        weft::go([&] {
          while (!stop.load()) {
            c_turns.fetch_add(1);
            weft::yield();
          }
          done.count_down();
        });
        weft::go([&] {
          for (int i = 0; i < rounds; ++i) {
            to_b.give();
            to_a.take();
          }
          c_turns_while_pingponging = c_turns.load();
          stop.store(true);
          done.count_down();
        });
        weft::go([&] {
          for (int i = 0; i < rounds; ++i) {
            to_b.take();
            to_a.give();
          }
          done.count_down();
        });
        done.wait();
      },
      weft::RunOptions{.workers = 1});
  // Capped at 32 runnext picks per queue pick: C gets thousands of turns.
  EXPECT_GT(c_turns_while_pingponging, 1000);
}

TEST(RuntimeFairness, GlobalQueueIsServedUnderEndlessLocalWork) {
  // One worker kept busy by two fibers that always yield; a fiber queued from
  // another thread lands in the global queue and must still run.
  std::atomic<bool> foreign_ran{false};
  std::atomic<long> yields_before{-1};
  weft::run(
      [&] {
        std::atomic<long> yields{0};
        std::atomic<bool> stop{false};
        Latch done(2);
        for (int k = 0; k < 2; ++k) {
          weft::go([&] {
            while (!stop.load() && yields.load() < 5'000'000) {
              yields.fetch_add(1);
              weft::yield();
            }
            stop.store(true);
            done.count_down();
          });
        }
        std::thread t([&] {
          weft::go([&] {
            yields_before.store(yields.load());
            stop.store(true);
            foreign_ran.store(true);  // last: main's scope, stop's, ends once it sees this
          });
        });
        done.wait();
        t.join();
        while (!foreign_ran.load()) weft::yield();
      },
      weft::RunOptions{.workers = 1});
  EXPECT_TRUE(foreign_ran.load());
  EXPECT_LT(yields_before.load(), 5'000'000);  // ran while the yielders were still going
}

}  // namespace

namespace {

TEST(RuntimeStealing, IdleWorkersStealUnderLoad) {
  // Main spawns bursts of CPU-bound fibers onto its own worker without
  // yielding; the other workers only get them by stealing.
  const int rounds = weft::test::stress_iterations(50);
  std::atomic<int> ran{0};
  std::atomic<int> on_worker[4] = {};
  std::uint64_t steals = 0;
  weft::run(
      [&] {
        for (int r = 0; r < rounds; ++r) {
          Latch latch(200);
          for (int i = 0; i < 200; ++i) {
            weft::go([&] {
              const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
              while (std::chrono::steady_clock::now() < until) {
              }
              on_worker[weft::worker_index()].fetch_add(1);
              ran.fetch_add(1);
              latch.count_down();
            });
          }
          latch.wait();
        }
        steals = weft::detail::scheduler_stats().steals;
      },
      weft::RunOptions{.workers = 4});
  EXPECT_EQ(ran.load(), rounds * 200);
  EXPECT_GT(steals, 0u);
  int busy_workers = 0;
  for (auto& n : on_worker) busy_workers += n.load() > 0;
  EXPECT_GE(busy_workers, 2);
}

// The runtime's threads carry names (top -H, gdb, /proc/PID/task/*/comm).
std::set<std::string> thread_names() {
  std::set<std::string> names;
  DIR* dir = opendir("/proc/self/task");
  if (!dir) return names;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream comm(std::string("/proc/self/task/") + e->d_name + "/comm");
    if (std::string name; std::getline(comm, name)) names.insert(name);
  }
  closedir(dir);
  return names;
}

TEST(RuntimeThreads, WorkersSysmonAndBlockingThreadsAreNamed) {
  std::set<std::string> names;
  std::string blocking_name;
  weft::run(
      [&] {
        // Each thread names itself as it starts, which main does not wait
        // for: look until every name is there (or give up after 10 s).
        const std::set<std::string> want{"weft-w0", "weft-w1", "weft-sysmon"};
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        do {
          names = thread_names();
          weft::yield();
        } while (!std::includes(names.begin(), names.end(), want.begin(), want.end()) &&
                 std::chrono::steady_clock::now() < give_up);
        blocking_name = weft::blocking([] {
          char name[16] = {};
          prctl(PR_GET_NAME, name);
          return std::string(name);
        });
      },
      weft::RunOptions{.workers = 2});
  EXPECT_EQ(names.count("weft-w0"), 1u);
  EXPECT_EQ(names.count("weft-w1"), 1u);
  EXPECT_EQ(names.count("weft-sysmon"), 1u);
  EXPECT_EQ(names.count("weft-w2"), 0u);
  EXPECT_TRUE(blocking_name.rfind("weft-block-", 0) == 0 &&
              blocking_name.find_first_not_of("0123456789", 11) == std::string::npos &&
              blocking_name.size() > 11)
      << blocking_name;
}

}  // namespace
