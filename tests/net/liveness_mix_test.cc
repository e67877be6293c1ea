// Liveness of a random mix: every fiber that waits is woken, whatever else
// runs beside it. The focused stress tests each race one mechanism against
// itself; a lost wake-up that needs two of them at once (stop 46's timer
// look, starved by fibers that yielded to each other, was one) only shows
// in a mix. Each round spawns a random set of actors, sleepers, channel and
// socket ping-pongs, mutex crowds, deadlines, cancels, timers, selects,
// plain threads that spawn or write, and fibers that yield until the rest
// are done, then waits for all of them. A runtime that loses a wake-up
// hangs a round: the guard below then names the round's seed and actors,
// dumps the fibers and aborts, instead of hanging the suite.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iterator>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "net_test_util.h"
#include "test_util.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/debug.h"
#include "weft/net/conn.h"
#include "weft/runtime.h"
#include "weft/select.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;
using weft::test::NetBackendTest;

// Fails a round that makes no progress for kStall, from a plain thread, so
// that it works when every worker is stuck. Generous: a sanitized,
// perturbed round on a loaded machine takes milliseconds, a lost wake-up
// forever.
class HangGuard {
 public:
  static constexpr auto kStall = 60s;

  HangGuard() : thread_([this] { watch(); }) {}
  ~HangGuard() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void begin(std::string what) {
    std::lock_guard lock(mu_);
    what_ = std::move(what);
    ++progress_;
    cv_.notify_one();
  }

