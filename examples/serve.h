// What the example servers share: their flags, shutdown on SIGINT/SIGTERM
// with a bounded drain, the runtime's metrics on SIGUSR1 and at shutdown,
// the accept loop that runs a handler in a fiber per connection, and the
// per-connection timeouts a server facing the Internet needs.
//
// Flags (DURATION: "500ms", "3s", "2m", or plain seconds "1.5"):
//   --grace=DURATION           after SIGINT/SIGTERM, how long connections
//                              may finish before they are cut (3s; Go's
//                              Server.Shutdown(ctx), nginx's
//                              worker_shutdown_timeout)
//   --idle-timeout=DURATION    how long a connection may wait for its next
//                              request, or a write for the peer to take
//                              some of it (60s; Go's IdleTimeout, nginx's
//                              keepalive_timeout and send_timeout)
//   --header-timeout=DURATION  how long a request may take to arrive once
//                              its first byte has (10s; Go's
//                              ReadHeaderTimeout, nginx's
//                              client_header_timeout)
//   --idle-without-stack       (servers that offer it: echo) an idle
//                              connection waits with no fiber stack
//                              (weft::net::go_when_readable): about 1 KB
//                              each instead of 5
#pragma once

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "weft/context.h"
#include "weft/debug.h"
#include "weft/net/conn.h"
#include "weft/signal.h"
#include "weft/weft.h"

struct ServeConfig {
  std::string addr;
  std::chrono::nanoseconds grace = std::chrono::seconds(3);  // under bench/load.py's 5 s
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(60);
  std::chrono::nanoseconds header_timeout = std::chrono::seconds(10);
  bool idle_without_stack = false;
};

inline bool parse_duration(std::string_view text, std::chrono::nanoseconds* out) {
  const std::string s(text);
  char* end = nullptr;
  const double value = std::strtod(s.c_str(), &end);
  const std::string_view unit(end);
  double scale = 0;
  if (unit.empty() || unit == "s") scale = 1e9;
  if (unit == "ms") scale = 1e6;
  if (unit == "m") scale = 60e9;
  if (end == s.c_str() || scale == 0 || !(value >= 0) || value > 1e6) return false;
  *out = std::chrono::nanoseconds(static_cast<long long>(value * scale));
  return true;
}

// Takes the flags above out of argv and returns the other arguments; on a
// bad flag prints `usage` and exits 2.
inline std::vector<std::string> parse_flags(int argc, char** argv, ServeConfig* config,
                                            const char* usage) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    bool ok = true;
    if (arg.starts_with("--grace=")) {
      ok = parse_duration(arg.substr(8), &config->grace);
    } else if (arg.starts_with("--idle-timeout=")) {
      ok = parse_duration(arg.substr(15), &config->idle_timeout);
    } else if (arg.starts_with("--header-timeout=")) {
      ok = parse_duration(arg.substr(17), &config->header_timeout);
    } else if (arg == "--idle-without-stack") {
      config->idle_without_stack = true;
    } else if (arg.starts_with("-")) {
      ok = false;
    } else {
      args.emplace_back(arg);
    }
    if (!ok) {
      std::fprintf(stderr, "bad argument %s\nusage: %s\n", argv[i], usage);
      std::exit(2);
    }
  }
  return args;
}

// parse_flags for a server whose one optional argument is its address.
inline ServeConfig config_from_args(int argc, char** argv, const char* default_addr,
                                    const char* usage) {
  ServeConfig config;
  auto args = parse_flags(argc, argv, &config, usage);
  if (args.size() > 1) {
    std::fprintf(stderr, "usage: %s\n", usage);
    std::exit(2);
  }
  config.addr = args.empty() ? default_addr : args[0];
  return config;
}

// A connection as its handler sees it: I/O that ends at the right moment.
// Each wait has a deadline or a context that bounds it, so no peer can
// hold a connection, or shutdown, for longer than the timeouts and grace.
// The per-request deadlines count from weft::coarse_now(): the timeouts are
// seconds, a tick early does not matter, and three reads of the full clock
// (~23 ns each here, against ~5) were about a tenth of the echo server's
// user time per request (0.6 us).
class Session {
 public:
  Session(weft::net::Conn& c, const weft::Context& shutdown, const weft::Context& cut,
          const ServeConfig& config)
      : conn(c), shutdown(shutdown), cut(cut), config_(config) {}

  weft::net::Conn& conn;
  const weft::Context& shutdown;  // SIGINT/SIGTERM: take no new requests
  const weft::Context& cut;       // the grace period is over: stop at once

