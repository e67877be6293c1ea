// The netpoller end to end: two fibers ping-pong a byte over two pipes, so
// every hop is "write, the poller sees it, the parked reader wakes". One
// benchmark per backend (WEFT_POLLER for the run) and worker count.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>

#include "netpoll.h"
#include "weft/poller.h"
#include "weft/weft.h"

namespace {

using weft::detail::PollDesc;
using weft::detail::PollMode;
using weft::detail::PollStatus;

// Indexes are the benchmark's "backend" argument (bench/compare.py names
// its rows after them).
const char* const kBackends[] = {"epoll", "io_uring", "kqueue"};

void read_byte(PollDesc* pd, int fd) {
  char c;
  weft::detail::poll_prepare(pd, PollMode::read);
  while (read(fd, &c, 1) != 1) weft::detail::poll_wait(pd, PollMode::read);
}

void BM_FdWakeRoundTrip(benchmark::State& state) {
  const char* backend = kBackends[state.range(0)];
  // Not built in, or refused here: the run would fall back to another
  // backend and measure it under this one's name.
  if (!weft::poll::make_poller(backend, nullptr)) {
    state.SkipWithError("backend not available");
    return;
  }
  setenv("WEFT_POLLER", backend, 1);
  bool ok = true;
  weft::run(
      [&] {
        int a[2], b[2];
        if (pipe2(a, O_NONBLOCK) != 0 || pipe2(b, O_NONBLOCK) != 0) std::abort();
        std::error_code ec;
        PollDesc* pa = weft::detail::poll_open(a[0], &ec);
        PollDesc* pb = weft::detail::poll_open(b[0], &ec);
        if (!pa || !pb) {
          ok = false;
          return;
        }
        weft::WaitGroup done;
        done.add(1);
        const auto rounds = state.max_iterations;
        weft::go([&] {
          for (benchmark::IterationCount i = 0; i < rounds; ++i) {
            read_byte(pa, a[0]);
            if (write(b[1], "y", 1) != 1) std::abort();
          }
          done.done();
        });
        for (auto _ : state) {
          if (write(a[1], "x", 1) != 1) std::abort();
          read_byte(pb, b[0]);
        }
        done.wait();
        for (PollDesc* pd : {pa, pb}) {
          weft::detail::poll_unblock(pd);
          weft::detail::poll_close(pd);
        }
        for (int fd : {a[0], a[1], b[0], b[1]}) close(fd);
      },
      weft::RunOptions{.workers = static_cast<int>(state.range(1))});
  unsetenv("WEFT_POLLER");
  if (!ok) state.SkipWithError("backend not available");
  state.SetLabel(backend);
}

BENCHMARK(BM_FdWakeRoundTrip)
    ->ArgNames({"backend", "workers"})
    ->Args({0, 1})
    ->Args({1, 1})
    ->Args({2, 1})
    ->Args({0, 2})
    ->Args({1, 2})
    ->Args({2, 2})
    ->UseRealTime()
    ->Iterations(50000);

}  // namespace
