// weft-wakeup: how fast a cancellation or a deadline reaches a fiber parked
// in a network call, over loopback, for each poller backend built; with
// --vs-go, the same scenarios in Go (bench/peers/go/wakeup) in the same run.
//
//   cancel-read     a fiber parked in conn.read(ctx) on an idle TCP connection;
//                   cancel() -> the reader runs again
//   cancel-accept   parked in listener.accept(ctx); cancel() -> accept returns
//   cancel-dial     parked in dial(ctx) to a listener whose accept queue is
//                   full (SYNs are dropped, connect hangs); cancel() -> returns
//   deadline-read   set_read_deadline(now + D) on an idle connection;
//                   overshoot = when read returned - the deadline
//   fanout-N        N readers, each on its own idle connection with its own
//                   child context; cancel() of the common parent -> the last
//                   reader runs again (one sample per round)
//
// The canceling fiber takes the time just before cancel(); the woken fiber as
// soon as its call returns. Percentiles are exact (nearest rank over every
// sample), not bucketed.
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "weft/net/conn.h"
#include "weft/poller.h"
#include "weft/weft.h"

namespace {

using Clock = std::chrono::steady_clock;
using Micros = std::chrono::duration<double, std::micro>;
using weft::net::Conn;
using weft::net::Listener;

struct Options {
  std::vector<std::string> scenarios;
  std::vector<std::string> backends;
  int n = 1000;
  int rounds = 0;  // 0: 20 for fanout-1000, 5 for fanout-10000
  int workers = 0;
  bool json = false;
  bool vs_go = false;
  std::string go_peer;  // path to the Go program; built when empty
  std::string svg = "wakeup.svg";
  std::chrono::nanoseconds deadline = std::chrono::milliseconds(1);
  std::chrono::nanoseconds settle = std::chrono::microseconds(200);
};

struct Row {
  std::string scenario, backend, runtime;
  std::size_t n = 0;
  double p50 = 0, p90 = 0, p99 = 0, p999 = 0, max = 0;
  std::vector<double> sorted_us;  // for the picture (weft rows only)
};

const char* const kAllScenarios[] = {"cancel-read",   "cancel-accept", "cancel-dial",
                                     "deadline-read", "fanout-1000",   "fanout-10000"};

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "weft-wakeup: %s\n", what.c_str());
  std::exit(1);
}

double nearest_rank(const std::vector<double>& sorted, double p) {
  auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  rank = std::clamp<std::size_t>(rank, 1, sorted.size());
  return sorted[rank - 1];
}

Row summarize(std::string scenario, std::string backend, std::vector<double> us) {
  std::sort(us.begin(), us.end());
  Row r;
  r.scenario = std::move(scenario);
  r.backend = std::move(backend);
  r.runtime = "weft";
  r.n = us.size();
  r.p50 = nearest_rank(us, 0.50);
  r.p90 = nearest_rank(us, 0.90);
  r.p99 = nearest_rank(us, 0.99);
  r.p999 = nearest_rank(us, 0.999);
  r.max = us.back();
  r.sorted_us = std::move(us);
  return r;
}

// ---- loopback fixtures -----------------------------------------------------

void raise_nofile(rlim_t need) {
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_cur >= need) return;
  rlimit want = r;
  want.rlim_cur = std::min(need, r.rlim_max);
  setrlimit(RLIMIT_NOFILE, &want);
  if (want.rlim_cur < need) {
    fail("needs " + std::to_string(need) + " open files, the hard RLIMIT_NOFILE is " +
         std::to_string(r.rlim_max) + " (raise it, e.g. `ulimit -Hn " + std::to_string(need) +
         "` as root, or run fewer readers)");
  }
}

int somaxconn() {
  std::ifstream f("/proc/sys/net/core/somaxconn");
  int v = 0;
  return f >> v && v > 0 ? v : 128;
}