  // Waits for the first bytes of the next request: ends with an error at
  // EOF, at shutdown, or after the idle timeout.
  weft::net::IoResult read_request(void* buf, std::size_t n) {
    (void)conn.set_read_deadline(weft::coarse_now() + config_.idle_timeout);
    auto r = conn.read(shutdown, buf, n);
    request_done();
    return r;
  }
  // Reads more of a request already begun. Shutdown lets it finish; the
  // header timeout, counted from the request's first byte, does not.
  weft::net::IoResult read_rest(void* buf, std::size_t n) {
    (void)conn.set_read_deadline(request_deadline_);
    return conn.read(cut, buf, n);
  }
  // A request was read whole: the header timeout of the next one, whose
  // first bytes may already be buffered (pipelining), starts now.
  void request_done() { request_deadline_ = weft::coarse_now() + config_.header_timeout; }
  // Writes all of s. A peer that takes nothing for the idle timeout (it
  // does not read) would otherwise hold the connection for good.
  bool write(std::string_view s) {
    (void)conn.set_write_deadline(weft::coarse_now() + config_.idle_timeout);
    return static_cast<bool>(conn.write(cut, s));
  }
  // Answers `reply` to a request refused and ends the connection. Closing
  // with the peer's input unread makes the kernel send a reset, which can
  // destroy the reply before the peer reads it; so, as Go's
  // closeWriteAndWait, send FIN and drop what still comes for a moment.
  void reject(std::string_view reply) {
    if (!write(reply)) return;
    (void)conn.close_write();
    (void)conn.set_read_deadline(weft::Clock::now() + std::chrono::milliseconds(500));
    char sink[16 * 1024];
    while (conn.read(cut, sink, sizeof sink)) {
    }
  }

 private:
  const ServeConfig& config_;
  weft::Clock::time_point request_deadline_;
};

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

// Errors accept4(2) reports for one connection that failed in the backlog
// (Linux passes the network's errors on; accept(2) says to retry), or
// that the poller could not take: the listener is fine. Listener::accept
// itself retries EINTR and ECONNABORTED and backs off on EMFILE, ENFILE,
// ENOBUFS and ENOMEM.
inline bool accept_error_is_transient(const std::error_code& e) {
  if (e.category() != std::system_category()) return false;
  switch (e.value()) {
    case ENETDOWN:
    case EPROTO:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
    case ENOSPC:
    case ENOMEM:
    case EPERM:  // a firewall refused it
      return true;
  }
  return false;
}

// The connections a server has open, for its drain: each is counted from
// its accept until its Ticket, which moves with it, is destroyed.
struct OpenConnections {
  weft::WaitGroup drained;
  std::atomic<int> count{0};

  class Ticket {
   public:
    explicit Ticket(OpenConnections* open) : open_(open) {
      open_->drained.add(1);
      open_->count.fetch_add(1);
    }
    Ticket(Ticket&& other) noexcept : open_(std::exchange(other.open_, nullptr)) {}
    Ticket& operator=(Ticket&&) = delete;
    ~Ticket() {
      if (!open_) return;
      open_->count.fetch_sub(1);
      open_->drained.done();
    }

   private:
    OpenConnections* open_;
  };
};

// What a connection's fibers share with the server: its config, contexts
// and handler, all of which outlive every connection (serve drains them).
template <class Handler>
struct Server {
  const ServeConfig& config;
  const weft::Context& shutdown;
  const weft::Context& cut;
  Handler& handler;
};

