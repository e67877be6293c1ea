// Go's signal.NotifyContext for the examples: a context canceled by the first
// SIGINT or SIGTERM. Call before weft::run, so that every worker thread
// inherits the blocked signals and only the waiting thread receives them.
#pragma once

#include <signal.h>

#include <memory>
#include <thread>

#include "weft/context.h"

inline weft::Context shutdown_on_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  auto made = weft::with_cancel(weft::background());
  auto cancel = std::make_shared<weft::CancelFunc>(std::move(made.cancel));
  std::thread([set, cancel] {
    int sig = 0;
    sigwait(&set, &sig);
    (*cancel)();
  }).detach();  // lives until the process exits
  return made.ctx;
}
