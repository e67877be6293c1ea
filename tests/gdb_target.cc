// The program tests/gdb_test.cc debugs with the gdb extension
// (tools/gdb/weft_gdb.py): one worker, four named fibers parked on a
// channel, a Mutex, a sleep and a socket read, each in a function of its own
// that the backtraces must show, and one queued that has not started; then
// the main fiber stops the process with
// SIGTRAP, which gdb (the test runs it under gdb) takes as a stop. Run alone,
// the SIGTRAP ends it.
#include <sys/socket.h>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <string_view>

#include "registry.h"
#include "weft/channel.h"
#include "weft/net/conn.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

// Written after each park returns, so that the park is no tail call: the
// function stays on the fiber's stack for the backtrace to find.
volatile int g_sink = 0;

[[gnu::noinline]] void park_in_channel_receive(weft::Channel<int>& ch) {
  g_sink = ch.recv().value_or(0);
}

[[gnu::noinline]] void park_in_mutex_lock(weft::Mutex& mu) {
  mu.lock();
  mu.unlock();
  g_sink = 1;
}

[[gnu::noinline]] void park_in_sleep() {
  weft::sleep_for(std::chrono::hours(1));
  g_sink = 2;
}

[[gnu::noinline]] void park_in_socket_read(weft::net::Conn& conn) {
  std::byte b[1];
  (void)conn.read(b, sizeof b);
  g_sink = 3;
}

[[gnu::noinline]] void stop_for_gdb() {
  std::raise(SIGTRAP);
  g_sink = 4;
}

// How many of the named fibers have parked. With one worker, a fiber seen
// parked from the running main fiber has switched out: its saved frame is
// complete.
int parked_named_fibers() {
  int n = 0;
  weft::detail::fiber_registry().for_each([&](weft::detail::Fiber* f) {
    n += f->name != nullptr && f->state == weft::detail::FiberState::parked;
  });
  return n;
}

}  // namespace

int main() {
  weft::RunOptions opts;
  opts.workers = 1;
  opts.detect_deadlocks = false;
  return weft::run(
      [] {
        weft::Channel<int> ch;
        weft::Mutex mu;
        mu.lock();
        int fds[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
          std::perror("socketpair");
          return 1;
        }
        auto conn = weft::net::adopt_conn(fds[0], "unix");
        if (!conn) {
          std::fputs("adopt_conn failed\n", stderr);
          return 1;
        }
        weft::go([&] { park_in_channel_receive(ch); }, {.name = "chan-receiver"});
        weft::go([&] { park_in_mutex_lock(mu); }, {.name = "mutex-waiter"});
        // Pinned: the extension must still count it as this runtime's.
        weft::go([] { park_in_sleep(); }, {.name = "sleeper", .pinned = true});
        weft::go([&] { park_in_socket_read(*conn); }, {.name = "socket-reader"});
        while (parked_named_fibers() < 4) weft::yield();
        // Queued and never run: the worker is stopped before main yields to
        // it. Pinned, so it waits in the worker's pinned list, which the
        // extension must read as a run queue.
        weft::go([] { g_sink = 5; }, {.name = "not-started", .pinned = true});
        std::printf("gdb-target: 4 fibers parked, socket fd %d\n", fds[0]);
        std::fflush(stdout);
        stop_for_gdb();
        return 0;
      },
      opts);
}
