// A tour of the scheduler: a million fibers, a channel pipeline spread over
// the workers, select with a ticker, blocking work that does not stall a
// worker, and how late sub-millisecond sleeps wake.
#include <weft/weft.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

double ns_since(Clock::time_point t0, double per) {
  return std::chrono::duration<double, std::nano>(Clock::now() - t0).count() / per;
}

}  // namespace

int main() {
  return weft::run([] {
    std::printf("weft demo: %d workers (WEFT_PROCS to change)\n\n", weft::num_workers());

    // 1. Spawn and join a million fibers.
    {
      const int n = 1'000'000;
      const auto t0 = Clock::now();
      weft::WaitGroup wg;
      for (int i = 0; i < n; ++i) {
        wg.add(1);
        weft::go([&wg] { wg.done(); });
      }
      wg.wait();
      std::printf("spawned and joined %d fibers: %.0f ns each\n", n, ns_since(t0, n));
    }

    // 2. Ping-pong over unbuffered channels.
    {
      const int n = 500'000;
      weft::Channel<int> ping, pong;
      // Channels are shared handles: the echo fiber keeps its own copies.
      weft::go([ping, pong]() mutable {
        while (auto v = ping.recv()) {
          if (!pong.send(*v)) break;
        }
      });
      const auto t0 = Clock::now();
      for (int i = 0; i < n; ++i) {
        if (!ping.send(i)) break;
        pong.recv();
      }
      std::printf("channel ping-pong round trip: %.0f ns\n", ns_since(t0, n));
      ping.close();
    }

    // 3. Fan out to 8 workers, fan in the squares; select against a ticker.
    {
      weft::Channel<int> jobs(64);
      weft::Channel<long long> results(64);
      weft::WaitGroup workers;
      for (int w = 0; w < 8; ++w) {
        workers.add(1);
        weft::go([&] {
          while (auto j = jobs.recv()) {
            if (!results.send(static_cast<long long>(*j) * *j)) break;
          }
          workers.done();
        });
      }
      weft::go([&] {
        for (int i = 1; i <= 100'000; ++i) {
          if (!jobs.send(i)) break;
        }
        jobs.close();
        workers.wait();
        results.close();
      });
      // Ticks every millisecond; one the loop has not taken yet is dropped
      // rather than queued (Go's time.Ticker).
      weft::Ticker ticker(1ms);
      long long sum = 0;
      int received = 0, tick_count = 0;
      for (bool open = true; open;) {
        weft::select(weft::on_recv(results,
                                   [&](std::optional<long long> v) {
                                     if (!v) {
                                       open = false;
                                       return;
                                     }
                                     sum += *v;
                                     ++received;
                                   }),
                     weft::on_recv(ticker.chan(), [&](auto) { ++tick_count; }));
      }
      std::printf("fan-out/fan-in: %d results, sum of squares %lld, %d ticks seen meanwhile\n",
                  received, sum, tick_count);
    }

    // 4. Blocking work runs on the pool; the worker keeps running fibers.
    {
      std::atomic<int> ran_meanwhile{0};
      weft::go([&] {
        for (int i = 0; i < 100; ++i) {
          ran_meanwhile.fetch_add(1);
          weft::sleep_for(1ms);
        }
      });
      weft::blocking([] { std::this_thread::sleep_for(50ms); });
      std::printf(
          "a 50 ms blocking call ran off the workers; meanwhile another fiber ran %d times\n",
          ran_meanwhile.load());
    }

    // 5. Sub-millisecond sleeps (nanosecond timers; Go rounds these up to 1 ms).
    for (auto d : {50us, 200us}) {
      std::vector<double> late;
      for (int i = 0; i < 200; ++i) {
        const auto t0 = Clock::now();
        weft::sleep_for(d);
        late.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0 - d).count());
      }
      std::sort(late.begin(), late.end());
      std::printf("sleep_for(%lld us) wakes late by p50 %.1f us, p90 %.1f us\n",
                  static_cast<long long>(d.count()), late[late.size() / 2],
                  late[late.size() * 9 / 10]);
    }
  });
}
