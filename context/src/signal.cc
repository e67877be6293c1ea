// notify_context: a process-wide handler per signal writes the signal's
// number to a self-pipe (write(2) is async-signal-safe; nothing else here
// is), and one watcher thread reads it and cancels every context waiting
// for that signal. A handler, not a mask and sigwait, because masks are per
// thread: workers started before the call would keep the signal unblocked
// and die of its default action.
#include "weft/signal.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace weft {

namespace detail {

struct SignalRegistration {
  CancelCauseFunc cancel;
  std::vector<int> signals;
};

}  // namespace detail

namespace {

using detail::SignalRegistration;

class SignalCategory final : public std::error_category {
 public:
  const char* name() const noexcept override { return "signal"; }
  // Go's os.Signal texts are strsignal's with a lower-case first letter:
  // "interrupt", "terminated", "user defined signal 2".
  std::string message(int sig) const override {
    std::string text = ::strsignal(sig);
    if (!text.empty())
      text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
    return "signal received: " + text;
  }
};

struct SignalState {
  struct sigaction previous {};
  bool installed = false;
  std::vector<std::shared_ptr<SignalRegistration>> waiting;
};

// Guards the table and each signal's disposition. Never taken by the
// handler.
std::mutex g_mu;
std::array<SignalState, NSIG> g_signals;
int g_pipe[2] = {-1, -1};

void on_signal(int sig) {
  const int saved = errno;
  const auto byte = static_cast<unsigned char>(sig);
  // Non-blocking: with the pipe full, the watcher has bytes to read and
  // will cancel every waiting context of each signal it reads anyway.
  [[maybe_unused]] const ssize_t n = ::write(g_pipe[1], &byte, 1);
  errno = saved;
}

void watch_signals() {
  unsigned char buf[64];
  for (;;) {
    const ssize_t n = ::read(g_pipe[0], buf, sizeof buf);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return;  // cannot happen while the write end stays open
    }
    for (ssize_t i = 0; i < n; ++i) {
      const int sig = buf[i];
      std::vector<std::shared_ptr<SignalRegistration>> waiting;
      {
        std::lock_guard guard(g_mu);
        waiting = g_signals[static_cast<std::size_t>(sig)].waiting;
      }
      for (const auto& reg : waiting) reg->cancel(std::error_code(sig, signal_category()));
    }
  }
}

void start_watcher() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (::pipe2(g_pipe, O_CLOEXEC) != 0) {
      std::fprintf(stderr, "weft::notify_context: pipe2: %s\n", std::strerror(errno));
      std::abort();
    }
    ::fcntl(g_pipe[1], F_SETFL, O_NONBLOCK);
    // Lives as long as the process, like Go's signal-handling goroutine.
    std::thread(watch_signals).detach();
  });
}

void unregister(const std::shared_ptr<SignalRegistration>& reg) {
  std::lock_guard guard(g_mu);
  for (int sig : reg->signals) {
    SignalState& state = g_signals[static_cast<std::size_t>(sig)];
    auto& w = state.waiting;
    w.erase(std::remove(w.begin(), w.end(), reg), w.end());
    if (w.empty() && state.installed) {
      ::sigaction(sig, &state.previous, nullptr);
      state.installed = false;
    }
  }
}

}  // namespace

const std::error_category& signal_category() noexcept {
  static const SignalCategory category;
  return category;
}

SignalStop& SignalStop::operator=(SignalStop&& other) noexcept {
  if (this != &other) {
    (*this)();
    node_ = std::move(other.node_);
  }
  return *this;
}

SignalStop::~SignalStop() {
  (*this)();
}

void SignalStop::operator()() const noexcept {
  if (!node_) return;
  unregister(node_);
  node_->cancel();
}

WithCancelResult<SignalStop> notify_context(const Context& parent,
                                            std::initializer_list<int> signals) {
  for (int sig : signals) {
    if (sig <= 0 || sig >= NSIG || sig == SIGKILL || sig == SIGSTOP) {
      std::fprintf(stderr, "weft::notify_context: signal %d cannot be caught%s\n", sig,
                   sig == SIGKILL || sig == SIGSTOP ? " (SIGKILL and SIGSTOP never can)" : "");
      std::abort();
    }
  }
  start_watcher();
  auto made = with_cancel_cause(parent);
  auto reg = std::make_shared<SignalRegistration>();
  reg->cancel = std::move(made.cancel);
  reg->signals.assign(signals.begin(), signals.end());
  std::sort(reg->signals.begin(), reg->signals.end());
  reg->signals.erase(std::unique(reg->signals.begin(), reg->signals.end()), reg->signals.end());
  {
    std::lock_guard guard(g_mu);
    for (int sig : reg->signals) {
      SignalState& state = g_signals[static_cast<std::size_t>(sig)];
      if (!state.installed) {
        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        ::sigaction(sig, &sa, &state.previous);
        state.installed = true;
      }
      state.waiting.push_back(reg);
    }
  }
  return {std::move(made.ctx), SignalStop(std::move(reg))};
}

}  // namespace weft
