// The fairness probe (issue 12): a client of an echo server that measures
// one small round trip's latency while other connections stream to the same
// server flat out. Plain threads and blocking sockets, no weft, so that it
// loads every server alike.
//
//   weft-fairness-client --addr HOST:PORT [--streams N] [--seconds S]
//                        [--warmup S] [--gap-us U]
//
// Each stream is one connection with a writer (16 KiB writes, never paced)
// and a reader that discards the echo. The probe is one more connection:
// write 64 bytes, read the 64 back, timed, then wait --gap-us (1000) so that
// the probe itself is a light client. Prints one JSON line: streams, n,
// p50_us, p90_us, p99_us, max_us, and the streams' echoed MB/s.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "weft-fairness-client: %s\n", what.c_str());
  std::exit(1);
}

int connect_to(const std::string& addr) {
  const auto colon = addr.rfind(':');
  if (colon == std::string::npos) fail("--addr wants HOST:PORT, got '" + addr + "'");
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(std::atoi(addr.c_str() + colon + 1)));
  if (inet_pton(AF_INET, addr.substr(0, colon).c_str(), &sa.sin_addr) != 1) {
    fail("--addr wants an IPv4 address, got '" + addr + "'");
  }
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fail(std::string("socket: ") + std::strerror(errno));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    fail("connect " + addr + ": " + std::strerror(errno));
  }
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

bool write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
  return true;
}

bool read_full(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<std::size_t>(r);
  }
  return true;
}

double percentile_us(const std::vector<std::int64_t>& sorted_ns, double q) {
  if (sorted_ns.empty()) return 0;
  const auto i = static_cast<std::size_t>(q * static_cast<double>(sorted_ns.size() - 1) + 0.5);
  return static_cast<double>(sorted_ns[std::min(i, sorted_ns.size() - 1)]) / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string addr;
  int streams = 4;
  double seconds = 5, warmup = 1;
  long gap_us = 1000;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) fail(a + " needs a value");
      return argv[++i];
    };
    if (a == "--addr") {
      addr = value();
    } else if (a == "--streams") {
      streams = std::atoi(value().c_str());
    } else if (a == "--seconds") {
      seconds = std::atof(value().c_str());
    } else if (a == "--warmup") {
      warmup = std::atof(value().c_str());
    } else if (a == "--gap-us") {
      gap_us = std::atol(value().c_str());
    } else {
      fail("unknown argument '" + a + "' (--addr, --streams, --seconds, --warmup, --gap-us)");
    }
  }
  if (addr.empty()) fail("--addr HOST:PORT is required");
  if (streams < 0 || seconds <= 0 || warmup < 0 || gap_us < 0) fail("values must be positive");

  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> echoed{0};
  std::vector<int> stream_fds;
  std::vector<std::thread> threads;
  for (int s = 0; s < streams; ++s) {
    const int fd = connect_to(addr);
    stream_fds.push_back(fd);
    threads.emplace_back([fd, &stop] {
      std::vector<char> chunk(16 * 1024, 'x');
      while (!stop.load(std::memory_order_relaxed) && write_all(fd, chunk.data(), chunk.size())) {
      }
    });
    threads.emplace_back([fd, &echoed] {
      std::vector<char> buf(64 * 1024);
      for (;;) {
        const ssize_t r = ::read(fd, buf.data(), buf.size());
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        echoed.fetch_add(static_cast<std::uint64_t>(r), std::memory_order_relaxed);
      }
    });
  }

  const int probe = connect_to(addr);
  std::vector<std::int64_t> samples;
  char out[64], in[64];
  std::memset(out, 'p', sizeof out);
  const auto begin = Clock::now();
  const auto measure_from = begin + std::chrono::duration<double>(warmup);
  const auto end = measure_from + std::chrono::duration<double>(seconds);
  std::uint64_t echoed_at_start = 0;
  bool started = false;
  for (;;) {
    const auto t0 = Clock::now();
    if (t0 >= end) break;
    if (!write_all(probe, out, sizeof out) || !read_full(probe, in, sizeof in)) {
      fail("the probe connection failed: " + std::string(std::strerror(errno)));
    }
    const auto t1 = Clock::now();
    // A round trip that ends inside the window counts, even if it began
    // before it: a starved probe's one long wait is the result.
    if (t1 >= measure_from) {
      if (!started) {
        started = true;
        echoed_at_start = echoed.load();
      }
      samples.push_back(std::chrono::nanoseconds(t1 - t0).count());
    }
    if (gap_us > 0) std::this_thread::sleep_for(std::chrono::microseconds(gap_us));
  }
  const double mb_s = static_cast<double>(echoed.load() - echoed_at_start) / 1e6 / seconds;
  stop.store(true);
  for (int fd : stream_fds) ::shutdown(fd, SHUT_RDWR);
  for (auto& t : threads) t.join();
  for (int fd : stream_fds) ::close(fd);
  ::close(probe);

  std::sort(samples.begin(), samples.end());
  std::printf(
      "{\"streams\": %d, \"n\": %zu, \"p50_us\": %.1f, \"p90_us\": %.1f, \"p99_us\": %.1f, "
      "\"max_us\": %.1f, \"stream_mb_s\": %.1f}\n",
      streams, samples.size(), percentile_us(samples, 0.50), percentile_us(samples, 0.90),
      percentile_us(samples, 0.99), samples.empty() ? 0.0 : samples.back() / 1000.0, mb_s);
  return 0;
}
