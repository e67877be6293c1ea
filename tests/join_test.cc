// weft::spawn and weft::JoinHandle: join() returns the fiber's result or
// rethrows its exception, the destructor joins, detach() lets it run on, and
// an exception nobody joins is fatal, as in a go()'d fiber.
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "test_util.h"
#include "weft/channel.h"
#include "weft/join.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

class JoinTest : public ::testing::TestWithParam<int> {
 protected:
  weft::RunOptions opts() const { return weft::RunOptions{.workers = GetParam()}; }
};

TEST_P(JoinTest, JoinReturnsTheResult) {
  weft::run(
      [] {
        auto number = weft::spawn([] { return 42; });
        auto text = weft::spawn([] { return std::string(100, 'x'); });
        auto owned = weft::spawn([] { return std::make_unique<int>(7); });
        bool ran = false;
        auto nothing = weft::spawn([&] { ran = true; });
        EXPECT_EQ(number.join(), 42);
        EXPECT_EQ(text.join(), std::string(100, 'x'));
        EXPECT_EQ(*owned.join(), 7);
        nothing.join();
        EXPECT_TRUE(ran);
        EXPECT_FALSE(number.joinable()) << "join() empties the handle";
      },
      opts());
}

TEST_P(JoinTest, JoinRethrowsWhatTheFiberThrew) {
  weft::run(
      [] {
        auto h = weft::spawn([]() -> int { throw std::runtime_error("spawned boom"); });
        try {
          (void)h.join();
          ADD_FAILURE() << "join() returned";
        } catch (const std::runtime_error& e) {
          EXPECT_STREQ(e.what(), "spawned boom");
        }
        EXPECT_FALSE(h.joinable());
        auto v = weft::spawn([] { throw 5; });
        EXPECT_THROW(v.join(), int);
      },
      opts());
}

// join() parks until the fiber ends, however long that is: here until a
// value the fiber waits for arrives after join() was called.
TEST_P(JoinTest, JoinParksUntilTheFiberEnds) {
  weft::run(
      [] {
        weft::Channel<int> gate;
        auto h = weft::spawn([gate] { return *gate.recv() * 2; });
        EXPECT_FALSE(h.finished()) << "nothing was sent yet";
        weft::go([gate]() mutable { EXPECT_TRUE(gate.send(21)); });
        EXPECT_EQ(h.join(), 42);
      },
      opts());
}

// The destructor joins: a fiber given references into the caller's frame
// has finished with them when the scope ends.
TEST_P(JoinTest, DestructorJoins) {
  weft::run(
      [] {
        weft::Channel<int> gate;
        int seen = 0;
        {
          auto h = weft::spawn([&] { seen = *gate.recv(); });
          weft::go([gate]() mutable { EXPECT_TRUE(gate.send(7)); });
        }
        EXPECT_EQ(seen, 7);
      },
      opts());
}

TEST_P(JoinTest, MoveAssignmentJoinsTheFiberItReplaces) {
  weft::run(
      [] {
        weft::Channel<int> gate;
        std::atomic<bool> first_done{false};
        auto h = weft::spawn([&] {
          (void)gate.recv();
          first_done.store(true);
          return 1;
        });
        weft::go([gate]() mutable { EXPECT_TRUE(gate.send(0)); });
        h = weft::spawn([] { return 2; });
        EXPECT_TRUE(first_done.load());
        EXPECT_EQ(h.join(), 2);
      },
      opts());
}

TEST_P(JoinTest, DetachLetsTheFiberRunOn) {
  weft::run(
      [] {
        weft::Channel<int> gate, out(1);
        auto h = weft::spawn([gate, out]() mutable {
          EXPECT_TRUE(out.send(*gate.recv() + 1));
          return std::string("dropped");
        });
        h.detach();
        EXPECT_FALSE(h.joinable());
        EXPECT_TRUE(gate.send(1));
        EXPECT_EQ(out.recv(), 2);
        // Detached after the end: the handle frees what the fiber left.
        auto late = weft::spawn([] { return std::make_unique<int>(3); });
        while (!late.finished()) weft::yield();
        late.detach();
        late.detach();  // empty: nothing
      },
      opts());
}

TEST_P(JoinTest, EmptyAndMovedFromHandles) {
  weft::run(
      [] {
        weft::JoinHandle<int> empty;
        EXPECT_FALSE(empty.joinable());
        EXPECT_FALSE(empty.finished());
        EXPECT_THROW((void)empty.join(), std::logic_error);
        empty.detach();

        weft::Channel<std::uint64_t> ids(1);
        auto a = weft::spawn([ids]() mutable {
          EXPECT_TRUE(ids.send(weft::fiber_id()));
          return 1;
        });
        const std::uint64_t id = a.id();
        weft::JoinHandle<int> b = std::move(a);
        EXPECT_FALSE(a.joinable());  // NOLINT(bugprone-use-after-move): the point
        EXPECT_TRUE(b.joinable());
        EXPECT_EQ(b.id(), id);
        EXPECT_EQ(b.join(), 1);
        EXPECT_EQ(ids.recv(), id) << "id() is the fiber's own fiber_id()";
      },
      opts());
}

