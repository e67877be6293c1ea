#include <gtest/gtest.h>

#include <unistd.h>
#include <algorithm>
#include <atomic>
#include <csignal>
#include <limits>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "scheduler.h"
#include "stack.h"
#include "test_util.h"
#include "weft/channel.h"
#include "weft/detail/park.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

// Recursion the compiler cannot turn into a loop or drop.
__attribute__((noinline)) int dig(int depth, volatile char* prev) {
  volatile char frame[512];
  std::memset(const_cast<char*>(frame), depth & 0x7f, sizeof frame);
  if (depth == 0) return frame[0] + (prev ? prev[0] : 0);
  return dig(depth - 1, frame) + frame[1];
}

TEST(StackDeathTest, OverflowNamesTheFiberAndItsStackSize) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(weft::run(
                   [] {
                     weft::go([] { dig(1 << 20, nullptr); });
                     weft::yield();
                     for (;;) weft::yield();
                   },
                   weft::RunOptions{.workers = 1}),
               "fiber [0-9]+ \\(created at [^)]*stack_test.cc:[0-9]+\\) overflowed its 64 KiB "
               "stack");
}

TEST(StackDeathTest, OverflowReportsTheRequestedSize) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(weft::run(
                   [] {
                     weft::go([] { dig(1 << 20, nullptr); },
                              weft::SpawnOptions{.stack_size = 128 * 1024});
                     for (;;) weft::yield();
                   },
                   weft::RunOptions{.workers = 1}),
               "fiber [0-9]+ .*overflowed its 128 KiB stack");
}

// One frame of 128 KiB in a 64 KiB stack. Built without
// -fstack-clash-protection, nothing touches the frame before its lowest
// byte, ~64 KiB below the stack: past a one-page guard, it was a bare
// SIGSEGV (or silent corruption of whatever was mapped there).
__attribute__((noinline)) void huge_frame() {
  volatile char frame[128 * 1024];
  frame[0] = 1;  // the far end first
  frame[sizeof frame - 1] = 1;
}

TEST(StackDeathTest, AFrameLargerThanTheStackNamesTheFiber) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(weft::run(
                   [] {
                     weft::go([] { huge_frame(); }, {.name = "digger"});
                     for (;;) weft::yield();
                   },
                   weft::RunOptions{.workers = 1}),
               "weft: fiber [0-9]+ \"digger\" \\(created at [^)]*\\) overflowed its 64 KiB stack");
}

// Past the guarded-stack budget stacks come from slabs. A 72 KiB frame that
// writes only its lowest 2 KiB, in a 64 KiB slab stack among 256 parked
// neighbours: before slab stacks had guards it landed in the stack below,
// returned normally and left a neighbour's frames overwritten; now it must
// die naming the fiber, as on any other stack.
__attribute__((noinline)) int low_end_of_a_big_frame() {
  volatile char frame[72 * 1024];
  for (std::size_t i = 0; i < 2048; ++i) frame[i] = 0x5a;
  return frame[0];
}

TEST(StackDeathTest, AnOverflowOnASlabStackNamesTheFiber) {
  if (!weft::detail::slab_stacks_guarded()) {
    GTEST_SKIP() << "this kernel has no guard markers (Linux 6.13): slab stacks are unguarded";
  }
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        weft::detail::set_guarded_stack_budget(1);  // every stack from a slab
        weft::run(
            [] {
              weft::Channel<int> never;
              for (int i = 0; i < 256; ++i) weft::go([&never] { never.recv(); });
              weft::yield();
              weft::go([] { (void)low_end_of_a_big_frame(); }, {.name = "slabbed"});
              for (;;) weft::yield();
            },
            weft::RunOptions{.workers = 1});
      },
      "weft: fiber [0-9]+ \"slabbed\" \\(created at [^)]*\\) overflowed its 64 KiB stack");
}

