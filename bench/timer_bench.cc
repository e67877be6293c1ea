// The deadline heap's costs (issue 6 targets): adding and stopping many
// timers, and how late a burst of timers all due within 100 ms fires.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "weft/net.h"
#include "weft/weft.h"

namespace {

using Clock = std::chrono::steady_clock;

// A server's deadlines per request: a connection's read and write deadlines
// moved an idle timeout ahead before each request, as the example servers
// (examples/serve.h) and Go's net/http do; per request (both sets), over 1
// connection and over thousands (the deadline heap holding one timer each).
void BM_ConnDeadlinesPerRequest(benchmark::State& state) {
  const auto conns = static_cast<std::size_t>(state.range(0));
  // The clock each deadline is counted from: weft::coarse_now(), as
  // examples/serve.h, or steady_clock::now().
  const bool coarse = state.range(2) != 0;
  const auto now = [coarse] { return coarse ? weft::coarse_now() : weft::Clock::now(); };
  rlimit lim{};
  getrlimit(RLIMIT_NOFILE, &lim);
  if (lim.rlim_cur < 2 * conns + 64) {
    lim.rlim_cur = std::min<rlim_t>(lim.rlim_max, 2 * conns + 64);
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  weft::run(
      [&] {
        std::vector<weft::net::Conn> open;
        std::vector<int> peers;
        for (std::size_t i = 0; i < conns; ++i) {
          int fds[2];
          if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds) != 0) break;
          auto conn = weft::net::adopt_conn(fds[0], "unix");
          if (!conn) break;
          open.push_back(std::move(*conn));
          peers.push_back(fds[1]);
        }
        if (open.size() == conns) {
          std::size_t next = 0;
          for (auto _ : state) {
            weft::net::Conn& c = open[next];
            next = next + 1 == conns ? 0 : next + 1;
            (void)c.set_read_deadline(now() + std::chrono::seconds(60));
            (void)c.set_write_deadline(now() + std::chrono::seconds(60));
          }
        } else {
          state.SkipWithError("could not open the connections (RLIMIT_NOFILE?)");
        }
        open.clear();
        for (int fd : peers) ::close(fd);
      },
      weft::RunOptions{.workers = static_cast<int>(state.range(1))});
}

// 1M timers armed an hour out, then all stopped; per timer (add + stop).
void BM_TimerAddStop(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  weft::run(
      [&] {
        std::vector<std::unique_ptr<weft::Timer>> timers;
        timers.reserve(static_cast<std::size_t>(n));
        for (int i = 0; i < n; ++i) timers.push_back(std::make_unique<weft::Timer>([] {}));
        for (auto _ : state) {
          for (auto& t : timers) t->reset(std::chrono::hours(1));
          for (auto& t : timers) t->stop();
        }
      },
      weft::RunOptions{.workers = static_cast<int>(state.range(1))});
  state.counters["ns_per_timer"] =
      benchmark::Counter(static_cast<double>(state.iterations()) * n * 1e-9,
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// 100k fibers each sleep until a distinct time spread over 100 ms; the
// median and p99 of how late each woke.
void BM_TimerBurstLateness(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  std::vector<double> late_us(static_cast<std::size_t>(n));
  weft::run(
      [&] {
        for (auto _ : state) {
          weft::WaitGroup wg;
          const auto start = Clock::now() + std::chrono::milliseconds(20);
          for (int i = 0; i < n; ++i) {
            wg.add(1);
            const auto due = start + std::chrono::microseconds(100'000LL * i / n);
            weft::go([&, i, due] {
              weft::sleep_until(due);
              late_us[static_cast<std::size_t>(i)] =
                  std::chrono::duration<double, std::micro>(Clock::now() - due).count();
              wg.done();
            });
          }
          wg.wait();
        }
      },
      weft::RunOptions{.workers = static_cast<int>(state.range(1))});
  std::sort(late_us.begin(), late_us.end());
  state.counters["p50_late_us"] = late_us[late_us.size() / 2];
  state.counters["p99_late_us"] = late_us[late_us.size() * 99 / 100];
}

BENCHMARK(BM_ConnDeadlinesPerRequest)
    ->ArgNames({"conns", "workers", "coarse"})
    ->Args({1, 1, 0})
    ->Args({4000, 1, 0})
    ->Args({1, 1, 1})
    ->Args({4000, 1, 1});
BENCHMARK(BM_TimerAddStop)
    ->ArgNames({"timers", "workers"})
    ->Args({1'000'000, 1})
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_TimerBurstLateness)
    ->ArgNames({"timers", "workers"})
    ->Args({100'000, 1})
    ->Args({100'000, 2})
    ->Iterations(1)
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