// A plain listening socket on 127.0.0.1 that nobody accepts from: connections
// wait established in its queue and cost us no descriptor each.
struct RawListener {
  int fd = -1;
  std::string addr;
  explicit RawListener(int backlog) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) != 0 ||
        ::listen(fd, backlog) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      fail(std::string("raw listener: ") + std::strerror(errno));
    }
    addr = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
  }
  ~RawListener() {
    if (fd >= 0) ::close(fd);
  }
  RawListener(const RawListener&) = delete;
  RawListener& operator=(const RawListener&) = delete;
};

Conn must_dial(const std::string& addr) {
  auto c = weft::net::dial_timeout("tcp", addr, std::chrono::seconds(2));
  if (!c) fail("dial " + addr + ": " + c.error().to_string());
  return std::move(*c);
}

// The fixtures below make and close thousands of sockets from one fiber, and
// a loopback connect or a close never parks: without a yield now and then
// the runtime's watchdog would rightly report this fiber for holding its
// worker (10 ms), a warning about the benchmark, not the user's machine.
constexpr int kYieldEvery = 64;
constexpr int kPerListener = 512;

// n established, idle loopback connections (our ends only; the Go peer makes
// its own the same way).
struct IdleConns {
  std::vector<std::unique_ptr<RawListener>> listeners;
  std::vector<Conn> conns;
  explicit IdleConns(int n) {
    raise_nofile(static_cast<rlim_t>(n) + 256);
    // Closing a listener resets every connection in its queue in one system
    // call: a short queue keeps each close well under the watchdog's 10 ms.
    const int per_listener = std::min(somaxconn(), kPerListener);
    conns.reserve(static_cast<std::size_t>(n));
    while (static_cast<int>(conns.size()) < n) {
      listeners.push_back(std::make_unique<RawListener>(per_listener));
      for (int i = 0; i < per_listener && static_cast<int>(conns.size()) < n; ++i) {
        conns.push_back(must_dial(listeners.back()->addr));
        if (conns.size() % kYieldEvery == 0) weft::yield();
      }
    }
  }
  ~IdleConns() {
    while (!conns.empty()) {
      conns.pop_back();
      if (conns.size() % kYieldEvery == 0) weft::yield();
    }
    while (!listeners.empty()) {
      listeners.pop_back();
      weft::yield();
    }
  }
  IdleConns(const IdleConns&) = delete;
  IdleConns& operator=(const IdleConns&) = delete;
};

// A listener whose accept queue is full: a connect to it hangs in SYN-SENT
// (Linux drops SYNs for a full queue), which is what cancel-dial needs.
struct FullListener {
  RawListener raw{0};
  std::vector<Conn> fill;
  FullListener() {
    for (int i = 0; i < 64; ++i) {
      auto c = weft::net::dial_timeout("tcp", raw.addr, std::chrono::milliseconds(200));
      if (!c) {
        if (!c.error().is_timeout()) fail("filling the accept queue: " + c.error().to_string());
        return;
      }
      fill.push_back(std::move(*c));
    }
    fail("64 connects to a backlog-0 listener all completed: connect does not hang here");
  }
};

// ---- measuring ---------------------------------------------------------------

// Bounds the wait for a woken fiber: a scenario that loses a wakeup fails
// instead of hanging. Armed before the clock starts, so that arming it (a new
// earliest timer wakes the worker blocked in the poller) is not measured.
class Deadman {
 public:
  Deadman() : made_(weft::with_timeout(weft::background(), std::chrono::seconds(5))) {}
  Clock::time_point await(weft::Channel<Clock::time_point>& woke, const char* what) {
    std::optional<Clock::time_point> t;
    weft::select(weft::on_recv(woke, [&](std::optional<Clock::time_point> v) { t = v; }),
                 weft::on_done(made_.ctx, [] {}));
    if (!t) fail(std::string(what) + ": the parked fiber was not woken within 5 s");
    return *t;
  }

 private:
  weft::WithCancelResult<weft::CancelFunc> made_;
};

