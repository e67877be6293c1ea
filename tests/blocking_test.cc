#include <gtest/gtest.h>

#include <atomic>
#include <future>
#include <stdexcept>
#include <string>
#include <thread>

#include "test_util.h"
#include "weft/runtime.h"

namespace {

TEST(Blocking, ReturnsTheValue) {
  weft::run([] {
    EXPECT_EQ(weft::blocking([] { return 7 * 6; }), 42);
    EXPECT_EQ(weft::blocking([] { return std::string("from the pool"); }), "from the pool");
    weft::blocking([] {});  // void works too
  });
}

TEST(Blocking, RunsOffTheWorkerThread) {
  weft::run([] {
    const auto worker_thread = std::this_thread::get_id();
    const auto pool_thread = weft::blocking([] { return std::this_thread::get_id(); });
    EXPECT_NE(worker_thread, pool_thread);
    EXPECT_EQ(weft::blocking([] { return weft::worker_index(); }), -1);
  });
}

TEST(Blocking, RethrowsInTheCaller) {
  weft::run([] {
    EXPECT_THROW(weft::blocking([]() -> int { throw std::runtime_error("disk on fire"); }),
                 std::runtime_error);
  });
}

TEST(Blocking, DoesNotStallTheWorker) {
  // One worker: if blocking() ran fn on it, fn would wait forever for a
  // promise that only another fiber on that same worker can fulfil.
  weft::run(
      [] {
        std::promise<int> promise;
        auto future = promise.get_future();
        weft::go([&] { promise.set_value(5); });
        EXPECT_EQ(weft::blocking([&] { return future.get(); }), 5);
      },
      weft::RunOptions{.workers = 1});
}

TEST(Blocking, ManyConcurrentCallsAllComplete) {
  const int n = weft::test::stress_iterations(500);
  std::atomic<int> completed{0};
  weft::run(
      [&] {
        std::atomic<int> fibers_done{0};
        for (int i = 0; i < n; ++i) {
          weft::go([&, i] {
            if (weft::blocking([i] { return i; }) == i) completed.fetch_add(1);
            fibers_done.fetch_add(1);
          });
        }
        while (fibers_done.load() < n) weft::yield();
      },
      weft::RunOptions{.workers = 2});
  EXPECT_EQ(completed.load(), n);
}

TEST(Blocking, OnAPlainThreadRunsInline) {
  const auto self = std::this_thread::get_id();
  EXPECT_EQ(weft::blocking([] { return std::this_thread::get_id(); }), self);
}

}  // namespace
