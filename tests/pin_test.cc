// Pinning (weft::PinToWorker, SpawnOptions::pinned): a pinned fiber runs on
// one worker's thread only, across every kind of park, and is never lost
// when another worker readies it; an unpinned one, under the same schedule,
// moves. On every poller backend with 1 and 2 workers.
#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#include "net/net_test_util.h"
#include "test_util.h"
#include "weft/channel.h"
#include "weft/runtime.h"
#include "weft/select.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;
using weft::test::eventually;
using weft::test::NetBackendTest;

long thread_id() {
  return ::syscall(SYS_gettid);
}

class PinTest : public NetBackendTest {};

// Where the caller ran before and after one park that, unless the caller
// is pinned, it can only leave on another worker: a fiber readies it
// (the caller's runnext on that fiber's worker) and then holds its worker,
// never switching, until the caller ran or `hold` passed. `same` says
// whether the readier ran on the caller's worker: only then does the
// schedule force a move.
struct Bounce {
  int before = -1, after = -1;
  bool same = false;
};

Bounce bounce(std::chrono::nanoseconds hold) {
  Bounce b;
  b.before = weft::worker_index();
  weft::Channel<int> wake;
  std::atomic<bool> ran{false};
  std::atomic<int> readier_at{-1};
  weft::WaitGroup readier_done;
  readier_done.add(1);
  weft::go([&] {
    readier_at.store(weft::worker_index());
    EXPECT_TRUE(wake.send(1));
    const auto until = std::chrono::steady_clock::now() + hold;
    while (!ran.load() && std::chrono::steady_clock::now() < until) {
    }
    readier_done.done();
  });
  EXPECT_EQ(wake.recv(), 1);
  b.after = weft::worker_index();
  ran.store(true);
  readier_done.wait();
  b.same = readier_at.load() == b.before;
  return b;
}

// The schedule above moves an unpinned fiber whenever its readier shares
// its worker: the control for the pinned cases below, which would pass
// vacuously if it never did.
TEST_P(PinTest, AnUnpinnedFiberMovesWhenItsReadierHoldsItsWorker) {
  if (workers() < 2) GTEST_SKIP() << "needs another worker to move to";
  run([] {
    int forced = 0, moved = 0;
    for (int i = 0; i < 200; ++i) {
      const Bounce b = bounce(60s);
      if (b.same) {
        ++forced;
        if (b.after != b.before) ++moved;
      }
    }
    EXPECT_GT(forced, 0);
    EXPECT_EQ(moved, forced);
  });
}

TEST_P(PinTest, APinnedFiberStaysWhenItsReadierHoldsItsWorker) {
  run([] {
    weft::WaitGroup done;
    done.add(1);
    weft::go(
        [&] {
          const long tid = thread_id();
          int forced = 0, moved = 0;
          for (int i = 0; i < 200; ++i) {
            const Bounce b = bounce(1ms);  // then the readier lets the worker go
            if (b.same) ++forced;
            if (b.after != b.before || thread_id() != tid) ++moved;
          }
          if (weft::num_workers() > 1) {
            EXPECT_GT(forced, 0);
          }
          EXPECT_EQ(moved, 0);
          done.done();
        },
        {.pinned = true});
    done.wait();
  });
}