// Any other fault in a fiber names the fiber, then ends the process with the
// signal's default action (a core dump), not an abort.
TEST(StackDeathTest, OtherFaultsNameTheFiberAndKeepTheirSignal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  auto null_write = [] {
    weft::run(
        [] {
          weft::go([] {
            // Both volatile: a null the compiler cannot see, and a store it
            // must not drop as dead.
            volatile int* volatile nowhere = nullptr;
            *nowhere = 1;
          });
          for (;;) weft::yield();
        },
        weft::RunOptions{.workers = 1});
  };
#if defined(WEFT_ASAN) || defined(WEFT_TSAN)
  // The sanitizer's handler was there first, and keeps the faults that are
  // not ours (UBSan, halting on error, may stop at the null store before).
  EXPECT_DEATH(null_write(), "SEGV|null pointer");
#else
  EXPECT_EXIT(
      null_write(), ::testing::KilledBySignal(SIGSEGV),
      "weft: fiber [0-9]+ \\(created at [^)]*\\) got SIGSEGV at 0x0 \\(address not mapped\\)");
#endif
}

TEST(Stack, LargerStackHoldsDeeperRecursion) {
  // ~200 frames of 512+ bytes do not fit in 64 KiB but fit in 1 MiB.
  std::atomic<int> result{-1};
  weft::run(
      [&] {
        std::atomic<bool> done{false};
        weft::go(
            [&] {
              result.store(dig(400, nullptr));
              done.store(true);
            },
            weft::SpawnOptions{.stack_size = 1024 * 1024});
        while (!done.load()) weft::yield();
      },
      weft::RunOptions{.workers = 1});
  EXPECT_GE(result.load(), 0);
}

// The process's stacks, which earlier runs share: a fiber abandoned mid-call
// by its runtime keeps its stack for good (ARCHITECTURE, "Abandoned fibers"),
// so a test counts what its own run added.
namespace {
struct StacksHeld {
  std::size_t live;
  std::size_t pooled;
};
StacksHeld stacks_held() {
  const auto st = weft::detail::stack_stats();
  return {st.mapped_live + st.slab_live, st.pooled};
}
}  // namespace

TEST(Stack, StacksAreReusedNotLeaked) {
  weft::run(
      [] {
        const StacksHeld before = stacks_held();  // main's, and earlier runs' abandoned fibers'
        for (int round = 0; round < weft::test::spawn_count(20, 2); ++round) {
          std::atomic<int> done{0};
          for (int i = 0; i < 500; ++i) weft::go([&] { done.fetch_add(1); });
          while (done.load() < 500) weft::yield();
        }
        while (weft::detail::scheduler_stats().live_fibers > 1) weft::yield();
        const StacksHeld after = stacks_held();
        EXPECT_EQ(after.live, before.live);
        // 10,000 fibers ran (1,000 under TSan); a pool that did not reuse
        // would hold thousands more.
        EXPECT_LT(after.pooled, before.pooled + 4096);
      },
      weft::RunOptions{.workers = 2});
}