// One sample per iteration: start `op` parked on a fresh context, let it
// settle into the poller, cancel, and time until `op` returned.
template <class Op>
std::vector<double> cancel_samples(const Options& o, int n, const char* what, Op op) {
  std::vector<double> us;
  const int warm = std::max(10, n / 10);
  for (int i = 0; i < warm + n; ++i) {
    auto [ctx, cancel] = weft::with_cancel(weft::background());
    weft::Channel<Clock::time_point> woke(1);
    weft::go([&, c = ctx] {
      op(c);
      if (!woke.send(Clock::now())) fail("woke: channel closed");
    });
    weft::sleep_for(o.settle);
    Deadman deadman;
    const auto t0 = Clock::now();
    cancel();
    const auto t1 = deadman.await(woke, what);
    if (i >= warm) us.push_back(Micros(t1 - t0).count());
  }
  return us;
}

void expect_canceled(const weft::net::OpError& e, const char* what) {
  if (!weft::is_canceled(e.err))
    fail(std::string(what) + ": want a cancellation, got " + e.to_string());
}

std::vector<double> cancel_read(const Options& o) {
  auto ln = weft::net::listen("tcp", "127.0.0.1:0");
  if (!ln) fail(ln.error().to_string());
  Conn client = must_dial(ln->addr().to_string());
  auto server = ln->accept();
  if (!server) fail(server.error().to_string());
  return cancel_samples(o, o.n, "cancel-read", [&](const weft::Context& ctx) {
    char byte;
    auto r = client.read(ctx, &byte, 1);
    if (r) fail("cancel-read: read returned data on an idle connection");
    expect_canceled(r.error(), "cancel-read");
  });
}

std::vector<double> cancel_accept(const Options& o) {
  auto ln = weft::net::listen("tcp", "127.0.0.1:0");
  if (!ln) fail(ln.error().to_string());
  return cancel_samples(o, o.n, "cancel-accept", [&](const weft::Context& ctx) {
    auto c = ln->accept(ctx);
    if (c) fail("cancel-accept: accept returned a connection nobody made");
    expect_canceled(c.error(), "cancel-accept");
  });
}

std::vector<double> cancel_dial(const Options& o) {
  FullListener full;
  // Each hung connect leaves a SYN_SENT socket; fewer samples keep this short.
  return cancel_samples(o, std::min(o.n, 300), "cancel-dial", [&](const weft::Context& ctx) {
    auto c = weft::net::Dialer{}.dial(ctx, "tcp", full.raw.addr);
    if (c) fail("cancel-dial: connected to a full listener");
    expect_canceled(c.error(), "cancel-dial");
  });
}

std::vector<double> deadline_read(const Options& o) {
  auto ln = weft::net::listen("tcp", "127.0.0.1:0");
  if (!ln) fail(ln.error().to_string());
  Conn client = must_dial(ln->addr().to_string());
  auto server = ln->accept();
  if (!server) fail(server.error().to_string());
  std::vector<double> us;
  const int warm = std::max(10, o.n / 10);
  for (int i = 0; i < warm + o.n; ++i) {
    const auto deadline = Clock::now() + o.deadline;
    (void)client.set_read_deadline(deadline);
    char byte;
    auto r = client.read(&byte, 1);
    const auto t1 = Clock::now();
    if (r || !r.error().is_timeout()) fail("deadline-read: want a timeout");
    if (i >= warm) us.push_back(Micros(t1 - deadline).count());
  }
  return us;
}

std::vector<double> fanout(const Options& o, int readers, int rounds) {
  IdleConns idle(readers);
  std::vector<double> us;
  for (int round = 0; round < 1 + rounds; ++round) {  // the first warms up
    auto made = weft::with_cancel(weft::background());
    const weft::Context parent = made.ctx;
    std::atomic<int> started{0}, left{readers};
    weft::Channel<Clock::time_point> last(1);
    int spawned = 0;
    for (Conn& c : idle.conns) {
      weft::go(
          [&, conn = &c] {
            auto [ctx, cancel_child] = weft::with_cancel(parent);
            started.fetch_add(1, std::memory_order_relaxed);
            char byte;
            auto r = conn->read(ctx, &byte, 1);
            const auto t = Clock::now();
            if (r) fail("fanout: read returned data on an idle connection");
            if (left.fetch_sub(1, std::memory_order_acq_rel) == 1 && !last.send(t)) {
              fail("fanout: channel closed");
            }
          },
          weft::SpawnOptions{.stack_size = 16 * 1024});
      if (++spawned % kYieldEvery == 0) weft::yield();
    }
    while (started.load(std::memory_order_relaxed) < readers) weft::yield();
    weft::sleep_for(o.settle + std::chrono::microseconds(readers));
    Deadman deadman;
    const auto t0 = Clock::now();
    made.cancel();
    const auto t1 = deadman.await(last, "fanout");
    if (round > 0) us.push_back(Micros(t1 - t0).count());
  }
  return us;
}

