// What outlives weft::run: late completions from other threads, fibers left
// parked when main returned, and the next runtime started in the same
// process. None of it may crash, and an abandoned fiber never runs again.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "scheduler.h"
#include "weft/channel.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace {

// A blocking job still running when main returns finishes afterwards; its
// ready() of the abandoned fiber must be dropped, not crash on a runtime
// that is gone.
TEST(Lifecycle, BlockingJobFinishingAfterRunIsDropped) {
  std::atomic<int> phase{0};
  weft::run(
      [&] {
        weft::go([&] {
          weft::blocking([&] {
            phase.store(1);
            while (phase.load() != 2) std::this_thread::yield();
            phase.store(3);  // the job's last touch of this frame
          });
        });
        while (phase.load() != 1) weft::yield();
      },
      weft::RunOptions{.workers = 2});
  const std::uint64_t dropped = weft::detail::late_readies_dropped();
  phase.store(2);
  // Wait for the job's last touch of `phase` itself: the drop counter is
  // relaxed, so seeing it move orders nothing, and this frame (phase) would
  // be reused by the next test while the pool thread's read of it was still
  // unordered with that reuse (a TSan report).
  while (phase.load() != 3) std::this_thread::yield();
  while (weft::detail::late_readies_dropped() == dropped) std::this_thread::yield();
}

// A fiber parked when its runtime ended is woken by a fiber of the next
// runtime: it must stay abandoned, not resume on its old stack.
TEST(Lifecycle, AbandonedFiberNeverRunsInTheNextRuntime) {
  std::optional<weft::Channel<int>> ch;
  std::atomic<bool> resumed{false};
  weft::run(
      [&] {
        ch.emplace();
        weft::go([&] {
          ch->recv();
          resumed.store(true);
        });
        weft::yield();  // one worker: the receiver runs now and parks in recv
      },
      weft::RunOptions{.workers = 1});
  const std::uint64_t dropped = weft::detail::late_readies_dropped();
  weft::run(
      [&] {
        EXPECT_TRUE(ch->send(1));  // hands the value to the abandoned receiver
        // Let the new runtime schedule whatever it was given.
        for (int i = 0; i < 100; ++i) weft::yield();
        weft::WaitGroup wg;
        wg.add(1);
        weft::go([&] { wg.done(); });
        wg.wait();
      },
      weft::RunOptions{.workers = 1});
  EXPECT_FALSE(resumed.load());
  EXPECT_EQ(weft::detail::late_readies_dropped(), dropped + 1);
}

// A thread outside the runtime that readies a fiber while main returns:
// whichever comes first, nothing crashes and nothing is lost track of.
TEST(Lifecycle, ForeignReadyRacingTeardown) {
  for (int round = 0; round < 200; ++round) {
    std::optional<weft::Channel<int>> ch;
    std::atomic<bool> parked{false};
    std::thread sender;
    weft::run(
        [&] {
          ch.emplace(1);
          weft::go([&] {
            parked.store(true);
            ch->recv();
          });
          while (!parked.load()) weft::yield();
          sender = std::thread([&] { EXPECT_TRUE(ch->send(1)); });
        },
        weft::RunOptions{.workers = 2});
    sender.join();
  }
}

// Fibers spawned but never run when main returns: their closures never ran,
// so teardown destroys them, and what they captured is released.
TEST(Lifecycle, AbandonedFibersThatNeverRanDestroyTheirClosures) {
  auto token = std::make_shared<int>(0);
  weft::run(
      [&] {
        // One worker and no yield: none of them runs before main returns.
        for (int i = 0; i < 10; ++i) {
          weft::go([token] { ++*token; });
        }
      },
      weft::RunOptions{.workers = 1});
  EXPECT_EQ(*token, 0);
  EXPECT_EQ(token.use_count(), 1);
}

TEST(Lifecycle, RunCanBeCalledAgain) {
  for (int workers : {1, 2, 1, 2}) {
    int sum = 0;
    const int rc = weft::run(
        [&] {
          weft::Channel<int> ch;
          weft::go([&] {
            for (int i = 1; i <= 100; ++i) EXPECT_TRUE(ch.send(i));
          });
          for (int i = 0; i < 100; ++i) sum += *ch.recv();
          return 7;
        },
        weft::RunOptions{.workers = workers});
    EXPECT_EQ(rc, 7);
    EXPECT_EQ(sum, 5050);
  }
}

}  // namespace

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>

namespace {

// A fiber abandoned while parked, holding heap memory that only its frame
// and the channel it waits on (itself only reachable from that frame) point
// to: still referenced, so not a leak. LeakSanitizer scans thread stacks but
// not fiber stacks; before teardown registered them it reported both.
TEST(Lifecycle, AbandonedParkedFibersAreNotLeaks) {
  weft::run([] {
    auto ch = std::make_shared<weft::Channel<int>>();
    weft::go([ch] {
      std::string held(1000, 'x');
      ch->recv();
      EXPECT_EQ(held.size(), 1000u);  // never reached
    });
    weft::yield();
  });
  EXPECT_EQ(__lsan_do_recoverable_leak_check(), 0);
}

// Fibers that had run and were runnable again when main returned (one that
// yields forever, one readied but not yet resumed): mid-call like a parked
// one, so what their frames hold is still referenced, not leaked.
TEST(Lifecycle, AbandonedRunnableFibersAreNotLeaks) {
  weft::run(
      [] {
        auto ch = std::make_shared<weft::Channel<int>>();
        weft::go([] {
          std::string held(1000, 'y');
          for (;;) weft::yield();
        });
        weft::go([ch] {
          std::string held(1000, 'r');
          ch->recv();
          EXPECT_EQ(held.size(), 1000u);  // never reached
        });
        weft::yield();             // one worker: both run now, one yields, one parks
        EXPECT_TRUE(ch->send(1));  // readies the receiver, which main's return abandons
      },
      weft::RunOptions{.workers = 1});
  EXPECT_EQ(__lsan_do_recoverable_leak_check(), 0);
}

}  // namespace
#endif