// Fibers with a stack size of their own (one per kind of fiber a server
// may size: connections, workers, ...) take and return their stacks
// through their worker's cache, as default ones do, not the shared pool's
// lock on every spawn and every exit; a size past what the caches hold
// still gets its stacks reused.
TEST(Stack, StacksOfOtherSizesGoThroughTheWorkersCaches) {
  const std::size_t sizes[] = {16 * 1024, 32 * 1024, 128 * 1024, 64 * 1024, 48 * 1024, 256 * 1024};
  const int fibers = 3000 / weft::test::kSanitizerDivisor;  // each a TSan fiber under TSan
  for (int workers : {1, 2}) {
    SCOPED_TRACE(testing::Message() << workers << " workers");
    weft::run(
        [&] {
          auto round = [&](std::size_t from, std::size_t to) {
            weft::WaitGroup wg;
            for (int i = 0; i < fibers; ++i) {
              wg.add(1);
              weft::go([&] { wg.done(); },
                       weft::SpawnOptions{.stack_size = sizes[from + i % (to - from)]});
            }
            wg.wait();
          };
          const StacksHeld before = stacks_held();
          round(0, 4);  // warm: the stacks mapped once
          const std::size_t trips = weft::detail::stack_stats().pool_trips;
          round(0, 4);
          // A spawn and an exit each per fiber through the pool would be
          // two trips a fiber; batches of 32 each way make it a few hundred.
          EXPECT_LT(weft::detail::stack_stats().pool_trips - trips,
                    static_cast<std::size_t>(fibers / 4));
          round(0, 6);  // six sizes, more than the caches hold
          while (weft::detail::scheduler_stats().live_fibers > 1) weft::yield();
          const StacksHeld after = stacks_held();
          EXPECT_EQ(after.live, before.live);
          EXPECT_LT(after.pooled, before.pooled + 4096)
              << "stacks of the sizes past the caches were not reused";
        },
        weft::RunOptions{.workers = workers});
  }
}

TEST(Stack, ManyParkedFibersBeyondTheGuardPageBudget) {
  // vm.max_map_count (65530 on Debian) allows ~28k guarded stacks; past that
  // the runtime must keep working with slab stacks. A lowered
  // budget reaches that point with fewer fibers (TSan makes each costly).
  // Stacks that earlier runs pooled are taken before anything is mapped,
  // and enough of them keep the budget from being reached at all (a
  // shuffled ASan run once: no slab stack, the test over in 6 ms): their
  // pages and mappings go back first, as sysmon's scavenger would give
  // them. Slab stacks stay pooled, and count as what the test looks for.
  weft::detail::set_stack_scavenge_delay(std::chrono::milliseconds(0));
  weft::detail::scavenge_pooled_stacks(std::numeric_limits<std::size_t>::max());
  weft::detail::unmap_cold_stacks(0);
  weft::detail::set_stack_scavenge_delay(std::chrono::milliseconds(5000));
  weft::detail::set_guarded_stack_budget(500);
  const int n = weft::test::stress_iterations(3000);
  std::atomic<int> woke{0};
  weft::run(
      [&] {
        std::vector<std::atomic<weft::detail::Fiber*>> parked(static_cast<std::size_t>(n));
        std::atomic<int> parked_count{0};
        for (int i = 0; i < n; ++i) {
          weft::go([&, i] {
            weft::detail::park_with(weft::detail::WaitReason::unknown,
                                    [&, i](weft::detail::Fiber* self) {
                                      parked[static_cast<std::size_t>(i)].store(self);
                                      parked_count.fetch_add(1);
                                      return true;
                                    });
            woke.fetch_add(1);
          });
        }
        while (parked_count.load() < n) weft::yield();
        EXPECT_GT(weft::detail::stack_stats().slab_live, 0u);
        for (auto& p : parked) weft::detail::ready(p.load());
        while (woke.load() < n) weft::yield();
      },
      weft::RunOptions{.workers = 2});
  weft::detail::set_guarded_stack_budget(0);
  EXPECT_EQ(woke.load(), n);
}

// Bursts of fibers that each touch 32 KiB of their stack: once they are gone
// and their stacks have sat in the pool past the scavenge delay, the pages
// go back to the kernel. Before the scavenger the process stayed at its
// peak for good, and crept up over bursts (issue 12: 139.7, 146.6, 152.4 MB
// over three of 10,000 connections). Plain builds only: a sanitizer's
// shadow memory and quarantine are resident memory the scavenger does not
// own.
#if !defined(WEFT_TSAN) && !defined(__SANITIZE_ADDRESS__)
__attribute__((noinline)) int touch_stack(int seed) {
  volatile char frame[32 * 1024];
  for (std::size_t i = 0; i < sizeof frame; i += 512) frame[i] = static_cast<char>(seed);
  return frame[seed & 1023];
}