// What fn captured is released before join() returns, as std::thread
// destroys its callable before the thread ends.
TEST_P(JoinTest, TheFunctionIsDestroyedBeforeJoinReturns) {
  weft::run(
      [] {
        auto token = std::make_shared<int>(5);
        std::weak_ptr<int> watch = token;
        auto h = weft::spawn([t = std::move(token)] { return *t; });
        EXPECT_EQ(h.join(), 5);
        EXPECT_TRUE(watch.expired());
      },
      opts());
}

TEST_P(JoinTest, JoinFromAPlainThread) {
  weft::run(
      [] {
        weft::Channel<int> gate, joined(1);
        auto h = weft::spawn([gate] { return *gate.recv() + 1; });
        std::thread joiner([&h, joined]() mutable { EXPECT_TRUE(joined.send(h.join())); });
        EXPECT_TRUE(gate.send(9));
        EXPECT_EQ(joined.recv(), 10);
        joiner.join();  // it has sent: only its exit is left
      },
      opts());
}

// The protocol's races, thousands of times: the fiber ending while the
// joiner parks, join() from another fiber than the spawner, detach() before,
// during and after the end. A lost wake-up hangs; a freed state read or
// freed twice, or a leak, is ASan's.
TEST_P(JoinTest, JoinAndDetachRaceTheEndStress) {
  const int rounds = weft::test::stress_iterations(20000);
  std::atomic<long> detached_ran{0};
  long detached_spawned = 0;
  long sum = 0;
  weft::run(
      [&] {
        weft::WaitGroup detached;
        for (int i = 0; i < rounds; ++i) {
          auto h = weft::spawn([i] {
            if (i % 3 == 0) weft::yield();
            return i;
          });
          switch (i % 4) {
            case 0:
              sum += h.join();
              break;
            case 1: {
              // Joined from a fiber of its own, which the spawner joins.
              auto outer = weft::spawn([h = std::move(h)]() mutable { return h.join(); });
              sum += outer.join();
              break;
            }
            case 2:
              if (i % 8 == 2) weft::yield();
              detached.add(1);
              ++detached_spawned;
              {
                auto d = weft::spawn([&] {
                  detached_ran.fetch_add(1);
                  detached.done();
                });
                d.detach();
              }
              sum += h.join();
              break;
            default:
              h.detach();
              sum += i;
              break;
          }
        }
        detached.wait();
      },
      opts());
  long expected = 0;
  for (int i = 0; i < rounds; ++i) expected += i;
  EXPECT_EQ(sum, expected);
  EXPECT_EQ(detached_ran.load(), detached_spawned);
}

// Many handles joined out of order by one fiber, while their fibers end on
// other workers: every result arrives exactly once.
TEST_P(JoinTest, ManyHandlesJoinedInReverseStress) {
  const int n = weft::test::stress_iterations(4000);
  weft::run(
      [&] {
        std::vector<weft::JoinHandle<int>> handles;
        handles.reserve(static_cast<std::size_t>(n));
        for (int i = 0; i < n; ++i) handles.push_back(weft::spawn([i] { return i * 3; }));
        for (int i = n - 1; i >= 0; --i) {
          EXPECT_EQ(handles[static_cast<std::size_t>(i)].join(), i * 3);
        }
      },
      opts());
}

INSTANTIATE_TEST_SUITE_P(Workers, JoinTest, ::testing::Values(1, 2), weft::test::workers_name);

// Fibers that never ran when main returned are abandoned, their closures
// destroyed unrun (one worker and no yield: none runs first). Their handles
// learn of it: join() throws, the destructor passes over it, and a detached
// one's state is freed (LeakSanitizer's to see).
TEST(JoinTeardown, FibersThatNeverRanAreOverForTheirHandles) {
  weft::JoinHandle<int> kept, dropped;
  auto token = std::make_shared<int>(1);
  weft::run(
      [&] {
        kept = weft::spawn([token] { return *token; });
        dropped = weft::spawn([] { return 2; });
        auto detached = weft::spawn([token] { return *token; });
        detached.detach();
      },
      weft::RunOptions{.workers = 1});
  EXPECT_EQ(token.use_count(), 1) << "their closures were destroyed";
  EXPECT_TRUE(kept.finished());
  EXPECT_THROW((void)kept.join(), std::runtime_error);
}

// Nobody can take a detached fiber's exception: fatal in that fiber, with its
// text, as an exception escaping a go()'d fiber.
TEST(JoinDeathTest, ExceptionInADetachedFiberIsFatal) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(weft::run(
                  [] {
                    weft::Channel<int> gate;
                    auto h = weft::spawn([gate] {
                      (void)gate.recv();
                      throw std::runtime_error("detached boom");
                    });
                    h.detach();
                    EXPECT_TRUE(gate.send(1));
                    weft::sleep_for(std::chrono::nanoseconds::max());
                  },
                  weft::RunOptions{.workers = 1}),
              ::testing::KilledBySignal(SIGABRT),
              "no join\\(\\) took(.|\n)*uncaught exception std::runtime_error: detached boom");
}

// A handle destroyed without join() joins, and finds the exception: fatal
// there, since a destructor cannot rethrow it.
TEST(JoinDeathTest, ExceptionNobodyJoinedIsFatalWhereTheHandleDies) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      weft::run(
          [] { auto h = weft::spawn([]() -> int { throw std::runtime_error("unjoined boom"); }); },
          weft::RunOptions{.workers = 1}),
      ::testing::KilledBySignal(SIGABRT),
      "no join\\(\\) took(.|\n)*std::runtime_error: unjoined boom");
}

}  // namespace