// Every kind of park, each readied from wherever it is readied: a channel
// from a fiber and from a plain thread, a timer, a contended mutex, a
// socket read woken by the poller, a yield. The pinned fiber's thread never
// changes; the runtime's other fibers keep both workers busy meanwhile.
TEST_P(PinTest, APinnedFiberKeepsItsThreadAcrossEveryKindOfPark) {
  run([] {
    const int rounds = weft::test::stress_iterations(400);
    weft::Channel<int> from_fiber, from_thread, to_writer(1);
    weft::Mutex mu;
    auto pair = weft::test::tcp_pair();
    std::atomic<bool> stop{false};
    weft::WaitGroup helpers;
    helpers.add(3);
    weft::go([&] {  // sends on from_fiber
      for (int i = 0; i < rounds; ++i) EXPECT_TRUE(from_fiber.send(i));
      helpers.done();
    });
    weft::go([&] {  // holds the mutex in short stretches
      while (!stop.load()) {
        mu.lock();
        weft::yield();
        mu.unlock();
        weft::yield();
      }
      helpers.done();
    });
    weft::go([&] {  // writes a byte each time it is asked to
      while (auto v = to_writer.recv()) {
        const char c = static_cast<char>(*v);
        EXPECT_TRUE(pair.client.write(&c, 1));
      }
      helpers.done();
    });
    std::thread plain([&] {
      for (int i = 0; i < rounds; ++i) EXPECT_TRUE(from_thread.send(i));
    });
    int changed = 0;
    weft::WaitGroup done;
    done.add(1);
    weft::go(
        [&] {
          const long tid = thread_id();
          const int worker = weft::worker_index();
          auto check = [&] {
            if (thread_id() != tid || weft::worker_index() != worker) ++changed;
          };
          for (int i = 0; i < rounds; ++i) {
            EXPECT_EQ(from_fiber.recv(), i);
            check();
            EXPECT_EQ(from_thread.recv(), i);
            check();
            weft::sleep_for(20us);
            check();
            mu.lock();
            check();
            mu.unlock();
            EXPECT_TRUE(to_writer.send(i & 0x7f));
            char c = 0;
            auto r = pair.server.read(&c, 1);
            EXPECT_TRUE(r) << r.error().to_string();
            EXPECT_EQ(c, static_cast<char>(i & 0x7f));
            check();
            weft::yield();
            check();
          }
          done.done();
        },
        {.pinned = true});
    done.wait();
    stop.store(true);
    to_writer.close();
    helpers.wait();
    plain.join();
    EXPECT_EQ(changed, 0);
  });
}

// A scope pins the fiber where it runs, nested scopes keep it pinned until
// the outermost ends, and after that it moves again under the schedule
// that forces a move.
TEST_P(PinTest, PinToWorkerHoldsForItsScopeOnly) {
  run([this] {
    int moved_inside = 0;
    {
      weft::PinToWorker outer;
      const long tid = thread_id();
      {
        weft::PinToWorker inner;
        for (int i = 0; i < 50; ++i) {
          const Bounce b = bounce(1ms);
          if (b.after != b.before || thread_id() != tid) ++moved_inside;
        }
      }
      for (int i = 0; i < 50; ++i) {  // still inside `outer`
        const Bounce b = bounce(1ms);
        if (b.after != b.before || thread_id() != tid) ++moved_inside;
      }
    }
    EXPECT_EQ(moved_inside, 0);
    if (workers() < 2) return;
    int moved_after = 0;
    for (int i = 0; i < 200 && moved_after == 0; ++i) {
      const Bounce b = bounce(60s);
      if (b.same && b.after != b.before) ++moved_after;
    }
    EXPECT_GT(moved_after, 0) << "unpinned again, the fiber should move";
  });
}

// A fiber spawned pinned from a plain thread belongs to whichever worker
// runs it first, and stays there.
TEST_P(PinTest, APinnedFiberSpawnedFromAThreadStaysWhereItFirstRan) {
  run([] {
    std::atomic<int> moved{0}, finished{0};
    constexpr int kFibers = 8;
    std::thread spawner([&] {
      for (int f = 0; f < kFibers; ++f) {
        weft::go(
            [&] {
              const int worker = weft::worker_index();
              for (int i = 0; i < 50; ++i) {
                const Bounce b = bounce(1ms);
                if (b.after != worker || b.before != worker) moved.fetch_add(1);
              }
              finished.fetch_add(1);
            },
            {.pinned = true});
      }
    });
    spawner.join();
    EXPECT_TRUE(eventually([&] { return finished.load() == kFibers; }));
    EXPECT_EQ(moved.load(), 0);
  });
}

// A pinned fiber that yields in a loop and an unpinned one that does the
// same share one worker: neither waits for the other to finish.
TEST(PinFairness, PinnedAndUnpinnedYieldersTakeTurns) {
  weft::run(
      [] {
        std::atomic<int> pinned_turns{0}, unpinned_turns{0}, pinned_at_end{-1};
        constexpr int kTurns = 2000;
        weft::WaitGroup done;
        done.add(2);
        weft::go(
            [&] {
              for (int i = 0; i < kTurns; ++i) {
                pinned_turns.fetch_add(1);
                weft::yield();
              }
              done.done();
            },
            {.pinned = true});
        weft::go([&] {
          for (int i = 0; i < kTurns; ++i) {
            unpinned_turns.fetch_add(1);
            weft::yield();
          }
          pinned_at_end.store(pinned_turns.load());
          done.done();
        });
        done.wait();
        // Turn about: the pinned one is at most a few turns off when the
        // other ends (not kTurns behind, nor already done long before).
        EXPECT_GT(pinned_at_end.load(), kTurns / 2);
      },
      {.workers = 1});
}

