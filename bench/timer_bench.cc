// The deadline heap's costs (issue 6 targets): adding and stopping many
// timers, and how late a burst of timers all due within 100 ms fires.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "weft/weft.h"

namespace {

using Clock = std::chrono::steady_clock;

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