// ---- output --------------------------------------------------------------

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, v >= 100 ? "%.0f" : "%.1f", v);
  return buf;
}

void print_table(const std::vector<Row>& rows, const std::map<std::string, const Row*>& go) {
  std::printf("%-14s %-10s %-7s %6s %9s %9s %9s %9s %9s", "scenario", "backend", "runtime", "n",
              "p50 us", "p90 us", "p99 us", "p99.9 us", "max us");
  std::printf(go.empty() ? "\n" : "   go/weft p50, p99\n");
  for (const Row& r : rows) {
    std::printf("%-14s %-10s %-7s %6zu %9s %9s %9s %9s %9s", r.scenario.c_str(), r.backend.c_str(),
                r.runtime.c_str(), r.n, fmt(r.p50).c_str(), fmt(r.p90).c_str(), fmt(r.p99).c_str(),
                fmt(r.p999).c_str(), fmt(r.max).c_str());
    auto g = go.find(r.scenario);
    if (r.runtime == "weft" && g != go.end() && r.p50 > 0 && r.p99 > 0) {
      std::printf("   %.2fx, %.2fx", g->second->p50 / r.p50, g->second->p99 / r.p99);
    }
    std::printf("\n");
  }
}

void print_json(const std::vector<Row>& rows) {
  std::printf("[");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    std::printf(
        "%s\n  {\"scenario\": \"%s\", \"backend\": \"%s\", \"runtime\": \"%s\", \"n\": %zu, "
        "\"p50_us\": %.3f, \"p90_us\": %.3f, \"p99_us\": %.3f, \"p999_us\": %.3f, \"max_us\": "
        "%.3f}",
        i ? "," : "", r.scenario.c_str(), r.backend.c_str(), r.runtime.c_str(), r.n, r.p50, r.p90,
        r.p99, r.p999, r.max);
  }
  std::printf("\n]\n");
}

