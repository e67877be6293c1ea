#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>

#include "test_util.h"
#include "weft/channel.h"
#include "weft/runtime.h"
#include "weft/select.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;

class SelectTest : public ::testing::TestWithParam<int> {
 protected:
  weft::RunOptions opts() const { return weft::RunOptions{.workers = GetParam()}; }
};

TEST_P(SelectTest, DefaultRunsWhenNothingIsReadyAndNeverParks) {
  weft::run(
      [] {
        weft::Channel<int> ch;
        bool got = false, defaulted = false;
        const int index = weft::select(weft::on_recv(ch, [&](std::optional<int>) { got = true; }),
                                       weft::on_default([&] { defaulted = true; }));
        EXPECT_EQ(index, 1);
        EXPECT_TRUE(defaulted);
        EXPECT_FALSE(got);
      },
      opts());
}

TEST_P(SelectTest, PicksTheReadyCase) {
  weft::run(
      [] {
        weft::Channel<int> a, b(1);
        EXPECT_TRUE(b.send(42));
        int value = 0;
        const int index = weft::select(weft::on_recv(a, [&](std::optional<int>) { value = -1; }),
                                       weft::on_recv(b, [&](std::optional<int> v) { value = *v; }));
        EXPECT_EQ(index, 1);
        EXPECT_EQ(value, 42);
      },
      opts());
}

TEST_P(SelectTest, RandomAmongReadyCases) {
  weft::run(
      [] {
        weft::Channel<int> a(1), b(1);
        int first = 0;
        const int n = 2000;
        for (int i = 0; i < n; ++i) {
          EXPECT_TRUE(a.send(1));
          EXPECT_TRUE(b.send(2));
          weft::select(weft::on_recv(a, [&](std::optional<int>) { ++first; }),
                       weft::on_recv(b, [&](std::optional<int>) {}));
          // Drain whichever was not chosen.
          if (!a.try_recv()) b.try_recv();
        }
        // Uniform: ~1000 each. A fixed order would give 0 or 2000.
        EXPECT_GT(first, n / 4);
        EXPECT_LT(first, 3 * n / 4);
      },
      opts());
}

TEST_P(SelectTest, ParksUntilACaseIsReady) {
  weft::run(
      [] {
        weft::Channel<int> a, b;
        std::string which;
        weft::go([&] {
          weft::sleep_for(3ms);
          EXPECT_TRUE(b.send(7));
        });
        const int index = weft::select(
            weft::on_recv(a, [&](std::optional<int>) { which = "a"; }),
            weft::on_recv(b, [&](std::optional<int> v) { which = "b" + std::to_string(*v); }));
        EXPECT_EQ(index, 1);
        EXPECT_EQ(which, "b7");
        // The select left no waiter behind on `a`: a plain receiver gets the next value.
        weft::go([&] { EXPECT_TRUE(a.send(1)); });
        EXPECT_EQ(a.recv(), 1);
      },
      opts());
}

TEST_P(SelectTest, SendCaseDeliversToAParkedReceiver) {
  weft::run(
      [] {
        weft::Channel<int> out;
        std::atomic<int> got{0};
        weft::go([&] { got.store(*out.recv()); });
        bool sent = false;
        weft::select(weft::on_send(out, 5, [&](bool ok) { sent = ok; }));
        EXPECT_TRUE(sent);
        while (got.load() == 0) weft::yield();
        EXPECT_EQ(got.load(), 5);
      },
      opts());
}

TEST_P(SelectTest, ClosedChannelCompletesTheCase) {
  weft::run(
      [] {
        weft::Channel<int> a, b;
        weft::go([&] {
          weft::sleep_for(2ms);
          a.close();
        });
        bool closed_seen = false;
        const int index =
            weft::select(weft::on_recv(a, [&](std::optional<int> v) { closed_seen = !v; }),
                         weft::on_recv(b, [&](std::optional<int>) {}));
        EXPECT_EQ(index, 0);
        EXPECT_TRUE(closed_seen);
        bool sent = true;
        weft::select(weft::on_send(a, 1, [&](bool ok) { sent = ok; }));
        EXPECT_FALSE(sent);  // send on a closed channel reports false
      },
      opts());
}

