// weft::Timer is safe for concurrent use, as Go 1.23's time.Timer: stop,
// reset and destruction may come from any fiber or thread, at the same time
// as each other and as the expiry, and the destructor waits out every expiry
// in flight.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <thread>
#include <vector>

#include "test_util.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;

class TimerRace : public ::testing::TestWithParam<int> {};

// Expiries overlap: one is still inside the Timer while reset(0) arms the
// next and another worker pops it. The Timer is destroyed right after; under
// ASan a destructor that waited for only one expiry is a use after free.
TEST_P(TimerRace, OverlappingExpiriesThenDestruction) {
  const int rounds = weft::test::stress_iterations(2000);
  std::atomic<int> fired{0};
  weft::run(
      [&] {
        for (int i = 0; i < rounds; ++i) {
          auto t = std::make_unique<weft::Timer>([&] { fired.fetch_add(1); });
          for (int k = 0; k < 4; ++k) {
            t->reset(0ns);
            // Parked, so that this worker runs the due timer too, while the
            // next reset(0) may race the other worker's pop.
            if (k % 2 == 0) weft::sleep_for(1us);
          }
          t.reset();
        }
        while (fired.load() == 0) weft::sleep_for(100us);  // the spawned fns ran
      },
      weft::RunOptions{.workers = GetParam()});
  EXPECT_GT(fired.load(), 0);
}

// stop() and reset() from several fibers and a plain thread at once. Each
// reset either re-arms a pending timer (true) or arms a stopped or fired one
// (false); the function runs once per expiry and never after destruction.
TEST_P(TimerRace, StopAndResetFromFibersAndThreadsAtOnce) {
  const int rounds = weft::test::stress_iterations(300);
  std::atomic<int> fired{0};
  weft::run(
      [&] {
        for (int i = 0; i < rounds; ++i) {
          weft::Timer t([&] { fired.fetch_add(1); });
          std::atomic<bool> stop{false};
          weft::WaitGroup wg;
          for (int f = 0; f < 3; ++f) {
            wg.add(1);
            weft::go([&, f] {
              for (int k = 0; k < 20; ++k) {
                if ((k + f) % 3 == 0) {
                  t.stop();
                } else {
                  t.reset(std::chrono::microseconds(k % 5));
                }
                if (k % 4 == 0) weft::yield();
              }
              wg.done();
            });
          }
          std::thread thread([&] {
            for (int k = 0; k < 20 && !stop.load(); ++k) t.reset(0ns);
          });
          wg.wait();
          stop.store(true);
          thread.join();
          t.reset(0ns);
          weft::sleep_for(1us);  // fires at least once per round before destruction races it
        }
        while (fired.load() == 0) weft::sleep_for(100us);  // the spawned fns ran
      },
      weft::RunOptions{.workers = GetParam()});
  EXPECT_GT(fired.load(), 0);
}

// Every arming ends exactly once: it fires, or one stop() or reset()
// returns true for it. stop() takes no lock of the Timer's own (only the
// heap's), so a stop landing inside another caller's reset, between its
// stop and its arming, must neither count the old arming twice nor lose
// the new one.
TEST_P(TimerRace, EveryArmingEndsExactlyOnceUnderConcurrentStopsAndResets) {
  const int rounds = weft::test::stress_iterations(200);
  std::atomic<long> arms{0}, ended_by_call{0}, fired{0};
  weft::run(
      [&] {
        for (int i = 0; i < rounds; ++i) {
          weft::Timer t([&] { fired.fetch_add(1); });
          weft::WaitGroup wg;
          auto worker = [&](int seed) {
            for (int k = 0; k < 30; ++k) {
              if ((k + seed) % 3 == 0) {
                if (t.stop()) ended_by_call.fetch_add(1);
              } else {
                arms.fetch_add(1);
                if (t.reset(std::chrono::microseconds((k + seed) % 4))) ended_by_call.fetch_add(1);
              }
              if ((k + seed) % 5 == 0) weft::yield();
            }
          };
          for (int f = 0; f < 3; ++f) {
            wg.add(1);
            weft::go([&, f] {
              worker(f);
              wg.done();
            });
          }
          std::thread thread([&] { worker(7); });
          wg.wait();
          thread.join();
          if (t.stop()) ended_by_call.fetch_add(1);
        }
        // The functions of the armings that fired run in fibers of their
        // own, maybe still queued.
        const auto give_up = std::chrono::steady_clock::now() + 30s;
        while (fired.load() + ended_by_call.load() < arms.load() &&
               std::chrono::steady_clock::now() < give_up) {
          weft::sleep_for(100us);
        }
      },
      weft::RunOptions{.workers = GetParam()});
  EXPECT_EQ(fired.load() + ended_by_call.load(), arms.load())
      << fired.load() << " fired, " << ended_by_call.load() << " ended by stop or reset";
}

INSTANTIATE_TEST_SUITE_P(Workers, TimerRace, ::testing::Values(1, 2), weft::test::workers_name);

}  // namespace
