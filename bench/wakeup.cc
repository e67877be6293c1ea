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
#include <cctype>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
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
  int rounds = 100;  // enough for a p99 from the fan-out scenarios too
  int workers = 0;
  bool json = false;
  bool vs_go = false;
  std::string go_peer;  // path to the Go program; built when empty
  std::string svg = "wakeup.svg";
  std::chrono::nanoseconds deadline = std::chrono::milliseconds(1);
  std::chrono::nanoseconds settle = std::chrono::microseconds(200);
};

// The percentiles reported, and what a reader is told each scenario measures.
struct Percentile {
  double p;
  const char* name;
};
constexpr Percentile kPercentiles[] = {
    {0.50, "p50"}, {0.90, "p90"}, {0.99, "p99"}, {0.999, "p99.9"}};

struct Scenario {
  const char* name;
  const char* measures;
};
constexpr Scenario kScenarios[] = {
    {"cancel-read", "cancel() -> a reader parked in read(ctx) on an idle connection runs again"},
    {"cancel-accept", "cancel() -> a fiber parked in accept(ctx) runs again"},
    {"cancel-dial", "cancel() -> a fiber parked in dial(ctx) to a full listener runs again"},
    {"deadline-read", "how late read() returns after its read deadline (--deadline) passed"},
    {"fanout-1000", "one cancel() of a parent -> the last of 1,000 readers parked on children"},
    {"fanout-10000", "one cancel() of a parent -> the last of 10,000 readers parked on children"},
};

struct Row {
  std::string scenario, backend, runtime;
  std::vector<double> sorted_us;  // every sample: the table and both curves

  std::size_t n() const { return sorted_us.size(); }
  double max() const { return sorted_us.back(); }
  // Nearest rank over every sample; nothing where n is too small for p to
  // differ from the maximum (at least one sample must lie above it, so p99
  // needs 100 samples and p99.9 1,000).
  std::optional<double> at(double p) const {
    const double above = static_cast<double>(n()) * (1 - p);
    if (above < 1 - 1e-9) return std::nullopt;
    auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(n())));
    rank = std::clamp<std::size_t>(rank, 1, n());
    return sorted_us[rank - 1];
  }
};

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "weft-wakeup: %s\n", what.c_str());
  std::exit(1);
}

