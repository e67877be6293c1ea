// What the example servers share: Go's signal.NotifyContext, the runtime's
// metrics on SIGUSR1 and at shutdown, and the accept loop that runs a
// handler in a fiber per connection until shutdown.
#pragma once

#include <signal.h>

#include <cstdio>
#include <memory>
#include <thread>
#include <utility>

#include "weft/context.h"
#include "weft/debug.h"
#include "weft/net/conn.h"
#include "weft/weft.h"

// A context canceled by the first SIGINT or SIGTERM. Call before weft::run,
// so that every worker thread inherits the blocked signals and only the
// waiting thread receives them.
inline weft::Context shutdown_on_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  // SIGUSR1 too (metrics_on_sigusr1), before any thread starts: a thread
  // that left one unblocked would take it and die of its default action.
  sigset_t blocked = set;
  sigaddset(&blocked, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  auto made = weft::with_cancel(weft::background());
  auto cancel = std::make_shared<weft::CancelFunc>(std::move(made.cancel));
  std::thread([set, cancel] {
    int sig = 0;
    sigwait(&set, &sig);
    (*cancel)();
  }).detach();  // lives until the process exits
  return made.ctx;
}

// `kill -USR1 <pid>` prints weft::metrics() (fibers by state and wait
// reason, wake-up latencies) to stderr. Call after shutdown_on_signals,
// which blocks SIGUSR1 in every thread.
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
  const weft::Context shutdown = shutdown_on_signals();
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
