// weft::FiberLocal: a value per fiber that follows the fiber across parks
// and workers, made lazily, destroyed once at the fiber's end on its own
// stack; per thread outside fibers; safe when the FiberLocal goes first, and
// when fibers are abandoned at teardown.
#include "weft/fiber_local.h"

#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"
#include "weft/channel.h"
#include "weft/join.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace {

// Counts constructions and destructions, and remembers which fiber made it
// and which fiber destroyed it.
struct Counted {
  static std::atomic<int> made, destroyed, destroyed_elsewhere;
  std::uint64_t owner = weft::fiber_id();
  int value = 0;
  Counted() { made.fetch_add(1, std::memory_order_relaxed); }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;
  ~Counted() {
    if (weft::fiber_id() != owner) destroyed_elsewhere.fetch_add(1, std::memory_order_relaxed);
    destroyed.fetch_add(1, std::memory_order_relaxed);
  }
  static void zero() {
    made = 0;
    destroyed = 0;
    destroyed_elsewhere = 0;
  }
};
std::atomic<int> Counted::made{0};
std::atomic<int> Counted::destroyed{0};
std::atomic<int> Counted::destroyed_elsewhere{0};

class FiberLocalTest : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { Counted::zero(); }
  weft::RunOptions opts() const { return weft::RunOptions{.workers = GetParam()}; }
};

// Every fiber sees only its own value, before and after parking (on a
// channel, a yield, a blocking job) however the parks interleave.
TEST_P(FiberLocalTest, EachFiberSeesItsOwnValueAcrossParks) {
  static weft::FiberLocal<std::uint64_t> mine;
  std::atomic<int> wrong{0};
  weft::run(
      [&] {
        constexpr int kFibers = 64;
        weft::Channel<int> gate(kFibers);
        weft::WaitGroup wg;
        wg.add(kFibers);
        for (int i = 0; i < kFibers; ++i) {
          weft::go([&, gate] {
            const std::uint64_t me = weft::fiber_id();
            EXPECT_EQ(mine.get(), 0u) << "value-initialised";
            mine.get() = me;
            for (int round = 0; round < 10; ++round) {
              (void)gate.recv();
              if (*mine != me) wrong.fetch_add(1);
              weft::yield();
              if (*mine != me) wrong.fetch_add(1);
              weft::blocking([] {});
              if (*mine != me) wrong.fetch_add(1);
              *mine = me;
            }
            wg.done();
          });
        }
        for (int i = 0; i < kFibers * 10; ++i) ASSERT_TRUE(gate.send(i));
        wg.wait();
        EXPECT_FALSE(mine.has_value()) << "main never read it";
      },
      opts());
  EXPECT_EQ(wrong.load(), 0);
}

// A fiber readied from another worker resumes there and still reads its own
// value. Migration is forced as far as a scheduler allows (readied by a
// fiber on another worker, or by the blocking pool); the values are checked
// on every resumption, and how many were on another worker is reported, not
// asserted, since no schedule is promised.
TEST_P(FiberLocalTest, AFiberThatMigratesKeepsItsValue) {
  static weft::FiberLocal<std::uint64_t> mine;
  static weft::FiberLocal<Counted> counted;
  std::atomic<int> wrong{0}, migrations{0}, resumptions{0};
  weft::run(
      [&] {
        constexpr int kPairs = 4;
        const int rounds = weft::test::stress_iterations(2000);
        weft::WaitGroup wg;
        wg.add(2 * kPairs);
        for (int p = 0; p < kPairs; ++p) {
          weft::Channel<int> ping, pong;
          auto side = [&, rounds](weft::Channel<int> in, weft::Channel<int> out, bool first) {
            const std::uint64_t me = weft::fiber_id();
            mine.get() = me;
            counted->value = static_cast<int>(me);
            auto check = [&](int before) {
              resumptions.fetch_add(1, std::memory_order_relaxed);
              if (weft::worker_index() != before)
                migrations.fetch_add(1, std::memory_order_relaxed);
              if (*mine != me || counted->value != static_cast<int>(me)) wrong.fetch_add(1);
            };
            for (int r = 0; r < rounds; ++r) {
              if (first) {
                ASSERT_TRUE(out.send(r));
              }
              int before = weft::worker_index();
              ASSERT_TRUE(in.recv().has_value());  // readied by the other side, maybe elsewhere
              check(before);
              if (!first) {
                ASSERT_TRUE(out.send(r));
              }
              if (r % 8 == 7) {
                before = weft::worker_index();
                weft::blocking([] {});  // readied by a pool thread: any worker may take it
                check(before);
              }
            }
            wg.done();
          };
          weft::go([=] { side(pong, ping, true); });
          weft::go([=] { side(ping, pong, false); });
        }
        wg.wait();
      },
      opts());
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(Counted::made.load(), 8);
  EXPECT_EQ(Counted::destroyed.load(), 8);
  EXPECT_EQ(Counted::destroyed_elsewhere.load(), 0);
  std::printf("[   INFO   ] %d of %d resumptions were on another worker\n", migrations.load(),
              resumptions.load());
  RecordProperty("migrations", migrations.load());
  if (GetParam() == 1) {
    EXPECT_EQ(migrations.load(), 0);
  }
}