// One panel per scenario: latency (log scale) against percentile on
// HdrHistogram's axis (0, 90, 99, 99.9, ...), one curve per backend and Go.
void write_svg(const std::string& path, const std::vector<Row>& rows) {
  std::vector<std::string> scenarios;
  for (const Row& r : rows) {
    if (std::find(scenarios.begin(), scenarios.end(), r.scenario) == scenarios.end()) {
      scenarios.push_back(r.scenario);
    }
  }
  const int pw = 420, ph = 260, ml = 60, mb = 40, cols = 2;
  const int rows_n = static_cast<int>((scenarios.size() + cols - 1) / cols);
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << cols * pw << "' height='"
      << rows_n * ph + 30 << "' font-family='sans-serif' font-size='11'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='10' y='18' font-size='14'>weft-wakeup: latency by percentile (log "
         "scales)</text>\n";
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};
  for (std::size_t s = 0; s < scenarios.size(); ++s) {
    const int ox = static_cast<int>(s % cols) * pw, oy = 30 + static_cast<int>(s / cols) * ph;
    const int w = pw - ml - 20, h = ph - mb - 30;
    double lo = 1e18, hi = 0;
    for (const Row& r : rows) {
      if (r.scenario != scenarios[s]) continue;
      lo = std::min(lo, std::max(0.1, r.sorted_us.empty() ? r.p50 : r.sorted_us.front()));
      hi = std::max(hi, r.max);
    }
    lo = std::pow(10, std::floor(std::log10(lo)));
    hi = std::pow(10, std::ceil(std::log10(std::max(hi, lo * 10))));
    auto y_of = [&](double v) {
      return oy + 20 + h -
             h * (std::log10(std::max(v, lo)) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
    };
    const double max_nines = 4;  // up to 99.99%
    auto x_of = [&](double p) {  // p in [0,1): -log10(1-p) nines
      const double nines = std::min(max_nines, -std::log10(std::max(1e-9, 1 - p)));
      return ox + ml + w * nines / max_nines;
    };
    svg << "<text x='" << ox + ml << "' y='" << oy + 12 << "' font-size='13'>" << scenarios[s]
        << "</text>\n<rect x='" << ox + ml << "' y='" << oy + 20 << "' width='" << w << "' height='"
        << h << "' fill='none' stroke='#888'/>\n";
    for (double v = lo; v <= hi * 1.001; v *= 10) {
      svg << "<text x='" << ox + ml - 4 << "' y='" << y_of(v) + 4 << "' text-anchor='end'>"
          << fmt(v) << " us</text>\n";
    }
    const char* labels[] = {"0%", "90%", "99%", "99.9%", "99.99%"};
    for (int k = 0; k <= 4; ++k) {
      svg << "<text x='" << ox + ml + w * k / 4 << "' y='" << oy + 20 + h + 14
          << "' text-anchor='middle'>" << labels[k] << "</text>\n";
    }
    int curve = 0;
    for (const Row& r : rows) {
      if (r.scenario != scenarios[s]) continue;
      const char* color = colors[curve % 5];
      svg << "<polyline fill='none' stroke='" << color << "' stroke-width='1.5' points='";
      if (!r.sorted_us.empty()) {
        const std::size_t n = r.sorted_us.size();
        for (std::size_t i = 0; i < n; ++i) {
          svg << x_of(static_cast<double>(i) / static_cast<double>(n)) << ','
              << y_of(r.sorted_us[i]) << ' ';
        }
      } else {  // a Go row: only its percentiles
        const double ps[] = {0.5, 0.9, 0.99, 0.999};
        const double vs[] = {r.p50, r.p90, r.p99, r.p999};
        for (int k = 0; k < 4; ++k) svg << x_of(ps[k]) << ',' << y_of(vs[k]) << ' ';
      }
      svg << "'/>\n<text x='" << ox + ml + 6 << "' y='" << oy + 34 + 13 * curve << "' fill='"
          << color << "'>" << r.runtime << (r.runtime == "weft" ? " " + r.backend : "") << ": p50 "
          << fmt(r.p50) << " us</text>\n";
      ++curve;
    }
  }
  svg << "</svg>\n";
  std::ofstream out(path);
  out << svg.str();
  if (!out) fail("cannot write " + path);
}

// ---- the Go peer -----------------------------------------------------------

std::string run_command(const std::string& cmd, int* status) {
  std::string out;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return out;
  char buf[4096];
  while (std::size_t k = std::fread(buf, 1, sizeof buf, p)) out.append(buf, k);
  *status = ::pclose(p);
  return out;
}

// The Go peer's JSON rows: flat objects with known keys.
std::vector<Row> parse_go_rows(const std::string& json) {
  std::vector<Row> rows;
  std::size_t pos = 0;
  while ((pos = json.find('{', pos)) != std::string::npos) {
    const std::size_t end = json.find('}', pos);
    if (end == std::string::npos) break;
    const std::string obj = json.substr(pos, end - pos);
    auto str = [&](const char* key) {
      const std::size_t k = obj.find(std::string("\"") + key + "\"");
      if (k == std::string::npos) return std::string();
      const std::size_t q1 = obj.find('"', obj.find(':', k) + 1), q2 = obj.find('"', q1 + 1);
      return obj.substr(q1 + 1, q2 - q1 - 1);
    };
    auto num = [&](const char* key) {
      const std::size_t k = obj.find(std::string("\"") + key + "\"");
      return k == std::string::npos ? 0.0
                                    : std::strtod(obj.c_str() + obj.find(':', k) + 1, nullptr);
    };
    Row r;
    r.scenario = str("scenario");
    r.backend = str("backend");
    r.runtime = "go";
    r.n = static_cast<std::size_t>(num("n"));
    r.p50 = num("p50_us");
    r.p90 = num("p90_us");
    r.p99 = num("p99_us");
    r.p999 = num("p999_us");
    r.max = num("max_us");
    rows.push_back(std::move(r));
    pos = end + 1;
  }
  return rows;
}