 private:
  void watch() {
    std::unique_lock lock(mu_);
    while (!stop_) {
      const std::uint64_t seen = progress_;
      if (cv_.wait_for(lock, kStall, [&] { return stop_ || progress_ != seen; })) continue;
      std::fprintf(stderr, "liveness mix: no progress for %llds in %s; the fibers:\n",
                   static_cast<long long>(kStall.count()), what_.c_str());
      weft::dump_fibers(stderr);
      std::abort();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::uint64_t progress_ = 0;
  std::string what_;
  std::thread thread_;
};

enum class Actor {
  sleeper,
  yield_pair,
  chan_ping_pong,
  buffered_pipe,
  mutex_crowd,
  socket_ping_pong,
  read_fiber_writes,
  read_thread_writes,
  deadline_read,
  cancelled_read,
  timer_callback,
  select_after,
  overdue_after_recv,
  thread_spawns,
  wait_group_relay,
  cond_var_signal,
  blocking_job,
  close_while_reading,
  cancel_fan_out,
  yield_until_rest_done,
  kCount,
};

// In Actor's order.
constexpr const char* kActorNames[] = {
    "sleeper",
    "yield-pair",
    "chan-ping-pong",
    "buffered-pipe",
    "mutex-crowd",
    "socket-ping-pong",
    "read/fiber-writes",
    "read/thread-writes",
    "deadline-read",
    "cancelled-read",
    "timer-callback",
    "select-after",
    "overdue-after-recv",
    "thread-spawns",
    "wait-group-relay",
    "cond-var-signal",
    "blocking-job",
    "close-while-reading",
    "cancel-fan-out",
    "yield-until-rest-done",
};
static_assert(std::size(kActorNames) == static_cast<std::size_t>(Actor::kCount));

// The end of a unix_pair() that a plain thread writes to with write(2).
int raw_end(const weft::test::TcpPair& pair) {
  return pair.server.native_handle();
}

// A cancel shared by a reader and whoever cancels it.
auto shared_cancel() {
  return std::make_shared<weft::WithCancelResult<weft::CancelFunc>>(
      weft::with_cancel(weft::background()));
}

// One round: its actors' fibers and threads, and what they owe.
class Round {
 public:
  explicit Round(unsigned seed) : rng_(seed), seed_(seed) {}

  // Spawns 2 to 11 random actors; returns their names for the guard.
  std::string start() {
    const int n = 2 + static_cast<int>(rng_() % 10);
    std::string names;
    // Yielders alone would wait for nothing: such a round ends with a sleeper.
    bool others = false;
    for (int i = 0; i < n; ++i) {
      auto a = static_cast<Actor>(rng_() % static_cast<unsigned>(Actor::kCount));
      if (i == n - 1 && !others) a = Actor::sleeper;
      others |= a != Actor::yield_until_rest_done;
      names += names.empty() ? "" : ", ";
      names += kActorNames[static_cast<int>(a)];
      spawn(a, rng_());
    }
    return names;
  }

  // Waits for every fiber and joins every thread of the round.
  void finish() {
    wg_.wait();
    for (auto& t : threads_) t.join();
    threads_.clear();
    timers_.clear();  // each has fired: its fiber ran
  }

 private:
  using Us = std::chrono::microseconds;

  // A fiber the yielders wait for: counted until it ends.
  template <class F>
  void go_counted(F fn) {
    wg_.add(1);
    unfinished_.fetch_add(1);
    weft::go([this, fn = std::move(fn)]() mutable {
      fn();
      unfinished_.fetch_sub(1);
      wg_.done();
    });
  }
  std::string where() const { return "seed " + std::to_string(seed_); }

  void spawn(Actor a, unsigned seed) {
    std::mt19937 r(seed);
    switch (a) {
      case Actor::sleeper: {
        const Us d(r() % 2000);
        go_counted([this, d] {
          const auto t0 = std::chrono::steady_clock::now();
          weft::sleep_for(d);
          EXPECT_GE(std::chrono::steady_clock::now() - t0, d) << where();
        });
        break;
      }
      case Actor::yield_pair: {
        // Two fibers that switch straight to each other: a worker busy
        // with them must still look at its timers and the poller.
        auto turn = std::make_shared<std::atomic<int>>(0);
        const int rounds = 1 + static_cast<int>(r() % 300);
        for (int me = 0; me < 2; ++me) {
          go_counted([turn, rounds, me] {
            for (int i = 0; i < rounds; ++i) {
              while (turn->load() % 2 != me) weft::yield();
              turn->fetch_add(1);
            }
          });
        }
        break;
      }
      case Actor::chan_ping_pong: {
        weft::Channel<int> ping, pong;
        const int rounds = 1 + static_cast<int>(r() % 200);
        go_counted([this, ping, pong, rounds]() mutable {
          for (int i = 0; i < rounds; ++i) {
            EXPECT_TRUE(ping.send(i));
            EXPECT_EQ(pong.recv(), i) << where();
          }
        });
        go_counted([ping, pong, rounds]() mutable {
          for (int i = 0; i < rounds; ++i) {
            auto v = ping.recv();
            EXPECT_TRUE(v && pong.send(*v));
          }
        });
        break;
      }
      case Actor::buffered_pipe: {
        weft::Channel<int> pipe(1 + r() % 4);
        const int count = 1 + static_cast<int>(r() % 300);
        const unsigned yields = r();
        go_counted([pipe, count, yields]() mutable {
          for (int i = 0; i < count; ++i) {
            if ((yields >> (i % 32)) & 1) weft::yield();
            EXPECT_TRUE(pipe.send(i));
          }
          pipe.close();
        });
        go_counted([this, pipe, count] {
          int next = 0;
          while (auto v = pipe.recv()) EXPECT_EQ(*v, next++) << where();
          EXPECT_EQ(next, count) << where();
        });
        break;
      }
      case Actor::mutex_crowd: {
        struct Crowd {
          weft::Mutex mu;
          int guarded = 0;  // under mu
          std::atomic<int> left;
        };
        const int fibers = 2 + static_cast<int>(r() % 3);
        const int each = 1 + static_cast<int>(r() % 100);
        auto crowd = std::make_shared<Crowd>();
        crowd->left.store(fibers);
        for (int k = 0; k < fibers; ++k) {
          go_counted([this, crowd, each, fibers, yield_inside = r() % 2 == 0] {
            for (int i = 0; i < each; ++i) {
              std::lock_guard lock(crowd->mu);
              ++crowd->guarded;
              if (yield_inside) weft::yield();
            }
            if (crowd->left.fetch_sub(1) == 1) {
              std::lock_guard lock(crowd->mu);
              EXPECT_EQ(crowd->guarded, fibers * each) << where();
            }
          });
        }
        break;
      }
      case Actor::socket_ping_pong: {
        // Both ends park in reads that wait for readiness first.
        auto pair = std::make_shared<weft::test::TcpPair>(weft::test::unix_pair());
        const int rounds = 1 + static_cast<int>(r() % 100);
        go_counted([this, pair, rounds] {
          char c = 0;
          for (int i = 0; i < rounds; ++i) {
            ASSERT_TRUE(pair->client.write("p", 1)) << where();
            ASSERT_TRUE(pair->client.read_full(&c, 1)) << where();
          }
        });
        go_counted([this, pair, rounds] {
          char c = 0;
          for (int i = 0; i < rounds; ++i) {
            ASSERT_TRUE(pair->server.read_full(&c, 1)) << where();
            ASSERT_TRUE(pair->server.write(&c, 1)) << where();
          }
        });
        break;
      }
      case Actor::read_fiber_writes: {
        auto pair = std::make_shared<weft::test::TcpPair>(weft::test::unix_pair());
        const unsigned yields = r() % 64;
        const Us nap(r() % 2 ? r() % 500 : 0);
        go_counted([this, pair] {
          char c = 0;
          auto got = pair->client.read(&c, 1);
          EXPECT_TRUE(got && got.count() == 1 && c == 'w') << where();
        });
        go_counted([pair, yields, nap] {
          for (unsigned i = 0; i < yields; ++i) weft::yield();
          if (nap.count()) weft::sleep_for(nap);
          EXPECT_EQ(::write(raw_end(*pair), "w", 1), 1);
        });
        break;
      }
      case Actor::read_thread_writes: {
        auto pair = std::make_shared<weft::test::TcpPair>(weft::test::unix_pair());
        const Us nap(r() % 500);
        go_counted([this, pair] {
          char c = 0;
          auto got = pair->client.read(&c, 1);
          EXPECT_TRUE(got && got.count() == 1 && c == 't') << where();
        });
        threads_.emplace_back([pair, nap] {
          // Not a synchronisation: where the write lands is the random part.
          std::this_thread::sleep_for(nap);
          EXPECT_EQ(::write(raw_end(*pair), "t", 1), 1);
        });
        break;
      }
      case Actor::deadline_read: {
        const Us after(r() % 1500);
        go_counted([this, after] {
          auto pair = weft::test::unix_pair();
          ASSERT_TRUE(pair.client.set_read_deadline(weft::Clock::now() + after));
          char c = 0;
          auto got = pair.client.read(&c, 1);
          EXPECT_TRUE(!got && got.error().is_timeout()) << where();
        });
        break;
      }
      case Actor::cancelled_read: {
        auto made = shared_cancel();
        auto pair = std::make_shared<weft::test::TcpPair>(weft::test::unix_pair());
        go_counted([this, made, pair] {
          char c = 0;
          auto got = pair->client.read(made->ctx, &c, 1);
          EXPECT_TRUE(!got && got.error().is_canceled()) << where();
        });
        const unsigned yields = r() % 64;
        if (r() % 2) {
          go_counted([made, yields] {
            for (unsigned i = 0; i < yields; ++i) weft::yield();
            made->cancel();
          });
        } else {
          threads_.emplace_back([made, nap = Us(r() % 300)] {
            std::this_thread::sleep_for(nap);
            made->cancel();
          });
        }
        break;
      }
      case Actor::timer_callback: {
        // The fiber the timer starts is the one counted.
        wg_.add(1);
        unfinished_.fetch_add(1);
        timers_.push_back(std::make_unique<weft::Timer>(Us(r() % 1500), [this] {
          unfinished_.fetch_sub(1);
          wg_.done();
        }));
        break;
      }
      case Actor::select_after: {
        const Us d(r() % 1500);
        go_counted([this, d] {
          weft::Channel<int> never;
          bool timed_out = false;
          weft::select(weft::on_recv(never, [&](std::optional<int>) {}),
                       weft::on_recv(weft::after(d), [&](auto) { timed_out = true; }));
          EXPECT_TRUE(timed_out) << where();
        });
        break;
      }
      case Actor::overdue_after_recv: {
        // Busy past the timer (a busy fiber runs none), then parks on its
        // channel: the look at the timers may come due on that park.
        const Us d(r() % 300), busy(r() % 500);
        go_counted([d, busy] {
          auto timeout = weft::after(d);
          weft::test::busy_for(busy);
          (void)timeout.chan().recv();
        });
        break;
      }
      case Actor::thread_spawns: {
        // A fiber spawned from outside: the injection must wake a worker.
        wg_.add(1);
        unfinished_.fetch_add(1);
        threads_.emplace_back([this, nap = Us(r() % 300)] {
          std::this_thread::sleep_for(nap);
          weft::go([this] {
            unfinished_.fetch_sub(1);
            wg_.done();
          });
        });
        break;
      }
      case Actor::wait_group_relay: {
        auto relay = std::make_shared<weft::WaitGroup>();
        relay->add(1);
        go_counted([relay] { relay->wait(); });
        const Us nap(r() % 2 ? r() % 500 : 0);
        go_counted([relay, nap] {
          if (nap.count()) weft::sleep_for(nap);
          relay->done();
        });
        break;
      }
      case Actor::cond_var_signal: {
        struct Signal {
          weft::Mutex mu;
          weft::CondVar cv;
          bool set = false;  // under mu
        };
        auto sig = std::make_shared<Signal>();
        go_counted([sig] {
          std::unique_lock lock(sig->mu);
          sig->cv.wait(lock, [&] { return sig->set; });
        });
        go_counted([sig, yields = r() % 64] {
          for (unsigned i = 0; i < yields; ++i) weft::yield();
          {
            std::lock_guard lock(sig->mu);
            sig->set = true;
          }
          sig->cv.notify_one();
        });
        break;
      }
      case Actor::blocking_job: {
        // The fiber parks while a blocking thread runs the job.
        go_counted([this, nap = Us(r() % 300)] {
          const int got = weft::blocking([nap] {
            std::this_thread::sleep_for(nap);
            return 7;
          });
          EXPECT_EQ(got, 7) << where();
        });
        break;
      }
      case Actor::close_while_reading: {
        auto pair = std::make_shared<weft::test::TcpPair>(weft::test::unix_pair());
        go_counted([this, pair] {
          char c = 0;
          auto got = pair->client.read(&c, 1);
          EXPECT_FALSE(got) << where();
        });
        go_counted([pair, yields = r() % 64] {
          for (unsigned i = 0; i < yields; ++i) weft::yield();
          EXPECT_TRUE(pair->client.close());
        });
        break;
      }
      case Actor::cancel_fan_out: {
        // One cancel, several readers parked on sockets of their own.
        auto made = shared_cancel();
        const int readers = 2 + static_cast<int>(r() % 5);
        for (int k = 0; k < readers; ++k) {
          go_counted([this, made] {
            auto pair = weft::test::unix_pair();
            char c = 0;
            auto got = pair.client.read(made->ctx, &c, 1);
            EXPECT_TRUE(!got && got.error().is_canceled()) << where();
          });
        }
        go_counted([made, yields = r() % 64] {
          for (unsigned i = 0; i < yields; ++i) weft::yield();
          made->cancel();
        });
        break;
      }
      case Actor::yield_until_rest_done: {
        wg_.add(1);
        weft::go([this] {
          while (unfinished_.load() != 0) weft::yield();
          wg_.done();
        });
        break;
      }
      case Actor::kCount:
        break;
    }
  }

  std::mt19937 rng_;
  const unsigned seed_;
  weft::WaitGroup wg_;
  // Fibers still to end, for the yielders; a yielder is not one of them.
  std::atomic<int> unfinished_{0};
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<weft::Timer>> timers_;
};

class LivenessMixStress : public NetBackendTest {};

TEST_P(LivenessMixStress, EveryWaiterOfARandomMixIsWoken) {
  const int rounds = weft::test::stress_iterations(1000);
  // A fixed base, so that a failure's seed reproduces it; the chaos step
  // perturbs the schedule around the same mixes.
  std::mt19937 seeds(0x5eed + static_cast<unsigned>(workers()));
  HangGuard guard;
  run([&] {
    for (int i = 0; i < rounds && !::testing::Test::HasFailure(); ++i) {
      const unsigned seed = seeds();
      Round round(seed);
      const std::string names = round.start();
      guard.begin("round " + std::to_string(i) + " (seed " + std::to_string(seed) +
                  ", actors: " + names + ")");
      round.finish();
    }
  });
}

WEFT_NET_INSTANTIATE(LivenessMixStress);

}  // namespace
