// The runtime's costs, each beside the same program in Go
// (bench/peers/go/runtimebench) when run through bench/compare.py.
// Every benchmark runs inside weft::run with 1 and 2 workers; times are wall
// clock (the benchmark thread itself only waits in weft::run).
#include <benchmark/benchmark.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "bench_workers.h"
#include "weft/weft.h"

namespace {

weft::RunOptions workers(const benchmark::State& state) {
  return weft::RunOptions{.workers = static_cast<int>(state.range(0))};
}

// Batch benchmarks time their whole state loop themselves so that the per-item
// figure is a plain number: an inverted kIsRate counter would show "s" as its
// unit on the console.
class PerItem {
 public:
  void start() { t0_ = std::chrono::steady_clock::now(); }
  void stop() { elapsed_ = std::chrono::steady_clock::now() - t0_; }
  void report(benchmark::State& state, const char* counter, double items_per_iteration) const {
    const double items = static_cast<double>(state.iterations()) * items_per_iteration;
    state.SetItemsProcessed(static_cast<std::int64_t>(items));
    state.counters[counter] = std::chrono::duration<double, std::nano>(elapsed_).count() / items;
  }

 private:
  std::chrono::steady_clock::time_point t0_;
  std::chrono::steady_clock::duration elapsed_{};
};

// Round trip: main sends on `ping`, the echo fiber receives and sends back
// on `pong` (both unbuffered), as Go's classic ping-pong.
void BM_ChannelPingPong(benchmark::State& state) {
  weft::run(
      [&] {
        weft::Channel<int> ping, pong;
        weft::WaitGroup done;
        done.add(1);
        weft::go([&] {
          while (auto v = ping.recv()) {
            if (!pong.send(*v)) break;  // never: pong is not closed
          }
          done.done();
        });
        int i = 0;
        for (auto _ : state) {
          if (!ping.send(i++)) {
            state.SkipWithError("ping was closed");
            break;
          }
          benchmark::DoNotOptimize(pong.recv());
        }
        ping.close();
        done.wait();
      },
      workers(state));
}

// One ping-pong pair per worker, all at once: how a round trip's cost holds
// up as workers are added (issue 18: flat within 1.3x from 1 to 16). Each
// pair is BM_ChannelPingPong's; ns per round trip of one pair.
constexpr int kPairTrips = 200'000;
void BM_PingPongPairs(benchmark::State& state) {
  const int pairs = static_cast<int>(state.range(0));
  PerItem timer;
  weft::run(
      [&] {
        auto round = [pairs] {
          weft::WaitGroup done;
          for (int p = 0; p < pairs; ++p) {
            done.add(1);
            weft::go([&done] {
              weft::Channel<int> ping, pong;
              weft::WaitGroup echoed;
              echoed.add(1);
              weft::go([&] {
                while (auto v = ping.recv()) {
                  if (!pong.send(*v)) break;  // never: pong is not closed
                }
                echoed.done();
              });
              for (int i = 0; i < kPairTrips; ++i) {
                if (!ping.send(i)) break;  // never: ping is closed below
                benchmark::DoNotOptimize(pong.recv());
              }
              ping.close();
              echoed.wait();
              done.done();
            });
          }
          done.wait();
        };
        round();  // untimed: stacks and records mapped, workers awake
        timer.start();
        for (auto _ : state) round();
        timer.stop();
      },
      workers(state));
  timer.report(state, "ns_per_trip", kPairTrips);
}

// One yield while another fiber yields too: a switch there and one back.
void BM_Yield(benchmark::State& state) {
  weft::run(
      [&] {
        std::atomic<bool> stop{false};
        weft::WaitGroup done;
        done.add(1);
        weft::go([&] {
          while (!stop.load(std::memory_order_relaxed)) weft::yield();
          done.done();
        });
        for (auto _ : state) weft::yield();
        stop.store(true);
        done.wait();
      },
      workers(state));
}

// A yield with nothing else runnable: the cost of entering the scheduler and
// finding the caller again, no switch to another fiber.
void BM_YieldAlone(benchmark::State& state) {
  weft::run(
      [&] {
        for (auto _ : state) weft::yield();
      },
      workers(state));
}

// Reading a FiberLocal inside a fiber, its value already made: the call
// into libweft for the running fiber's table, a bound check, two loads.
weft::FiberLocal<long> bench_fiber_local;
void BM_FiberLocalRead(benchmark::State& state) {
  weft::run(
      [&] {
        *bench_fiber_local = 1;
        for (auto _ : state) benchmark::DoNotOptimize(bench_fiber_local.get());
      },
      workers(state));
}

// The same read of a thread_local in this executable (local-exec: one
// %fs-relative load), which a fiber that parks may not rely on (README,
// "thread_local in fibers"); and through a noinline accessor, the way it may.
thread_local long bench_thread_local = 1;
__attribute__((noinline)) long& bench_thread_local_fresh() {
  asm volatile("" ::: "memory");  // not pure: a call per read, as after a park
  return bench_thread_local;
}
void BM_ThreadLocalRead(benchmark::State& state) {
  weft::run(
      [&] {
        for (auto _ : state) {
          benchmark::DoNotOptimize(bench_thread_local);
          benchmark::ClobberMemory();  // read it anew every time, as the FiberLocal is
        }
      },
      workers(state));
}
void BM_ThreadLocalReadNoinline(benchmark::State& state) {
  weft::run(
      [&] {
        for (auto _ : state) benchmark::DoNotOptimize(bench_thread_local_fresh());
      },
      workers(state));
}

// Spawn 1M fibers that each call wg.done(), then wg.wait(); per fiber.
constexpr int kSpawnBatch = 1'000'000;
void spawn_join(benchmark::State& state, const weft::SpawnOptions& options) {
  PerItem timer;
  weft::run(
      [&] {
        auto batch = [&options] {
          weft::WaitGroup wg;
          for (int i = 0; i < kSpawnBatch; ++i) {
            wg.add(1);
            weft::go([&wg] { wg.done(); }, options);
          }
          wg.wait();
        };
        // Untimed, as the Go peer's warm-up run: the timed batches then reuse
        // pooled fiber records and stacks rather than paying for first mmaps
        // and page faults, which Go's warm g free list would not pay either.
        batch();
        timer.start();
        for (auto _ : state) batch();
        timer.stop();
      },
      workers(state));
  timer.report(state, "ns_per_fiber", kSpawnBatch);
}
void BM_SpawnJoin(benchmark::State& state) {
  spawn_join(state, {});
}
// The same with a stack size of the fibers' own (16 KiB, as a server's
// connection fibers may ask): no Go peer, the ratio to BM_SpawnJoin is the
// point.
void BM_SpawnJoinSizedStack(benchmark::State& state) {
  spawn_join(state, {.stack_size = 16 * 1024});
}

// The same through weft::spawn, each handle joined in spawn order: what the
// shared result costs on top of go (per fiber).
void BM_SpawnHandleJoin(benchmark::State& state) {
  PerItem timer;
  weft::run(
      [&] {
        std::vector<weft::JoinHandle<void>> handles;
        handles.reserve(kSpawnBatch);
        auto batch = [&handles] {
          for (int i = 0; i < kSpawnBatch; ++i) handles.push_back(weft::spawn([] {}));
          for (auto& h : handles) h.join();
          handles.clear();
        };
        batch();  // untimed, as BM_SpawnJoin's warm-up
        timer.start();
        for (auto _ : state) batch();
        timer.stop();
      },
      workers(state));
  timer.report(state, "ns_per_fiber", kSpawnBatch);
}

// 4 fibers per worker each lock, increment, unlock; per lock/unlock pair.
constexpr int kMutexOpsPerFiber = 50'000;
void BM_MutexContended(benchmark::State& state) {
  const int fibers = 4 * static_cast<int>(state.range(0));
  PerItem timer;
  weft::run(
      [&] {
        timer.start();
        for (auto _ : state) {
          weft::Mutex mu;
          long counter = 0;
          weft::WaitGroup wg;
          for (int f = 0; f < fibers; ++f) {
            wg.add(1);
            weft::go([&] {
              for (int i = 0; i < kMutexOpsPerFiber; ++i) {
                std::lock_guard lock(mu);
                ++counter;
              }
              wg.done();
            });
          }
          wg.wait();
          benchmark::DoNotOptimize(counter);
        }
        timer.stop();
      },
      workers(state));
  timer.report(state, "ns_per_lock", static_cast<double>(fibers) * kMutexOpsPerFiber);
}

// Median overshoot of a short sleep past its deadline (the timer path end to
// end), and the machine's floor for the same wait: a raw timerfd on a thread
// with 1 ns timer slack, as the workers have. Overshoot targets are stated
// against that floor (it is ~40 us on a VM that wakes slowly).
double median(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  return xs.empty() ? 0 : xs[xs.size() / 2];
}

void BM_SleepOvershoot(benchmark::State& state) {
  const auto want = std::chrono::microseconds(state.range(1));
  std::vector<double> overshoot_us;
  weft::run(
      [&] {
        for (auto _ : state) {
          const auto start = std::chrono::steady_clock::now();
          weft::sleep_for(want);
          overshoot_us.push_back(std::chrono::duration<double, std::micro>(
                                     std::chrono::steady_clock::now() - start - want)
                                     .count());
        }
      },
      workers(state));
  state.counters["overshoot_us"] = benchmark::Counter(median(overshoot_us));
}

void BM_TimerfdFloor(benchmark::State& state) {
  const auto want = std::chrono::microseconds(state.range(1));
  std::vector<double> overshoot_us;
  std::thread waiter([&] {
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    const int fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
    for (auto _ : state) {
      const auto start = std::chrono::steady_clock::now();
      itimerspec its{};
      its.it_value.tv_nsec = static_cast<long>(std::chrono::nanoseconds(want).count());
      timerfd_settime(fd, 0, &its, nullptr);
      std::uint64_t expirations = 0;
      benchmark::DoNotOptimize(::read(fd, &expirations, sizeof expirations));
      overshoot_us.push_back(
          std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start - want)
              .count());
    }
    ::close(fd);
  });
  waiter.join();
  state.counters["overshoot_us"] = benchmark::Counter(median(overshoot_us));
}

}  // namespace

