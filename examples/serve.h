// What the example servers share: shutdown on SIGINT/SIGTERM, the runtime's
// metrics on SIGUSR1 and at shutdown, and the accept loop that runs a
// handler in a fiber per connection until shutdown.
#pragma once

#include <signal.h>

#include <cstdio>
#include <thread>
#include <utility>

#include "weft/context.h"
#include "weft/debug.h"
#include "weft/net/conn.h"
#include "weft/signal.h"
#include "weft/weft.h"

// SIGUSR1 is taken by metrics_on_sigusr1's thread with sigwait, so it is
// blocked before any thread starts: a thread that left it unblocked would
// take it and die of its default action. (SIGINT and SIGTERM need nothing
// of the kind: weft::notify_context installs a handler.)
inline void block_sigusr1() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// `kill -USR1 <pid>` prints weft::metrics() (fibers by state and wait
// reason, wake-up latencies) to stderr. Call after block_sigusr1, before
// weft::run.
inline void metrics_on_sigusr1() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  std::thread([set] {
    for (;;) {
      int sig = 0;
      sigwait(&set, &sig);
      std::fprintf(stderr, "%s", weft::metrics().to_string().c_str());
    }
  }).detach();
}

// Listens on `addr` (printing "listening on HOST:PORT" once it does), runs
// handler(conn, shutdown) in a fiber per connection, and on SIGINT/SIGTERM
// stops accepting and waits for the handlers: they see `shutdown` canceled
// (a read bound to it returns), finish what they were doing, and return.
// Returns the process's exit status.
template <class Handler>
int serve(const char* addr, Handler handler) {
  // Go's signal.NotifyContext: the first SIGINT or SIGTERM cancels it.
  // (Named, not unpacked: lambdas cannot capture unpacked names in Clang 14.)
  auto notified = weft::notify_context(weft::background(), {SIGINT, SIGTERM});
  const weft::Context& shutdown = notified.ctx;
  block_sigusr1();
  metrics_on_sigusr1();
  return weft::run([&] {
    auto ln = weft::net::listen("tcp", addr);
    if (!ln) {
      std::fprintf(stderr, "%s\n", ln.error().to_string().c_str());
      return 1;
    }
    std::printf("listening on %s\n", ln->addr().to_string().c_str());
    std::fflush(stdout);
    weft::WaitGroup connections;
    while (auto conn = ln->accept(shutdown)) {  // ends at shutdown
      connections.add(1);
      weft::go([&, c = std::move(*conn)]() mutable {
        handler(c, shutdown);
        (void)c.close();
        connections.done();
      });
    }
    connections.wait();
    std::fprintf(stderr, "%s", weft::metrics().to_string().c_str());
    return 0;
  });
}
