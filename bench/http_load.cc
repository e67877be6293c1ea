// An HTTP/1.1 keep-alive load generator for machines without wrk (issue 18's
// 16-core machine has none), and the echo client of the request/response
// benchmarks (bench/load.py --client echo): plain threads, one epoll each,
// no weft, so that it loads every server alike.
//
//   weft-http-load --addr HOST:PORT [--connections C] [--threads T]
//                  [--seconds S] [--warmup S] [--path P] [--echo BYTES]
//
// Each connection sends a GET, reads the whole response (framed by its
// Content-Length), then sends the next: one request in flight per
// connection, as wrk without pipelining. With --echo, a request is BYTES
// bytes and its response the same bytes back. Responses in the first
// --warmup seconds are not counted. Prints one JSON line: connections,
// threads, seconds, requests, req_per_s, p50_us, p99_us, max_us, errors
// (responses that were not 200 or not the bytes sent, and connections the
// server closed or reset).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

struct Options {
  std::string host = "127.0.0.1";
  int port = 0;
  int connections = 50;
  int threads = 2;
  double seconds = 10;
  double warmup = 1;
  std::string path = "/";
  std::size_t echo_bytes = 0;  // 0: HTTP
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "weft-http-load: %s\n", what.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (i + 1 >= argc) die("missing a value after " + std::string(arg));
    const char* v = argv[++i];
    if (arg == "--addr") {
      const std::string_view a = v;
      const auto colon = a.rfind(':');
      if (colon == std::string_view::npos) die("--addr wants HOST:PORT, got " + std::string(a));
      o.host = std::string(a.substr(0, colon));
      o.port = std::atoi(std::string(a.substr(colon + 1)).c_str());
    } else if (arg == "--connections") {
      o.connections = std::atoi(v);
    } else if (arg == "--threads") {
      o.threads = std::atoi(v);
    } else if (arg == "--seconds") {
      o.seconds = std::atof(v);
    } else if (arg == "--warmup") {
      o.warmup = std::atof(v);
    } else if (arg == "--path") {
      o.path = v;
    } else if (arg == "--echo") {
      const long bytes = std::atol(v);
      // One send(2) per request: small enough that it never writes short.
      if (bytes < 1 || bytes > 16384) die("--echo wants a size from 1 to 16384 bytes");
      o.echo_bytes = static_cast<std::size_t>(bytes);
    } else {
      die("unknown option " + std::string(arg));
    }
  }
  if (o.port <= 0 || o.port > 65535) die("--addr HOST:PORT is required");
  if (o.connections < 1 || o.threads < 1) die("--connections and --threads must be at least 1");
  o.threads = std::min(o.threads, o.connections);
  return o;
}

struct Conn {
  int fd = -1;
  std::string in;
  Clock::time_point sent;
};

// Where a complete response ends in `in`, with its status; 0 if incomplete.
std::size_t response_end(const std::string& in, bool* ok) {
  const auto head_end = in.find("\r\n\r\n");
  if (head_end == std::string::npos) return 0;
  std::size_t length = 0;
  for (std::size_t line = in.find("\r\n") + 2; line < head_end;) {
    const auto eol = in.find("\r\n", line);
    constexpr std::string_view kLength = "content-length:";
    if (eol - line > kLength.size()) {
      bool match = true;
      for (std::size_t k = 0; k < kLength.size() && match; ++k) {
        match = std::tolower(static_cast<unsigned char>(in[line + k])) == kLength[k];
      }
      if (match) length = std::strtoull(in.c_str() + line + kLength.size(), nullptr, 10);
    }
    line = eol + 2;
  }
  const std::size_t end = head_end + 4 + length;
  if (in.size() < end) return 0;
  *ok = in.compare(0, 12, "HTTP/1.1 200") == 0 || in.compare(0, 12, "HTTP/1.0 200") == 0;
  return end;
}

struct Result {
  std::vector<std::uint32_t> latencies_us;
  long errors = 0;
};