BENCHMARK(BM_ChannelPingPong)
    ->ArgName("workers")
    ->Apply(weft::bench::each_worker_count)
    ->UseRealTime();
BENCHMARK(BM_PingPongPairs)
    ->ArgName("workers")
    ->Apply(weft::bench::each_worker_count)
    ->UseRealTime()
    ->Iterations(3)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Yield)->ArgName("workers")->Apply(weft::bench::each_worker_count)->UseRealTime();
BENCHMARK(BM_YieldAlone)->ArgName("workers")->Apply(weft::bench::each_worker_count)->UseRealTime();
BENCHMARK(BM_FiberLocalRead)->Arg(1)->UseRealTime();
BENCHMARK(BM_ThreadLocalRead)->Arg(1)->UseRealTime();
BENCHMARK(BM_ThreadLocalReadNoinline)->Arg(1)->UseRealTime();
BENCHMARK(BM_SpawnJoin)
    ->ArgName("workers")
    ->Apply(weft::bench::each_worker_count)
    ->UseRealTime()
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpawnJoinSizedStack)
    ->ArgName("workers")
    ->Apply(weft::bench::each_worker_count)
    ->UseRealTime()
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SpawnHandleJoin)
    ->ArgName("workers")
    ->Apply(weft::bench::each_worker_count)
    ->UseRealTime()
    ->Iterations(2)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MutexContended)
    ->ArgName("workers")
    ->Apply(weft::bench::each_worker_count)
    ->UseRealTime()
    ->Iterations(5)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_SleepOvershoot)
    ->ArgNames({"workers", "us"})
    ->Args({2, 50})
    ->Args({2, 200})
    ->Args({2, 1000})
    ->Args({2, 10000})
    ->UseRealTime()
    ->Iterations(300)
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_TimerfdFloor)
    ->ArgNames({"workers", "us"})
    ->Args({0, 50})
    ->Args({0, 200})
    ->Args({0, 1000})
    ->Args({0, 10000})
    ->UseRealTime()
    ->Iterations(300)
    ->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