TEST(StackScavenger, MemoryIsGivenBackAfterEachBurst) {
  using namespace std::chrono_literals;
  weft::detail::set_stack_scavenge_delay(200ms);
  constexpr int kFibers = 4000;
  weft::run(
      [&] {
        const std::size_t baseline = weft::test::resident_bytes();
        for (int burst = 0; burst < 3; ++burst) {
          weft::Channel<int> release;
          weft::WaitGroup parked, done;
          for (int i = 0; i < kFibers; ++i) {
            parked.add(1);
            done.add(1);
            weft::go([&, i] {
              (void)touch_stack(i);
              parked.done();
              release.recv();
              done.done();
            });
          }
          parked.wait();
          const std::size_t peak = weft::test::resident_bytes();
          const std::size_t grown = peak - std::min(peak, baseline);
          ASSERT_GT(grown, std::size_t{kFibers} * 32 * 1024 / 2) << "the burst did not show";
          release.close();
          done.wait();
          // The scavenger runs in sysmon, once a second while every worker
          // sleeps; allow it many rounds, and stop as soon as it is done.
          std::size_t now = weft::test::resident_bytes();
          for (int i = 0; i < 1000 && now > baseline + grown / 5; ++i) {
            weft::sleep_for(20ms);
            now = weft::test::resident_bytes();
          }
          EXPECT_LE(now, baseline + grown / 5) << "burst " << burst << ": baseline " << baseline
                                               << ", peak " << peak << ", now " << now;
        }
        EXPECT_GT(weft::detail::stack_stats().scavenged, 0u);
        // Once every worker sleeps, all but 256 of the burst's stacks are
        // unmapped too: their VMAs count against vm.max_map_count.
        for (int i = 0; i < 1000 && weft::detail::stack_stats().guarded_mapped > 1024; ++i) {
          weft::sleep_for(20ms);
        }
        EXPECT_LE(weft::detail::stack_stats().guarded_mapped, 1024u) << "cold stacks stayed mapped";
      },
      weft::RunOptions{.workers = 2});
  weft::detail::set_stack_scavenge_delay(5000ms);
}
#endif

// A worker's own cache of stacks is out of the scavenger's reach, so a
// worker hands it over when it goes to sleep, once a second at most. One
// that handed it over less than a second before its last sleep must still
// do it later: before, it slept on with up to 64 stacks, and their pages,
// for as long as nothing woke it (the end of a burst kept for good).
TEST(StackScavenger, SleepingWorkersHandOverTheirCachedStacks) {
  using namespace std::chrono_literals;
  auto cached = [] {
    const weft::detail::StackStats s = weft::detail::stack_stats();
    return s.guarded_mapped - std::min(s.guarded_mapped, s.mapped_live + s.pooled);
  };
  std::size_t left = 0;
  weft::run(
      [&] {
        for (int burst = 0; burst < 3; ++burst) {
          weft::WaitGroup wg;
          for (int i = 0; i < 48; ++i) {
            wg.add(1);
            // Half of them with a size of their own, which workers cache too.
            weft::go([&] { wg.done(); },
                     weft::SpawnOptions{.stack_size = (i % 2 ? 32u : 64u) * 1024});
          }
          wg.wait();
          weft::sleep_for(20ms);  // every worker sleeps; the next spill is under a second away
        }
        // Watched from a plain thread while main is parked, so that nothing
        // wakes a worker until the watcher readies main again.
        std::atomic<weft::detail::Fiber*> parked{nullptr};
        std::thread watcher([&] {
          while (!parked.load()) std::this_thread::sleep_for(1ms);
          const auto give_up = std::chrono::steady_clock::now() + 10s;
          while ((left = cached()) != 0 && std::chrono::steady_clock::now() < give_up) {
            std::this_thread::sleep_for(5ms);
          }
          weft::detail::ready(parked.load());
        });
        weft::detail::park_with(weft::detail::WaitReason::unknown, [&](weft::detail::Fiber* self) {
          parked.store(self);
          return true;
        });
        watcher.join();
      },
      // Readied from a thread the runtime cannot see coming.
      weft::RunOptions{.workers = 2, .detect_deadlocks = false});
  EXPECT_EQ(left, 0u) << "stacks still cached by sleeping workers after 10 s";
}