// Made on first get() only, once per fiber; fibers that never read it make
// none.
TEST_P(FiberLocalTest, ConstructionIsLazyAndOncePerFiber) {
  static weft::FiberLocal<Counted> counted;
  weft::run(
      [&] {
        weft::WaitGroup wg;
        constexpr int kFibers = 20;
        wg.add(kFibers);
        for (int i = 0; i < kFibers; ++i) {
          weft::go([&, i] {
            EXPECT_FALSE(counted.has_value());
            if (i % 2 == 0) {
              counted->value = i;
              weft::yield();
              EXPECT_TRUE(counted.has_value());
              EXPECT_EQ((*counted).value, i);
              EXPECT_EQ(counted.get().value, i);
            }
            wg.done();
          });
        }
        wg.wait();
      },
      opts());
  EXPECT_EQ(Counted::made.load(), 10);
  EXPECT_EQ(Counted::destroyed.load(), 10);
}

// Destroyed exactly once, when the fiber's function has returned, on that
// fiber, which may still park there; reverse order of construction.
TEST_P(FiberLocalTest, DestroyedOnceAtTheFibersEndOnItsOwnStack) {
  static std::atomic<int> ended;
  static int order[2];
  ended = 0;
  struct Parks {
    int tag;
    ~Parks() {
      weft::yield();  // the fiber still exists: its destructors may park
      weft::blocking([] {});
      order[ended.load(std::memory_order_relaxed)] = tag;
      ended.fetch_add(1, std::memory_order_release);  // pairs with main's acquire load
    }
  };
  static weft::FiberLocal<Counted> counted;
  static weft::FiberLocal<std::unique_ptr<Parks>> first, second;
  bool value_alive_at_closure_end = false;
  weft::run(
      [&] {
        weft::JoinHandle<void> h = weft::spawn([&] {
          (void)counted.get();
          first.get().reset(new Parks{1});
          second.get().reset(new Parks{2});
          weft::yield();
          value_alive_at_closure_end = Counted::destroyed.load() == 0;
        });
        h.join();
        // join() returns once the function and its captures are done, which
        // is before the values' destructors; so wait for them to be counted.
        while (ended.load(std::memory_order_acquire) < 2 || Counted::destroyed.load() < 1) {
          weft::yield();
        }
      },
      opts());
  EXPECT_TRUE(value_alive_at_closure_end);
  EXPECT_EQ(Counted::made.load(), 1);
  EXPECT_EQ(Counted::destroyed.load(), 1);
  EXPECT_EQ(Counted::destroyed_elsewhere.load(), 0) << "destroyed as the fiber that made it";
  EXPECT_EQ(order[0], 2) << "reverse order of construction";
  EXPECT_EQ(order[1], 1);
}

// A factory makes each fiber's first value, in that fiber, and may park.
TEST_P(FiberLocalTest, FactoryMakesEachFibersValue) {
  static std::atomic<int> calls{0};
  calls = 0;
  static weft::FiberLocal<std::string> name([] {
    calls.fetch_add(1);
    weft::yield();
    return "fiber " + std::to_string(weft::fiber_id());
  });
  weft::run(
      [&] {
        weft::WaitGroup wg;
        wg.add(8);
        for (int i = 0; i < 8; ++i) {
          weft::go([&] {
            const std::string expected = "fiber " + std::to_string(weft::fiber_id());
            EXPECT_EQ(*name, expected);
            weft::yield();
            EXPECT_EQ(name.get(), expected);
            name->append("!");
            EXPECT_EQ(*name, expected + "!");
            wg.done();
          });
        }
        wg.wait();
      },
      opts());
  EXPECT_EQ(calls.load(), 8);
}