// Lost wake-ups: pinned fibers on every worker ping-pong with each other
// across workers, so each round hands a fiber to a worker that may be busy,
// spinning, napping or asleep. A hand-off whose wake-up was lost leaves its
// fiber in an inbox nobody reads, and the round never ends: the bound turns
// that into a failure (the deadlock detector cannot see it: the fiber is
// queued).
TEST_P(PinTest, PinnedPingPongAcrossWorkersStress) {
  run([] {
    constexpr int kPairs = 4;
    // Shared with the fibers: on a failure they are still parked when run
    // returns, and must not point into a frame that is gone.
    struct State {
      int rounds = weft::test::stress_iterations(3000);
      std::atomic<int> finished{0}, moved{0};
      std::vector<weft::Channel<int>> ping{kPairs}, pong{kPairs};
    };
    auto st = std::make_shared<State>();
    for (int p = 0; p < kPairs; ++p) {
      // Spawned from a plain thread, they pin wherever they first run, so
      // that the two of a pair are on different workers about half the time.
      std::thread([st, p] {
        weft::go(
            [st, p] {
              const int worker = weft::worker_index();
              for (int i = 0; i < st->rounds; ++i) {
                EXPECT_TRUE(st->ping[p].send(i));
                EXPECT_EQ(st->pong[p].recv(), i);
                if (weft::worker_index() != worker) st->moved.fetch_add(1);
                if (i % 64 == 0) weft::sleep_for(10us);  // lets its worker go idle
              }
              st->finished.fetch_add(1);
            },
            {.pinned = true});
        weft::go(
            [st, p] {
              const int worker = weft::worker_index();
              for (int i = 0; i < st->rounds; ++i) {
                EXPECT_EQ(st->ping[p].recv(), i);
                if (weft::worker_index() != worker) st->moved.fetch_add(1);
                EXPECT_TRUE(st->pong[p].send(i));
              }
              st->finished.fetch_add(1);
            },
            {.pinned = true});
      }).join();
    }
    bool all_done = false;
    const auto until = std::chrono::steady_clock::now() + 120s;
    while (!(all_done = st->finished.load() == 2 * kPairs) &&
           std::chrono::steady_clock::now() < until) {
      weft::sleep_for(1ms);
    }
    EXPECT_TRUE(all_done) << "a pinned fiber's wake-up was lost: " << st->finished.load() << " of "
                          << 2 * kPairs << " finished";
    EXPECT_EQ(st->moved.load(), 0);
  });
}

// Pinned fibers still queued or parked when main returns are abandoned as
// any other: no crash, and (under ASan) no leak.
TEST_P(PinTest, PinnedFibersOutstandingAtTheEndAreAbandonedCleanly) {
  run([] {
    auto forever = std::make_shared<weft::Channel<int>>();
    for (int i = 0; i < 16; ++i) {
      weft::go([forever] { (void)forever->recv(); }, {.pinned = true});  // parked
      weft::go(
          [] {
            for (;;) weft::yield();  // queued, in its worker's pinned list
          },
          {.pinned = true});
    }
    weft::yield();
  });
}

WEFT_NET_INSTANTIATE(PinTest);

// gtest's SCOPED_TRACE keeps its stack per thread: a fiber that parked
// inside one and resumed on another worker would push on one thread's
// stack and pop another's. WEFT_SCOPED_TRACE pins the fiber for the
// scope, so the trace is on the stack of whatever thread the fiber is on,
// every time it fails something.
TEST(FiberScopedTrace, ATraceOutlivesParksThatWouldMoveTheFiber) {
  weft::run(
      [] {
        WEFT_SCOPED_TRACE("the fiber's own trace");
        for (int i = 0; i < 100; ++i) {
          (void)bounce(1ms);
          EXPECT_NONFATAL_FAILURE(ADD_FAILURE() << "probe", "the fiber's own trace");
        }
      },
      {.workers = 2});
}

}  // namespace