void run_thread(const Options& o, int connections, Clock::time_point count_from,
                Clock::time_point stop, Result* out) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(o.port));
  if (inet_pton(AF_INET, o.host.c_str(), &addr.sin_addr) != 1) die("bad IPv4 address " + o.host);
  std::string request = "GET " + o.path + " HTTP/1.1\r\nHost: " + o.host + "\r\n\r\n";
  if (o.echo_bytes != 0) {
    request.resize(o.echo_bytes);
    for (std::size_t i = 0; i < request.size(); ++i) request[i] = static_cast<char>('a' + i % 26);
  }
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  std::vector<Conn> conns(static_cast<std::size_t>(connections));
  auto send_request = [&](Conn& c) {
    c.sent = Clock::now();
    if (::send(c.fd, request.data(), request.size(), MSG_NOSIGNAL) !=
        static_cast<ssize_t>(request.size())) {
      ++out->errors;  // a short write of a few dozen bytes: the peer is gone
      ::close(c.fd);
      c.fd = -1;
    }
  };
  for (std::size_t i = 0; i < conns.size(); ++i) {
    Conn& c = conns[i];
    c.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c.fd < 0 || ::connect(c.fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      die("connect to " + o.host + ":" + std::to_string(o.port) + ": " + std::strerror(errno));
    }
    const int one = 1;
    ::setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = i;
    epoll_ctl(ep, EPOLL_CTL_ADD, c.fd, &ev);
    send_request(c);
  }
  std::vector<epoll_event> events(conns.size());
  char buf[16 * 1024];
  while (Clock::now() < stop) {
    const int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 50);
    for (int k = 0; k < n; ++k) {
      Conn& c = conns[events[static_cast<std::size_t>(k)].data.u64];
      if (c.fd < 0) continue;
      const ssize_t r = ::recv(c.fd, buf, sizeof buf, MSG_DONTWAIT);
      if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        ++out->errors;  // closed or reset by the server
        ::close(c.fd);
        c.fd = -1;
        continue;
      }
      c.in.append(buf, static_cast<std::size_t>(r));
      bool ok = false;
      std::size_t end = 0;
      if (o.echo_bytes == 0) {
        end = response_end(c.in, &ok);
      } else if (c.in.size() >= request.size()) {
        end = request.size();
        ok = c.in.compare(0, end, request) == 0;
      }
      if (end != 0) {
        const auto now = Clock::now();
        if (!ok) ++out->errors;
        if (now >= count_from && ok) {
          out->latencies_us.push_back(static_cast<std::uint32_t>(
              std::chrono::duration_cast<std::chrono::microseconds>(now - c.sent).count()));
        }
        c.in.erase(0, end);
        send_request(c);
      }
    }
  }
  for (Conn& c : conns) {
    if (c.fd >= 0) ::close(c.fd);
  }
  ::close(ep);
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  const auto start = Clock::now();
  const auto count_from =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.warmup));
  const auto stop = count_from + std::chrono::duration_cast<Clock::duration>(
                                     std::chrono::duration<double>(o.seconds));
  std::vector<Result> results(static_cast<std::size_t>(o.threads));
  std::vector<std::thread> threads;
  for (int t = 0; t < o.threads; ++t) {
    const int share = o.connections / o.threads + (t < o.connections % o.threads ? 1 : 0);
    threads.emplace_back(run_thread, std::cref(o), share, count_from, stop,
                         &results[static_cast<std::size_t>(t)]);
  }
  for (auto& t : threads) t.join();
  std::vector<std::uint32_t> all;
  long errors = 0;
  for (const Result& r : results) {
    all.insert(all.end(), r.latencies_us.begin(), r.latencies_us.end());
    errors += r.errors;
  }
  std::sort(all.begin(), all.end());
  const auto at = [&](double q) {
    return all.empty() ? 0u
                       : all[std::min(all.size() - 1, static_cast<std::size_t>(q * all.size()))];
  };
  std::printf(
      "{\"connections\": %d, \"threads\": %d, \"seconds\": %.1f, \"requests\": %zu, "
      "\"req_per_s\": %.0f, \"p50_us\": %u, \"p99_us\": %u, \"max_us\": %u, \"errors\": %ld}\n",
      o.connections, o.threads, o.seconds, all.size(), static_cast<double>(all.size()) / o.seconds,
      at(0.5), at(0.99), all.empty() ? 0u : all.back(), errors);
  return all.empty() ? 1 : 0;
}
