// Context costs (issue 3 targets), each beside bench/peers/go/runtimebench/context.go.
#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <vector>

#include "bench_workers.h"
#include "weft/weft.h"

namespace {

using Clock = std::chrono::steady_clock;

weft::RunOptions workers(int n) {
  return weft::RunOptions{.workers = n};
}

// with_cancel on a cancelable parent (so the child registers with it), then
// cancel (so it detaches again): Go's WithCancel + cancel().
void BM_ContextCreateCancel(benchmark::State& state) {
  weft::run(
      [&] {
        auto [parent, cancel_parent] = weft::with_cancel(weft::background());
        for (auto _ : state) {
          auto [child, cancel] = weft::with_cancel(parent);
          cancel();
          benchmark::DoNotOptimize(child);
        }
      },
      workers(static_cast<int>(state.range(0))));
}

const weft::ContextKey<int> kWanted("wanted");
const weft::ContextKey<int> kOther("other");

// Value lookup for a key bound `depth` contexts up the chain.
void BM_ContextValue(benchmark::State& state) {
  const int depth = static_cast<int>(state.range(0));
  weft::Context ctx = weft::with_value(weft::background(), kWanted, 42);
  for (int i = 1; i < depth; ++i) ctx = weft::with_value(ctx, kOther, i);
  for (auto _ : state) benchmark::DoNotOptimize(ctx.value(kWanted));
}

// One parent, `n` children, a fiber parked in each child's done().wait();
// the time from the parent's cancel() until the last of them has run.
void BM_ContextCancelFanout(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  weft::run(
      [&] {
        for (auto _ : state) {
          auto [parent, cancel_parent] = weft::with_cancel(weft::background());
          std::vector<weft::CancelFunc> cancels;
          cancels.reserve(static_cast<std::size_t>(n));
          std::atomic<int> parked{0}, left{n};
          std::atomic<Clock::rep> last_ns{0};
          weft::WaitGroup all_woke;
          all_woke.add(n);
          for (int i = 0; i < n; ++i) {
            auto made = weft::with_cancel(parent);
            cancels.push_back(std::move(made.cancel));
            weft::go(
                [&, child = made.ctx] {
                  parked.fetch_add(1, std::memory_order_relaxed);
                  child.done().wait();
                  if (left.fetch_sub(1, std::memory_order_acq_rel) == 1) {
                    last_ns.store(Clock::now().time_since_epoch().count());
                  }
                  all_woke.done();
                },
                weft::SpawnOptions{.stack_size = 16 * 1024});
          }
          // Every waiter must be parked before the clock starts.
          while (parked.load(std::memory_order_relaxed) < n) weft::yield();
          for (int spins = 0; spins < 64; ++spins) weft::yield();
          const auto t0 = Clock::now();
          cancel_parent();
          all_woke.wait();
          state.SetIterationTime(
              std::chrono::duration<double>(Clock::duration(last_ns.load()) - t0.time_since_epoch())
                  .count());
        }
      },
      workers(static_cast<int>(state.range(1))));
}

// Parents the user implemented (issue 14), beside Go's same types: one with
// a Done of its own (its children each need a watcher, in Go a goroutine
// each) and one that wraps a weft cancel context and keeps its Done (its
// children register with that context, no watcher in either).
class OwnDoneParent final : public weft::ContextImpl {
 public:
  OwnDoneParent() : own_(weft::with_cancel(weft::background())) {}
  weft::Done done() const noexcept override { return own_.ctx.done(); }
  std::error_code err() const noexcept override { return own_.ctx.err(); }

 private:
  weft::WithCancelResult<weft::CancelFunc> own_;
};

class WrappingParent final : public weft::ContextImpl {
 public:
  explicit WrappingParent(weft::Context inner) : inner_(std::move(inner)) {}
  weft::Done done() const noexcept override { return inner_.done(); }
  std::error_code err() const noexcept override { return inner_.err(); }
  const void* value(const void* key) const noexcept override { return inner_.value(key); }

 private:
  weft::Context inner_;
};

// 10,000 children derived from such a parent, then cancelled, until every
// watcher has ended: ns per child, and the watcher fibers alive once all
// children exist (Go: runtime.NumGoroutine() over its baseline).
constexpr int kCustomChildren = 10'000;
void BM_ContextCustomChild(benchmark::State& state) {
  const bool wraps = state.range(0) == 1;
  double seconds = 0, alive = 0;
  weft::run(
      [&] {
        auto inner = weft::with_cancel(weft::background());
        const weft::Context parent =
            wraps ? weft::make_context(std::make_shared<WrappingParent>(inner.ctx))
                  : weft::make_context(std::make_shared<OwnDoneParent>());
        std::vector<weft::CancelFunc> cancels;
        cancels.reserve(kCustomChildren);
        for (auto _ : state) {
          const std::int64_t base = weft::detail::context_watchers_alive();
          const auto t0 = Clock::now();
          for (int i = 0; i < kCustomChildren; ++i) {
            cancels.push_back(weft::with_cancel(parent).cancel);
          }
          alive = static_cast<double>(weft::detail::context_watchers_alive() - base);
          cancels.clear();  // cancels each child
          while (weft::detail::context_watchers_alive() > base) weft::yield();
          seconds += std::chrono::duration<double>(Clock::now() - t0).count();
        }
      },
      workers(static_cast<int>(state.range(1))));
  state.counters["ns_per_child"] =
      seconds * 1e9 / (static_cast<double>(state.iterations()) * kCustomChildren);
  state.counters["fibers_alive"] = alive;
}

}  // namespace

BENCHMARK(BM_ContextCreateCancel)
    ->ArgName("workers")
    ->Apply(weft::bench::each_worker_count)
    ->UseRealTime();
BENCHMARK(BM_ContextValue)->ArgName("depth")->Arg(1)->Arg(10)->Arg(100);
BENCHMARK(BM_ContextCustomChild)
    ->ArgNames({"wraps", "workers"})
    ->Apply([](benchmark::internal::Benchmark* b) {
      for (long w : weft::bench::worker_counts()) {
        b->Args({0, w});
        b->Args({1, w});
      }
    })
    ->UseRealTime()
    ->Iterations(5)
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_ContextCancelFanout)
    ->ArgNames({"children", "workers"})
    ->Apply([](benchmark::internal::Benchmark* b) {
      for (long w : weft::bench::worker_counts()) b->Args({10'000, w});
    })
    ->UseManualTime()
    ->Unit(benchmark::kMicrosecond)
    ->Iterations(20);