// Listens on config.addr (printing "listening on HOST:PORT" once it does)
// and hands each connection, with its Ticket, to start(conn, ticket, server).
// On SIGINT/SIGTERM it stops accepting and drains: handlers see `shutdown`
// canceled (a wait for the next request ends) and finish the request they
// are in; those still running after the grace period see `cut` canceled
// (every Session wait ends), and it says how many it cut. Returns the exit
// status: 0, or 1 when accept failed for good (after the same drain).
template <class Handler, class Start>
int serve_connections(const ServeConfig& config, Handler& handler, Start start) {
  // First: every thread started from here on (notify_context's watcher,
  // the runtime's) inherits SIGUSR1 blocked; one that did not would take
  // the signal and die of it.
  block_sigusr1();
  metrics_on_sigusr1();
  // cut <- stopping <- notified: each cancel reaches the contexts after it.
  // (Named, not unpacked: lambdas cannot capture unpacked names in Clang 14.)
  auto cutting = weft::with_cancel(weft::background());
  auto stopping = weft::with_cancel(cutting.ctx);
  // Go's signal.NotifyContext: the first SIGINT or SIGTERM cancels it.
  auto notified = weft::notify_context(stopping.ctx, {SIGINT, SIGTERM});
  const Server<Handler> server{config, notified.ctx, cutting.ctx, handler};
  const weft::Context& shutdown = server.shutdown;
  return weft::run([&] {
    auto ln = weft::net::listen("tcp", config.addr);
    if (!ln) {
      std::fprintf(stderr, "%s\n", ln.error().to_string().c_str());
      return 1;
    }
    std::printf("listening on %s\n", ln->addr().to_string().c_str());
    std::fflush(stdout);
    int status = 0;
    OpenConnections open;
    std::chrono::nanoseconds backoff{0};
    for (;;) {
      auto conn = ln->accept(shutdown);
      if (conn) {
        backoff = {};
        start(std::move(*conn), OpenConnections::Ticket(&open), server);
        continue;
      }
      if (shutdown.err()) break;
      std::fprintf(stderr, "%s\n", conn.error().to_string().c_str());
      if (!accept_error_is_transient(conn.error().code())) {
        status = 1;
        stopping.cancel();
        break;
      }
      // Go's http.Server: 5 ms doubling to 1 s; a signal still stops it.
      backoff = std::min<std::chrono::nanoseconds>(
          backoff.count() ? 2 * backoff : std::chrono::milliseconds(5), std::chrono::seconds(1));
      weft::with_timeout(shutdown, backoff).ctx.done().wait();
    }
    // The drain, bounded: the grace period, then the cut.
    auto drained = weft::with_cancel(weft::background());
    // The fiber owns the cancel: this frame may end (once drained is done)
    // while the cancel is still returning.
    weft::go([&open, done = std::move(drained.cancel)] {
      open.drained.wait();
      done();
    });
    weft::with_timeout(drained.ctx, config.grace).ctx.done().wait();
    if (!drained.ctx.err()) {
      const int left = open.count.load();
      cutting.cancel();
      drained.ctx.done().wait();
      std::fprintf(stderr,
                   "shutdown: cut %d connection%s still open after the %.3g s grace period\n", left,
                   left == 1 ? "" : "s", std::chrono::duration<double>(config.grace).count());
    }
    std::fprintf(stderr, "%s", weft::metrics().to_string().c_str());
    return status;
  });
}

// Runs handler(session) in a fiber per connection, for the connection's
// life (see serve_connections for the rest).
template <class Handler>
int serve(const ServeConfig& config, Handler handler) {
  return serve_connections(
      config, handler, [](weft::net::Conn c, OpenConnections::Ticket ticket, const auto& server) {
        // The handler's locals are its own (no other fiber uses them while
        // it waits on the socket), so its stack's pages may go back to the
        // kernel while the connection is idle.
        weft::go(
            [&server, c = std::move(c), t = std::move(ticket)]() mutable {
              Session session(c, server.shutdown, server.cut, server.config);
              server.handler(session);
              (void)c.close();
            },
            {.swap_idle_stack = true});
      });
}

// Runs handler(session) each time the connection has input (or its idle
// timeout, the shutdown or the peer's close came), in a fiber that waits
// for the next input with no stack (weft::net::go_when_readable) when the
// handler returns true, and closes the connection when it returns false.
// The handler answers what came without waiting for more.
template <class Handler>
int serve_on_input(const ServeConfig& config, Handler handler) {
  using Ticket = OpenConnections::Ticket;
  struct OnInput {
    const Server<Handler>* server;
    Ticket ticket;
    // Waits for the next input without a stack, as long as the idle timeout.
    static void wait(weft::net::Conn c, OnInput next) {
      const Server<Handler>& server = *next.server;
      (void)c.set_read_deadline(weft::Clock::now() + server.config.idle_timeout);
      weft::net::go_when_readable(std::move(c), server.shutdown, std::move(next));
    }
    void operator()(weft::net::Conn c) {
      Session session(c, server->shutdown, server->cut, server->config);
      if (server->handler(session)) {
        wait(std::move(c), std::move(*this));
      } else {
        (void)c.close();
      }
    }
  };
  return serve_connections(config, handler,
                           [](weft::net::Conn c, Ticket ticket, const Server<Handler>& server) {
                             OnInput::wait(std::move(c), OnInput{&server, std::move(ticket)});
                           });
}