std::vector<Row> run_go(const Options& o, int workers) {
  std::string exe = o.go_peer;
  int status = 0;
  if (exe.empty()) {
    exe = "/tmp/weft-go-wakeup";
    const char* src = "bench/peers/go/wakeup";
    run_command(std::string("cd ") + src + " && go build -o " + exe + " . 2>&1", &status);
    if (status != 0) {
      std::fprintf(stderr, "weft-wakeup: --vs-go: building %s failed (is Go installed?)\n", src);
      return {};
    }
  }
  std::string names;
  for (const auto& s : o.scenarios) names += (names.empty() ? "" : ",") + s;
  std::string cmd = exe + " -json -scenarios " + names + " -n " + std::to_string(o.n) + " -procs " +
                    std::to_string(workers);
  if (o.rounds) cmd += " -rounds " + std::to_string(o.rounds);
  const std::string out = run_command(cmd, &status);
  if (status != 0) std::fprintf(stderr, "weft-wakeup: the Go peer exited with status %d\n", status);
  return parse_go_rows(out);
}

// ---- command line ------------------------------------------------------------

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

void usage(FILE* to) {
  std::fprintf(to, R"(usage: weft-wakeup [options]

Measures how long a fiber parked in a network call takes to run again after
its context is canceled (or its deadline passes), over loopback, once per
poller backend. Prints n, p50, p90, p99, p99.9 and max in microseconds.

  --scenarios LIST   comma-separated, default all:
                       cancel-read    cancel while parked in conn.read(ctx)
                       cancel-accept  cancel while parked in listener.accept(ctx)
                       cancel-dial    cancel while dial(ctx) hangs on a full listener
                       deadline-read  overshoot of a read deadline (see --deadline)
                       fanout-1000    one parent cancels 1,000 parked readers;
                       fanout-10000   time until the last one runs (per round)
  --n N              samples per scenario (default 1000; cancel-dial at most 300)
  --rounds R         rounds for the fan-out scenarios (default 20 / 5)
  --backends LIST    poller backends (default: every one built: %s)
  --workers N        worker threads (default: WEFT_PROCS or the CPU count)
  --deadline D       deadline-read's deadline, e.g. 1ms, 200us (default 1ms)
  --json             one JSON array of rows instead of the table
  --svg PATH         where the latency picture goes (default wakeup.svg; '' none)
  --vs-go            also run bench/peers/go/wakeup (needs `go`) and print
                     Go/weft ratios for p50 and p99
  --go-peer PATH     a prebuilt Go peer instead of building it
  --help             this text
)",
               [] {
                 std::string all;
                 for (const char* const* b = weft::poll::available_backends(); *b; ++b) {
                   all += (all.empty() ? "" : ", ") + std::string(*b);
                 }
                 return all;
               }()
                   .c_str());
}

std::chrono::nanoseconds parse_duration(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  const std::string unit = end;
  double ns = 0;
  if (unit == "ns")
    ns = v;
  else if (unit == "us")
    ns = v * 1e3;
  else if (unit == "ms")
    ns = v * 1e6;
  else if (unit == "s")
    ns = v * 1e9;
  else
    fail("--deadline " + s + ": want a number with ns, us, ms or s");
  if (ns <= 0) fail("--deadline " + s + ": must be positive");
  return std::chrono::nanoseconds(static_cast<std::int64_t>(ns));
}

int positive(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (*end || n < 1 || n > 10'000'000) fail(flag + " " + v + ": want a positive whole number");
  return static_cast<int>(n);
}