// Not default-constructible: only the factory form compiles, and a capture
// works.
TEST_P(FiberLocalTest, FactoryWithCaptureForATypeWithoutDefault) {
  struct NoDefault {
    explicit NoDefault(int v) : v(v) {}
    int v;
  };
  int base = 40;
  weft::FiberLocal<NoDefault> local([base] { return NoDefault(base + 2); });
  weft::run([&] { EXPECT_EQ(local->v, 42); }, opts());
}

// A factory that throws leaves no value; the next get() tries again.
TEST_P(FiberLocalTest, AThrowingFactoryLeavesNoValue) {
  static int attempts = 0;
  attempts = 0;
  weft::FiberLocal<int> flaky([]() -> int {
    if (++attempts == 1) throw std::runtime_error("first");
    return 7;
  });
  weft::run(
      [&] {
        EXPECT_THROW((void)flaky.get(), std::runtime_error);
        EXPECT_FALSE(flaky.has_value());
        EXPECT_EQ(flaky.get(), 7);
      },
      opts());
  EXPECT_EQ(attempts, 2);
}

// reset() destroys the running fiber's value now, and only its.
TEST_P(FiberLocalTest, ResetDestroysOnlyTheRunningFibersValue) {
  static weft::FiberLocal<Counted> counted;
  weft::run(
      [&] {
        weft::Channel<int> go_on;
        weft::WaitGroup wg;
        wg.add(1);
        weft::go([&, go_on] {
          counted->value = 1;
          (void)go_on.recv();
          EXPECT_EQ(counted->value, 1) << "main's reset was main's";
          wg.done();
        });
        while (Counted::made.load() < 1) weft::yield();
        counted->value = 2;
        EXPECT_EQ(Counted::made.load(), 2);
        counted.reset();
        EXPECT_FALSE(counted.has_value());
        EXPECT_EQ(Counted::destroyed.load(), 1);
        counted.reset();  // none: nothing happens
        EXPECT_EQ(counted->value, 0) << "made anew";
        ASSERT_TRUE(go_on.send(1));
        wg.wait();
      },
      opts());
  EXPECT_EQ(Counted::made.load(), 3);
  EXPECT_EQ(Counted::destroyed.load(), 3);
}

// Many FiberLocals in one fiber, each its own slot, across parks.
TEST_P(FiberLocalTest, ManyLocalsInOneFiber) {
  constexpr int kLocals = 100;
  auto locals = std::make_unique<std::array<weft::FiberLocal<int>, kLocals>>();
  weft::run(
      [&] {
        weft::WaitGroup wg;
        constexpr int kFibers = 16;
        wg.add(kFibers);
        for (int f = 0; f < kFibers; ++f) {
          weft::go([&, f] {
            for (int i = 0; i < kLocals; ++i) (*locals)[i].get() = f * 1000 + i;
            weft::yield();
            weft::blocking([] {});
            for (int i = 0; i < kLocals; ++i) EXPECT_EQ(*(*locals)[i], f * 1000 + i);
            wg.done();
          });
        }
        wg.wait();
      },
      opts());
}

// The FiberLocal object may go while fibers hold values: those stay theirs
// and are destroyed at their end, with the deleter each carries.
TEST_P(FiberLocalTest, TheFiberLocalMayGoBeforeTheValues) {
  weft::run(
      [&] {
        auto local = std::make_unique<weft::FiberLocal<Counted>>();
        weft::Channel<int> made, gate;
        weft::WaitGroup wg;
        wg.add(1);
        weft::go([&, made, gate, l = local.get()]() mutable {
          (*l)->value = 5;
          // Its last use of the FiberLocal happens before main destroys it.
          if (!made.send(1)) ADD_FAILURE();
          (void)gate.recv();
          wg.done();
        });
        ASSERT_TRUE(made.recv().has_value());
        local.reset();
        weft::FiberLocal<Counted> after;  // a new key: never the old value
        EXPECT_EQ(after->value, 0);
        ASSERT_TRUE(gate.send(1));
        wg.wait();
      },
      opts());
  EXPECT_EQ(Counted::made.load(), 2);
  EXPECT_EQ(Counted::destroyed.load(), 2);
}