// The scavenger gives back pages of pooled stacks while workers take and
// return stacks (sysmon's busy pace, the delay cut to nothing): every fiber
// checks that what it wrote on its stack is still there after a nap,
// which a stack scavenged while in use (read back as zeroes) would fail.
// In every build: under the sanitizers this is the race the RSS test above
// cannot be.
__attribute__((noinline)) bool stack_survives_a_nap(int seed) {
  volatile unsigned char frame[8 * 1024];
  for (std::size_t i = 0; i < sizeof frame; ++i) frame[i] = static_cast<unsigned char>(seed + i);
  weft::sleep_for(std::chrono::microseconds(200));
  for (std::size_t i = 0; i < sizeof frame; ++i) {
    if (frame[i] != static_cast<unsigned char>(seed + i)) return false;
  }
  return true;
}

TEST(StackScavenger, NeverTakesAStackInUse) {
  using namespace std::chrono_literals;
  weft::detail::set_stack_scavenge_delay(0ms);
  for (int workers : {1, 2}) {
    std::atomic<int> broken{0};
    weft::run(
        [&] {
          // More fibers a round than the workers' caches hold, so that
          // stacks pass through the pool the scavenger works on, and rounds
          // until it has given back many of them.
          const std::size_t until =
              weft::detail::stack_stats().scavenged + weft::test::stress_iterations(1000);
          // The cap only stops a scavenger that gives nothing back from
          // hanging the suite.
          const auto give_up = std::chrono::steady_clock::now() + 120s;
          for (int round = 0; weft::detail::stack_stats().scavenged < until &&
                              std::chrono::steady_clock::now() < give_up;
               ++round) {
            weft::WaitGroup wg;
            for (int i = 0; i < 256; ++i) {
              wg.add(1);
              weft::go([&, seed = round * 256 + i] {
                if (!stack_survives_a_nap(seed)) broken.fetch_add(1);
                wg.done();
              });
            }
            wg.wait();
          }
        },
        weft::RunOptions{.workers = workers});
    EXPECT_EQ(broken.load(), 0) << workers << " workers";
  }
  weft::detail::set_stack_scavenge_delay(5000ms);
}

// Pooled stacks keep their mappings: a burst of one size, pooled, then a
// burst of another must not map guarded stacks past the budget (the kernel
// refuses mappings past vm.max_map_count, and weft then aborts).
TEST(StackPool, PooledStacksCountAgainstTheMapBudget) {
  constexpr std::size_t kBudget = 64;
  weft::detail::set_guarded_stack_budget(kBudget);
  // Earlier tests in this process may have pooled more than that already;
  // then nothing new may be mapped guarded at all.
  const std::size_t limit = std::max(weft::detail::stack_stats().guarded_mapped + 1, kBudget);
  weft::run(
      [&] {
        for (const std::size_t size : {std::size_t{64} * 1024, std::size_t{32} * 1024}) {
          weft::WaitGroup wg;
          std::atomic<int> started{0};
          weft::Channel<int> release;
          for (int i = 0; i < 200; ++i) {
            wg.add(1);
            weft::go(
                [&] {
                  started.fetch_add(1);
                  release.recv();
                  wg.done();
                },
                weft::SpawnOptions{.stack_size = size});
          }
          while (started.load() < 200) weft::yield();
          EXPECT_LE(weft::detail::stack_stats().guarded_mapped, limit);
          release.close();
          wg.wait();
        }
        EXPECT_LE(weft::detail::stack_stats().guarded_mapped, limit);
      },
      weft::RunOptions{.workers = 2});
  weft::detail::set_guarded_stack_budget(0);
}

}  // namespace