Row summarize(std::string scenario, std::string backend, std::string runtime,
              std::vector<double> us) {
  if (us.empty()) fail(scenario + ": no samples");
  std::sort(us.begin(), us.end());
  return Row{std::move(scenario), std::move(backend), std::move(runtime), std::move(us)};
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
// The fan-out's readers: small stacks, for 10,000 of them (pinned: see
// map_reader_stacks).
const weft::SpawnOptions kReaderStack{.stack_size = 16 * 1024};
const weft::SpawnOptions kPinnedReaderStack{.stack_size = 16 * 1024, .pinned = true};
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
  return cancel_samples(o, o.n, "cancel-dial", [&](const weft::Context& ctx) {
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

// The readers' stacks, mapped before the first round by fibers pinned to
// one worker, then pooled for every round. Two workers mapping thousands of
// fresh stacks at once contend in the kernel (the mm's locks) for
// milliseconds at a stretch, and the watchdog reports the worker held: true
// of such a burst, but a warning about this benchmark's setup.
void map_reader_stacks(int readers) {
  weft::WaitGroup started, release, ended;
  release.add(1);
  for (int i = 0; i < readers; ++i) {
    started.add(1);
    ended.add(1);
    weft::go(
        [&] {
          started.done();
          release.wait();
          ended.done();
        },
        kPinnedReaderStack);
    if ((i + 1) % kYieldEvery == 0) weft::yield();
  }
  started.wait();
  release.done();
  ended.wait();
}

std::vector<double> fanout(const Options& o, int readers, int rounds) {
  IdleConns idle(readers);
  map_reader_stacks(readers);
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
          kReaderStack);
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

// A latency in the unit that suits it, three significant digits: 412 ns,
// 2.13 us, 45.6 us, 13.2 ms.
std::string fmt_latency(double us) {
  struct Unit {
    double per_us;
    const char* name;
  };
  const Unit units[] = {{1e3, "ns"}, {1, "us"}, {1e-3, "ms"}, {1e-6, "s"}};
  const double mag = std::fabs(us);
  std::size_t u = 0;
  while (u + 1 < std::size(units) && mag * units[u].per_us >= 999.5) ++u;
  const double v = us * units[u].per_us;
  const double av = std::fabs(v);
  char buf[32];
  std::snprintf(buf, sizeof buf,
                av >= 99.95 || u == 0 ? "%.0f %s"
                : av >= 9.995         ? "%.1f %s"
                                      : "%.2f %s",
                v, units[u].name);
  return buf;
}

// An axis label: the same units, without the trailing zeros (2 ms, not
// 2.00 ms).
std::string fmt_tick(double us) {
  std::string s = fmt_latency(us);
  const std::size_t space = s.find(' '), dot = s.find('.');
  if (dot == std::string::npos || dot > space) return s;
  std::size_t end = space;
  while (s[end - 1] == '0') --end;
  if (s[end - 1] == '.') --end;
  return s.substr(0, end) + s.substr(space);
}

std::string fmt_cell(std::optional<double> us) {
  return us ? fmt_latency(*us) : "-";
}

const char* measures(const std::string& scenario) {
  for (const Scenario& s : kScenarios) {
    if (scenario == s.name) return s.measures;
  }
  return "";
}

std::string label(const Row& r) {
  return r.runtime == "weft" ? "weft " + r.backend : r.runtime;
}

void print_table(const Options& o, int workers, const std::vector<Row>& rows,
                 const std::map<std::string, const Row*>& go) {
  std::printf("weft-wakeup: %d workers%s, over 127.0.0.1 (loopback)\n\n", workers,
              go.empty() ? "" : ", Go with as many (GOMAXPROCS)");
  std::printf("Each scenario times how long a parked call takes to return; lower is better.\n");
  for (const std::string& s : o.scenarios) std::printf("  %-14s %s\n", s.c_str(), measures(s));
  std::printf("\n%-14s %-14s %6s", "scenario", "runtime", "n");
  for (const Percentile& p : kPercentiles) std::printf(" %9s", p.name);
  std::printf(" %9s", "max");
  if (!go.empty()) std::printf("   go/weft p50   p99");
  std::printf("\n");
  auto ratio = [](std::optional<double> g, std::optional<double> w) -> std::string {
    if (!g || !w || *w <= 0) return "-";
    const double x = *g / *w;
    char buf[16];
    std::snprintf(buf, sizeof buf, x >= 9.95 ? "%.0fx" : x >= 0.995 ? "%.1fx" : "%.2fx", x);
    return buf;
  };
  std::string last;
  for (const Row& r : rows) {
    if (!last.empty() && r.scenario != last) std::printf("\n");
    last = r.scenario;
    std::printf("%-14s %-14s %6zu", r.scenario.c_str(), label(r).c_str(), r.n());
    for (const Percentile& p : kPercentiles) std::printf(" %9s", fmt_cell(r.at(p.p)).c_str());
    std::printf(" %9s", fmt_latency(r.max()).c_str());
    auto g = go.find(r.scenario);
    if (r.runtime == "weft" && g != go.end()) {
      std::printf("   %11s %5s", ratio(g->second->at(0.5), r.at(0.5)).c_str(),
                  ratio(g->second->at(0.99), r.at(0.99)).c_str());
    }
    std::printf("\n");
  }
  std::printf("\n");
  if (!go.empty()) {
    std::printf(
        "go/weft: Go's latency divided by weft's at that percentile; above 1x weft is faster\n"
        "(3.0x: weft takes a third of Go's time), below 1x Go is faster.\n");
  }
  std::printf(
      "Percentiles are exact over every sample; \"-\": too few samples for it to be more than\n"
      "the maximum (p90 needs 10, p99 100, p99.9 1,000). deadline-read's deadline: %s.\n",
      fmt_latency(std::chrono::duration<double, std::micro>(o.deadline).count()).c_str());
}

void print_json(const std::vector<Row>& rows) {
  auto num = [](std::optional<double> v) {
    if (!v) return std::string("null");
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.3f", *v);
    return std::string(buf);
  };
  std::printf("[");
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    // A percentile n cannot support is null, as in the table's "-".
    std::printf(
        "%s\n  {\"scenario\": \"%s\", \"backend\": \"%s\", \"runtime\": \"%s\", \"n\": %zu, "
        "\"p50_us\": %s, \"p90_us\": %s, \"p99_us\": %s, \"p999_us\": %s, \"max_us\": %s}",
        i ? "," : "", r.scenario.c_str(), r.backend.c_str(), r.runtime.c_str(), r.n(),
        num(r.at(0.5)).c_str(), num(r.at(0.9)).c_str(), num(r.at(0.99)).c_str(),
        num(r.at(0.999)).c_str(), num(r.max()).c_str());
  }
  std::printf("\n]\n");
}

// Ticks for a log axis over [lo, hi]: powers of ten where the range spans
// decades, 1-2-5 or every digit where it does not, so that a panel whose
// samples lie within one decade still gets a few labels.
std::vector<double> log_ticks(double lo, double hi) {
  const std::vector<std::vector<double>> steps = {{1}, {1, 2, 5}, {1, 2, 3, 4, 5, 6, 7, 8, 9}};
  std::vector<double> ticks;
  for (const auto& mantissas : steps) {
    ticks.clear();
    for (double decade = std::pow(10, std::floor(std::log10(lo))); decade <= hi; decade *= 10) {
      for (double m : mantissas) {
        const double v = m * decade;
        if (v >= lo * 0.999 && v <= hi * 1.001) ticks.push_back(v);
      }
    }
    if (ticks.size() >= 4) break;
  }
  return ticks;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else
      out += c;
  }
  return out;
}

// One panel per scenario: latency (log scale) against percentile on
// HdrHistogram's axis (0%, 90%, 99%, ... equally spaced), every sample of
// every series drawn the same way, each panel scaled to its own data, and the
// axis ending at the last percentile the smallest n can support.
void write_svg(const std::string& path, const std::vector<Row>& rows) {
  std::vector<std::string> scenarios;
  for (const Row& r : rows) {
    if (std::find(scenarios.begin(), scenarios.end(), r.scenario) == scenarios.end()) {
      scenarios.push_back(r.scenario);
    }
  }
  const int pw = 500, ph = 370, cols = scenarios.size() > 1 ? 2 : 1, top = 62;
  // Room for the title, description and three legend lines above, tick
  // labels and axis titles left and below.
  const int ml = 82, mr = 30, mt = 88, mb = 48;
  const int rows_n = static_cast<int>((scenarios.size() + cols - 1) / cols);
  std::ostringstream svg;
  svg << "<svg xmlns='http://www.w3.org/2000/svg' width='" << cols * pw << "' height='"
      << top + rows_n * ph << "' font-family='sans-serif' font-size='11'>\n"
      << "<rect width='100%' height='100%' fill='white'/>\n"
      << "<text x='12' y='22' font-size='15' font-weight='bold'>weft-wakeup: how long a parked "
         "call takes to return after cancel() or its deadline (lower is better)</text>\n"
      << "<text x='12' y='42' font-size='12'>Every sample of each series, sorted; x: the share of "
         "samples at or below (percentile, log scale of nines); y: latency, log scale.</text>\n";
  const char* colors[] = {"#1f77b4", "#2ca02c", "#9467bd", "#8c564b"};
  const char* go_color = "#d62728";
  for (std::size_t s = 0; s < scenarios.size(); ++s) {
    const int ox = static_cast<int>(s % cols) * pw, oy = top + static_cast<int>(s / cols) * ph;
    const int x0 = ox + ml, y0 = oy + mt, w = pw - ml - mr, h = ph - mt - mb;
    std::vector<const Row*> series;
    for (const Row& r : rows) {
      if (r.scenario == scenarios[s]) series.push_back(&r);
    }
    double lo = 1e18, hi = 0;
    for (const Row* r : series) {
      lo = std::min(lo, r->sorted_us.front());
      hi = std::max(hi, r->max());
    }
    lo = std::max(lo, 1e-3);  // a log axis needs a positive floor (1 ns)
    hi = std::max(hi, lo * 2);
    // A margin of a twentieth of the range either side keeps the extremes
    // off the frame.
    const double pad = std::pow(hi / lo, 0.05);
    lo /= pad;
    hi *= pad;
    auto y_of = [&](double v) {
      return y0 + h -
             h * (std::log10(std::clamp(v, lo, hi)) - std::log10(lo)) /
                 (std::log10(hi) - std::log10(lo));
    };
    // Sample i of n is drawn at i/n, so the largest sits at log10(n) nines:
    // the axis ends there, and its labels stop at the last whole nines
    // inside (99.9% for n = 1,000), since beyond that there is one sample.
    std::size_t max_n = 0;
    for (const Row* r : series) max_n = std::max(max_n, r->n());
    const double max_nines = std::log10(static_cast<double>(std::max<std::size_t>(max_n, 10)));
    auto x_of = [&](double p) {
      const double nines = std::min(max_nines, -std::log10(std::max(1e-12, 1 - p)));
      return x0 + w * nines / max_nines;
    };
    svg << "<text x='" << ox + 12 << "' y='" << oy + 16 << "' font-size='13' font-weight='bold'>"
        << scenarios[s] << "</text>\n<text x='" << ox + 12 << "' y='" << oy + 32 << "'>"
        << xml_escape(measures(scenarios[s])) << "</text>\n";
    // Grid and tick labels; a label too close to the one below it is left out.
    double last_label_y = 1e9;
    for (double v : log_ticks(lo, hi)) {
      const double y = y_of(v);
      svg << "<line x1='" << x0 << "' x2='" << x0 + w << "' y1='" << y << "' y2='" << y
          << "' stroke='#e4e4e4'/>\n";
      if (last_label_y - y < 13) continue;
      last_label_y = y;
      svg << "<text x='" << x0 - 5 << "' y='" << y + 4 << "' text-anchor='end'>" << fmt_tick(v)
          << "</text>\n";
    }
    struct XTick {
      double p;
      const char* text;
    };
    const XTick xticks[] = {{0, "0%"},     {0.5, "50%"},     {0.9, "90%"},
                            {0.99, "99%"}, {0.999, "99.9%"}, {0.9999, "99.99%"}};
    for (const XTick& t : xticks) {
      if (t.p > 0 && -std::log10(1 - t.p) > max_nines + 1e-9) break;
      const double x = x_of(t.p);
      svg << "<line x1='" << x << "' x2='" << x << "' y1='" << y0 << "' y2='" << y0 + h
          << "' stroke='#e4e4e4'/>\n<text x='" << x << "' y='" << y0 + h + 14
          << "' text-anchor='middle'>" << t.text << "</text>\n";
    }
    // Where n is not a power of ten the last whole nines fall short of the
    // edge, which is then the maximum.
    if (const double last = std::floor(max_nines + 1e-9); w * (max_nines - last) / max_nines > 40) {
      svg << "<text x='" << x0 + w << "' y='" << y0 + h + 14 << "' text-anchor='end'>max</text>\n";
    }
    svg << "<rect x='" << x0 << "' y='" << y0 << "' width='" << w << "' height='" << h
        << "' fill='none' stroke='#888'/>\n"
        << "<text x='" << x0 + w / 2 << "' y='" << y0 + h + 32
        << "' text-anchor='middle'>percentile (samples at or below)</text>\n"
        << "<text transform='translate(" << ox + 14 << ',' << y0 + h / 2
        << ") rotate(-90)' text-anchor='middle'>latency, lower is better</text>\n";
    int k = 0;
    for (const Row* r : series) {
      const char* color = r->runtime == "go" ? go_color : colors[k % std::size(colors)];
      svg << "<polyline fill='none' stroke='" << color << "' stroke-width='1.6' points='";
      const std::size_t n = r->n();
      for (std::size_t i = 0; i < n; ++i) {
        svg << x_of(static_cast<double>(i) / static_cast<double>(n)) << ',' << y_of(r->sorted_us[i])
            << ' ';
      }
      // The legend sits between the panel's title and its plot, where no
      // curve can run through it.
      svg << "'/>\n<text x='" << x0 << "' y='" << oy + 50 + 14 * k << "' fill='" << color << "'>"
          << label(*r) << " (n=" << n << "): p50 " << fmt_cell(r->at(0.5)) << ", p99 "
          << fmt_cell(r->at(0.99)) << "</text>\n";
      ++k;
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

// The Go peer's JSON rows: flat objects with known keys, and the samples as
// one array of numbers. Its percentiles are not read: they are taken again
// from the samples here, as for weft's rows.
std::vector<Row> parse_go_rows(const std::string& json) {
  std::vector<Row> rows;
  std::size_t pos = 0;
  while ((pos = json.find('{', pos)) != std::string::npos) {
    const std::size_t end = json.find('}', pos);
    if (end == std::string::npos) break;
    const std::string obj = json.substr(pos, end - pos);
    auto value_at = [&](const char* key) {
      const std::size_t k = obj.find(std::string("\"") + key + "\"");
      return k == std::string::npos ? std::string::npos : obj.find(':', k) + 1;
    };
    auto str = [&](const char* key) {
      const std::size_t v = value_at(key);
      if (v == std::string::npos) return std::string();
      const std::size_t q1 = obj.find('"', v), q2 = obj.find('"', q1 + 1);
      return obj.substr(q1 + 1, q2 - q1 - 1);
    };
    std::vector<double> us;
    if (const std::size_t v = value_at("samples_us"); v != std::string::npos) {
      const char* p = obj.c_str() + obj.find('[', v) + 1;
      const char* const stop = obj.c_str() + obj.find(']', v);
      while (p < stop) {
        char* next = nullptr;
        const double x = std::strtod(p, &next);
        if (next == p) break;
        us.push_back(x);
        p = next;
        while (p < stop && (*p == ',' || std::isspace(static_cast<unsigned char>(*p)))) ++p;
      }
    }
    const std::string scenario = str("scenario");
    if (us.empty()) {
      std::fprintf(stderr, "weft-wakeup: the Go peer's %s row has no samples\n", scenario.c_str());
    } else {
      rows.push_back(summarize(scenario, str("backend"), "go", std::move(us)));
    }
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
  // The same n, rounds, deadline and settle as weft's side; a generous
  // per-scenario limit, as 100 rounds of 10,000 readers take a while on a
  // loaded 2-core machine.
  const std::string cmd = exe + " -json -scenarios " + names + " -n " + std::to_string(o.n) +
                          " -rounds " + std::to_string(o.rounds) + " -procs " +
                          std::to_string(workers) + " -deadline " +
                          std::to_string(o.deadline.count()) + "ns -settle " +
                          std::to_string(o.settle.count()) + "ns -timeout 300s";
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
poller backend. Prints n, p50, p90, p99, p99.9 and max, each in the unit
that suits it (ns, us, ms); "-" where n is too small for that percentile.

  --scenarios LIST   comma-separated, default all:
                       cancel-read    cancel while parked in conn.read(ctx)
                       cancel-accept  cancel while parked in listener.accept(ctx)
                       cancel-dial    cancel while dial(ctx) hangs on a full listener
                       deadline-read  overshoot of a read deadline (see --deadline)
                       fanout-1000    one parent cancels 1,000 parked readers;
                       fanout-10000   time until the last one runs (per round)
  --n N              samples per scenario (default 1000)
  --rounds R         rounds (samples) for the fan-out scenarios (default 100)
  --backends LIST    poller backends (default: every one built: %s)
  --workers N        worker threads (default: WEFT_PROCS or the CPU count)
  --deadline D       deadline-read's deadline, e.g. 1ms, 200us (default 1ms)
  --json             one JSON array of rows instead of the table
  --svg PATH         where the latency picture goes (default wakeup.svg; '' none)
  --vs-go            also run bench/peers/go/wakeup (needs `go`) with the same
                     n, rounds and deadline, and print Go/weft ratios for p50
                     and p99 (above 1x: weft is faster)
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
  for (const Scenario& s : kScenarios) o.scenarios.emplace_back(s.name);
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
        if (std::none_of(std::begin(kScenarios), std::end(kScenarios),
                         [&](const Scenario& k) { return s == k.name; })) {
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
            if (s == "fanout-1000") us = fanout(o, 1000, o.rounds);
            if (s == "fanout-10000") us = fanout(o, 10000, o.rounds);
            rows.push_back(summarize(s, backend, "weft", std::move(us)));
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
    print_table(o, workers_used, all, go_by_scenario);
  }
  if (!o.svg.empty()) {
    write_svg(o.svg, all);
    if (!o.json) std::printf("picture: %s\n", o.svg.c_str());
  }
  return 0;
}