// Thousands of fibers using several locals each, with parks between; every
// value made is destroyed once, by its own fiber.
TEST_P(FiberLocalTest, StressManyFibersSeveralLocals) {
  static weft::FiberLocal<Counted> counted;
  static weft::FiberLocal<std::string> text;
  static weft::FiberLocal<std::uint64_t> id;
  static weft::FiberLocal<std::vector<int>> list([] { return std::vector<int>(4, 1); });
  const int fibers = weft::test::stress_iterations(4000);
  std::atomic<int> wrong{0};
  weft::run(
      [&] {
        weft::WaitGroup wg;
        wg.add(fibers);
        for (int i = 0; i < fibers; ++i) {
          weft::go([&, i] {
            const std::uint64_t me = weft::fiber_id();
            *id = me;
            *text = std::to_string(me);
            if (i % 3 != 0) counted->value = i;
            list->push_back(i);
            weft::yield();
            if (i % 16 == 0) weft::blocking([] {});
            if (*id != me || *text != std::to_string(me) || list->size() != 5 ||
                list->back() != i || (i % 3 != 0 && counted->value != i)) {
              wrong.fetch_add(1);
            }
            wg.done();
          });
        }
        wg.wait();
      },
      opts());
  EXPECT_EQ(wrong.load(), 0);
  const int expected = fibers - (fibers + 2) / 3;
  EXPECT_EQ(Counted::made.load(), expected);
  EXPECT_EQ(Counted::destroyed.load(), expected);
  EXPECT_EQ(Counted::destroyed_elsewhere.load(), 0);
}

INSTANTIATE_TEST_SUITE_P(Workers, FiberLocalTest, ::testing::Values(1, 2),
                         weft::test::workers_name);

// Outside fibers, a value per thread, destroyed when the thread exits; main
// before weft::run is a thread too, and its value is not main fiber's.
TEST(FiberLocalThreads, PerThreadOutsideFibers) {
  Counted::zero();
  static weft::FiberLocal<Counted> counted;
  counted->value = 1;  // this thread's
  std::thread a([] {
    EXPECT_FALSE(counted.has_value());
    counted->value = 2;
    EXPECT_EQ(counted->value, 2);
  });
  std::thread b([] {
    counted->value = 3;
    EXPECT_EQ(counted->value, 3);
  });
  a.join();
  b.join();
  EXPECT_EQ(Counted::destroyed.load(), 2) << "each thread's went at its exit";
  EXPECT_EQ(counted->value, 1);
  weft::run(
      [] {
        EXPECT_FALSE(counted.has_value()) << "the main fiber is not the thread";
        counted->value = 4;
      },
      weft::RunOptions{.workers = 1});
  EXPECT_EQ(counted->value, 1) << "the thread's value outlived the run";
  EXPECT_EQ(Counted::destroyed.load(), 3);
  counted.reset();
  EXPECT_EQ(Counted::destroyed.load(), 4);
}

// Fibers abandoned at teardown: one never ran (made nothing), one parked
// forever (keeps its value while kept: no crash, nothing LeakSanitizer calls
// lost), one parked on a channel that outlives the run and is readied late
// (reclaimed then: its values are destroyed by the next run's teardown).
TEST(FiberLocalTeardown, AbandonedFibersAreSafe) {
  Counted::zero();
  static weft::FiberLocal<Counted> counted;
  weft::Channel<int> outlives;
  weft::run(
      [&] {
        weft::go([] {
          counted->value = 2;
          weft::Channel<int> never;
          (void)never.recv();
        });
        // By pointer: a fiber dropped by a late ready never destroys its
        // closure (its frames are not unwound either), so a captured copy
        // would keep the channel's state for good.
        weft::go([o = &outlives] {
          counted->value = 3;
          (void)o->recv();
        });
        while (Counted::made.load() < 2) weft::yield();
        weft::go([] { counted->value = 1; });  // never runs: one worker, and main ends now
      },
      weft::RunOptions{.workers = 1, .detect_deadlocks = false});
  EXPECT_EQ(Counted::made.load(), 2);
  EXPECT_EQ(Counted::destroyed.load(), 0) << "mid-call fibers are not unwound";
  // A late ready drops the fiber; its values wait for a safe place.
  std::thread late([outlives]() mutable { (void)outlives.try_send(1); });
  late.join();
  EXPECT_EQ(Counted::destroyed.load(), 0);
  weft::run([] {}, weft::RunOptions{.workers = 1});
  EXPECT_EQ(Counted::destroyed.load(), 1) << "destroyed by the next teardown";
}

}  // namespace