TEST_P(SelectTest, ManySendersManySelectorsExactlyOnce) {
  // Several selectors over three channels race many senders: every value is
  // received exactly once, and nothing hangs.
  const int per_sender = weft::test::stress_iterations(2000);
  const int senders = 6, selectors = 4;
  std::atomic<long> sum{0};
  std::atomic<int> count{0};
  weft::run(
      [&] {
        weft::Channel<int> chans[3] = {weft::Channel<int>(0), weft::Channel<int>(1),
                                       weft::Channel<int>(4)};
        weft::WaitGroup senders_done, selectors_done;
        for (int s = 0; s < senders; ++s) {
          senders_done.add(1);
          weft::go([&, s] {
            for (int i = 1; i <= per_sender; ++i) EXPECT_TRUE(chans[(s + i) % 3].send(i));
            senders_done.done();
          });
        }
        for (int k = 0; k < selectors; ++k) {
          selectors_done.add(1);
          weft::go([&] {
            bool open = true;
            while (open) {
              auto take = [&](std::optional<int> v) {
                if (!v) {
                  open = false;
                  return;
                }
                sum += *v;
                count++;
              };
              weft::select(weft::on_recv(chans[0], take), weft::on_recv(chans[1], take),
                           weft::on_recv(chans[2], take));
            }
            selectors_done.done();
          });
        }
        senders_done.wait();
        for (auto& c : chans) c.close();
        selectors_done.wait();
        // A selector stops at the first closed case it picks, which may leave
        // buffered values in the other channels (Go does the same): drain.
        for (auto& c : chans) {
          while (auto v = c.try_recv()) {
            sum += *v;
            count++;
          }
        }
      },
      opts());
  EXPECT_EQ(count.load(), senders * per_sender);
  EXPECT_EQ(sum.load(), static_cast<long>(senders) * per_sender * (per_sender + 1) / 2);
}

TEST_P(SelectTest, SameChannelInTwoCases) {
  weft::run(
      [] {
        weft::Channel<int> ch;
        weft::go([&] { EXPECT_TRUE(ch.send(3)); });
        int got = 0;
        weft::select(weft::on_recv(ch, [&](std::optional<int> v) { got = *v; }),
                     weft::on_recv(ch, [&](std::optional<int> v) { got = *v; }));
        EXPECT_EQ(got, 3);
      },
      opts());
}

// The cooperative budget (weft/detail/coop.h) on the channel paths: one
// fiber per worker polling with select-and-default never parks, beside a
// fiber that sleeps. Nothing but a turn's end runs a busy worker's timers,
// so before the budget the sleeper woke only when the pollers hit their cap.
TEST_P(SelectTest, PollingLoopsDoNotStarveASleeper) {
  weft::run(
      [] {
        weft::Channel<int> never;
        std::atomic<bool> stop{false};
        std::atomic<int> capped{0};
        weft::WaitGroup pollers;
        for (int i = 0; i < weft::num_workers(); ++i) {
          pollers.add(1);
          weft::go([&] {
            const auto cap = std::chrono::steady_clock::now() + 10s;
            for (std::uint64_t n = 1; !stop.load(std::memory_order_relaxed); ++n) {
              weft::select(weft::on_recv(never, [](std::optional<int>) {}),
                           weft::on_default([] {}));
              if (n % 4096 == 0 && std::chrono::steady_clock::now() > cap) {
                capped.fetch_add(1);
                break;
              }
            }
            pollers.done();
          });
        }
        weft::yield();  // the pollers start
        auto slowest = std::chrono::steady_clock::duration::zero();
        for (int i = 0; i < 20; ++i) {
          const auto start = std::chrono::steady_clock::now();
          weft::sleep_for(1ms);
          slowest = std::max(slowest, std::chrono::steady_clock::now() - start);
        }
        stop.store(true);
        pollers.wait();
        EXPECT_EQ(capped.load(), 0) << "the sleeps ended only after the pollers' 10 s cap";
        EXPECT_LT(slowest, 2s);  // liberal: a budget of polls is microseconds
      },
      opts());
}

INSTANTIATE_TEST_SUITE_P(Workers, SelectTest, ::testing::Values(1, 2, 4), weft::test::workers_name);

}  // namespace