Options parse(int argc, char** argv) {
  Options o;
  o.scenarios.assign(std::begin(kAllScenarios), std::end(kAllScenarios));
  for (const char* const* b = weft::poll::available_backends(); *b; ++b)
    o.backends.emplace_back(*b);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string value;
    if (const auto eq = a.find('='); a.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    auto next = [&]() -> std::string {
      if (!value.empty()) return value;
      if (i + 1 >= argc) fail(a + " needs a value (see --help)");
      return argv[++i];
    };
    if (a == "--help" || a == "-h") {
      usage(stdout);
      std::exit(0);
    } else if (a == "--scenarios") {
      o.scenarios = split(next());
      for (const auto& s : o.scenarios) {
        if (std::find(std::begin(kAllScenarios), std::end(kAllScenarios), s) ==
            std::end(kAllScenarios)) {
          fail("unknown scenario '" + s + "' (see --help)");
        }
      }
    } else if (a == "--backends") {
      o.backends = split(next());
      for (const auto& b : o.backends) {
        bool known = false;
        for (const char* const* k = weft::poll::available_backends(); *k; ++k) known |= b == *k;
        if (!known) fail("backend '" + b + "' is not built into this weft (see --help)");
      }
    } else if (a == "--n") {
      o.n = positive(a, next());
    } else if (a == "--rounds") {
      o.rounds = positive(a, next());
    } else if (a == "--workers") {
      o.workers = positive(a, next());
    } else if (a == "--deadline") {
      o.deadline = parse_duration(next());
    } else if (a == "--json") {
      o.json = true;
    } else if (a == "--svg") {
      o.svg = next();
    } else if (a == "--vs-go") {
      o.vs_go = true;
    } else if (a == "--go-peer") {
      o.go_peer = next();
      o.vs_go = true;
    } else {
      fail("unknown option '" + a + "' (see --help)");
    }
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  std::vector<Row> rows;
  int workers_used = 0;
  for (const std::string& backend : o.backends) {
    ::setenv("WEFT_POLLER", backend.c_str(), 1);
    weft::run(
        [&] {
          workers_used = weft::num_workers();
          for (const std::string& s : o.scenarios) {
            if (!o.json) std::fprintf(stderr, "  %s on %s ...\n", s.c_str(), backend.c_str());
            std::vector<double> us;
            if (s == "cancel-read") us = cancel_read(o);
            if (s == "cancel-accept") us = cancel_accept(o);
            if (s == "cancel-dial") us = cancel_dial(o);
            if (s == "deadline-read") us = deadline_read(o);
            if (s == "fanout-1000") us = fanout(o, 1000, o.rounds ? o.rounds : 20);
            if (s == "fanout-10000") us = fanout(o, 10000, o.rounds ? o.rounds : 5);
            rows.push_back(summarize(s, backend, std::move(us)));
          }
        },
        weft::RunOptions{.workers = o.workers});
  }
  std::map<std::string, const Row*> go_by_scenario;
  std::vector<Row> go_rows;
  if (o.vs_go) {
    if (!o.json) std::fprintf(stderr, "  the Go peer, GOMAXPROCS=%d ...\n", workers_used);
    go_rows = run_go(o, workers_used);
  }
  // Each Go row right after its scenario's weft rows.
  std::vector<Row> all;
  for (const std::string& s : o.scenarios) {
    for (const Row& r : rows) {
      if (r.scenario == s) all.push_back(r);
    }
    for (const Row& r : go_rows) {
      if (r.scenario == s) all.push_back(r);
    }
  }
  for (const Row& r : all) {
    if (r.runtime == "go") go_by_scenario[r.scenario] = &r;
  }
  if (o.json) {
    print_json(all);
  } else {
    std::printf("weft-wakeup: %d workers, over 127.0.0.1\n", workers_used);
    print_table(all, go_by_scenario);
  }
  if (!o.svg.empty()) {
    write_svg(o.svg, all);
    if (!o.json) std::printf("picture: %s\n", o.svg.c_str());
  }
  return 0;
}
