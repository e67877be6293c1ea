// weft-epoll-peer: the "limit" peer of the request/response throughput
// benchmarks (bench/load.py). One thread, one edge-triggered epoll set,
// non-blocking sockets, no weft: per request about one read(2) and one
// write(2), plus a share of an epoll_wait(2). With --threads N, N such
// threads, each with a listening socket of its own on the same port
// (SO_REUSEPORT: the kernel spreads connections over them), sharing nothing.
//
//   weft-epoll-peer --mode http|resp|echo [--addr HOST:PORT] [--threads N]
//
//   http  HTTP/1.1 keep-alive: every "\r\n\r\n"-terminated request head gets
//         kHttpResponse (bodies are not read: GET only); pipelined requests
//         that arrive together are answered with one write
//   resp  RESP PING: arrays (*1\r\n$4\r\nPING\r\n) and inline commands
//         (PING\r\n) -> +PONG\r\n; PING msg -> $len msg; CONFIG GET name ->
//         [name, ""] (redis-benchmark asks at start); anything else -ERR
//   echo  writes back every byte it reads
//
// Prints "listening on HOST:PORT" (the bound address) on stdout once
// listening. SIGINT/SIGTERM arrive through a signalfd in the same epoll set:
// every connection is closed and the process exits 0.
//
// A read that returns less than the buffer's free space means the socket was
// drained at that moment (epoll(7)), so the next edge will report new data and
// no second read is spent to see EAGAIN.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

namespace {

constexpr std::string_view kHttpResponse =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nHello, World!\n";
constexpr std::string_view kPong = "+PONG\r\n";

// Read size per read(2); also the most unparsed input a connection may hold
// before the HTTP/RESP parsers give up on it (a request head or RESP line
// longer than this closes the connection).
constexpr size_t kReadSize = 64 * 1024;
constexpr size_t kMaxPending = 1024 * 1024;

enum class Mode { kHttp, kResp, kEcho };

// A byte buffer consumed from the front: data lives in [begin, end) of buf.
struct Buffer {
  std::vector<char> buf;
  size_t begin = 0;
  size_t end = 0;

  size_t size() const { return end - begin; }
  bool empty() const { return begin == end; }
  const char* data() const { return buf.data() + begin; }
  std::string_view view() const { return {data(), size()}; }
  void consume(size_t n) {
    begin += n;
    if (begin == end) begin = end = 0;
  }
  // Room for at least n more bytes at the end; returns where they go.
  char* reserve(size_t n) {
    if (begin > 0 && buf.size() - end < n) {
      std::memmove(buf.data(), buf.data() + begin, size());
      end -= begin;
      begin = 0;
    }
    if (buf.size() - end < n) buf.resize(end + n);
    return buf.data() + end;
  }
  void commit(size_t n) { end += n; }
  void append(std::string_view s) {
    std::memcpy(reserve(s.size()), s.data(), s.size());
    commit(s.size());
  }
};

struct Conn {
  int fd;
  Buffer in;   // unparsed input (http, resp)
  Buffer out;  // replies not yet written
};

bool equal_nocase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'a' && x <= 'z') x = static_cast<char>(x - 'a' + 'A');
    if (y >= 'a' && y <= 'z') y = static_cast<char>(y - 'a' + 'A');
    if (x != y) return false;
  }
  return true;
}

// Parses a decimal number that fills s entirely; -1 if it is not one.
long parse_count(std::string_view s) {
  if (s.empty() || s.size() > 10) return -1;
  long v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return -1;
    v = v * 10 + (c - '0');
  }
  return v;
}

void append_bulk(Buffer& out, std::string_view s) {
  out.append("$");
  out.append(std::to_string(s.size()));
  out.append("\r\n");
  out.append(s);
  out.append("\r\n");
}

void resp_reply(Buffer& out, const std::vector<std::string_view>& args) {
  if (args.empty()) return;
  if (equal_nocase(args[0], "PING") && args.size() == 1) {
    out.append(kPong);
  } else if (equal_nocase(args[0], "PING") && args.size() == 2) {
    append_bulk(out, args[1]);
  } else if (equal_nocase(args[0], "CONFIG") && args.size() == 3 && equal_nocase(args[1], "GET")) {
    out.append("*2\r\n");
    append_bulk(out, args[2]);
    append_bulk(out, "");
  } else {
    out.append("-ERR unknown command\r\n");
  }
}

enum class Parse { kDone, kNeedMore, kError };

// Answers every complete RESP command at the front of c.in and consumes it.
Parse parse_resp(Conn& c) {
  thread_local std::vector<std::string_view> args;  // reused to spare allocations
  for (;;) {
    std::string_view in = c.in.view();
    if (in.empty()) return Parse::kDone;
    size_t eol = in.find('\n');
    if (eol == std::string_view::npos) return Parse::kNeedMore;
    std::string_view line = in.substr(0, eol);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    size_t pos = eol + 1;
    args.clear();
    if (line.empty() || line[0] != '*') {
      // Inline command: words separated by spaces.
      while (!line.empty()) {
        size_t sp = line.find(' ');
        std::string_view word = line.substr(0, sp);
        if (!word.empty()) args.push_back(word);
        if (sp == std::string_view::npos) break;
        line.remove_prefix(sp + 1);
      }
    } else {
      long n = parse_count(line.substr(1));
      if (n < 0 || n > 1024 * 1024) return Parse::kError;
      for (long i = 0; i < n; ++i) {
        size_t e = in.find('\n', pos);
        if (e == std::string_view::npos) return Parse::kNeedMore;
        std::string_view head = in.substr(pos, e - pos);
        if (!head.empty() && head.back() == '\r') head.remove_suffix(1);
        if (head.empty() || head[0] != '$') return Parse::kError;
        long len = parse_count(head.substr(1));
        if (len < 0 || static_cast<size_t>(len) > kMaxPending) return Parse::kError;
        pos = e + 1;
        if (in.size() - pos < static_cast<size_t>(len) + 2) return Parse::kNeedMore;
        args.push_back(in.substr(pos, static_cast<size_t>(len)));
        pos += static_cast<size_t>(len) + 2;
      }
    }
    resp_reply(c.out, args);
    c.in.consume(pos);
  }
}

// Answers every complete request head at the front of c.in and consumes it.
Parse parse_http(Conn& c) {
  for (;;) {
    std::string_view in = c.in.view();
    size_t end = in.find("\r\n\r\n");
    if (end == std::string_view::npos) return in.empty() ? Parse::kDone : Parse::kNeedMore;
    c.out.append(kHttpResponse);
    c.in.consume(end + 4);
  }
}

class Server {
 public:
  Server(Mode mode, int listen_fd, int signal_fd)
      : mode_(mode), listen_fd_(listen_fd), signal_fd_(signal_fd) {}

  int run() {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) return fail("epoll_create1");
    if (!add(listen_fd_, EPOLLIN | EPOLLET) || !add(signal_fd_, EPOLLIN)) return fail("epoll_ctl");
    std::vector<epoll_event> events(256);
    for (;;) {
      int n = epoll_wait(epfd_, events.data(), static_cast<int>(events.size()), -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        return fail("epoll_wait");
      }
      for (int i = 0; i < n; ++i) {
        int fd = events[static_cast<size_t>(i)].data.fd;
        if (fd == signal_fd_) {
          close_all();
          return 0;
        }
        if (fd == listen_fd_) {
          accept_all();
          continue;
        }
        auto it = conns_.find(fd);
        if (it == conns_.end()) continue;
        if (!serve(*it->second)) close_conn(fd);
      }
    }
  }

 private:
  bool add(int fd, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    return epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0;
  }

  static int fail(const char* what) {
    std::fprintf(stderr, "weft-epoll-peer: %s: %s\n", what, std::strerror(errno));
    return 1;
  }

  void accept_all() {
    for (;;) {
      int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        // EAGAIN: drained. EMFILE and the like: give up on this edge; the
        // connection waits in the backlog until the next one.
        return;
      }
      int one = 1;
      setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      // Readable and writable edges from the start, so that a blocked write
      // needs no epoll_ctl later.
      if (!add(fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)) {
        close(fd);
        continue;
      }
      auto c = std::make_unique<Conn>();
      c->fd = fd;
      conns_[fd] = std::move(c);
    }
  }

  // Writes what is queued; false on a write error. Leaves the rest queued on
  // EAGAIN.
  static bool flush(Conn& c) {
    while (!c.out.empty()) {
      ssize_t n = write(c.fd, c.out.data(), c.out.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
      }
      c.out.consume(static_cast<size_t>(n));
    }
    return true;
  }

  // Handles an event on c: writes what is queued, then reads, answers and
  // writes until the socket is drained. While replies are queued (the peer
  // does not read), input stays in the socket; the writable edge resumes.
  // Returns false when the connection is to be closed.
  bool serve(Conn& c) {
    for (;;) {
      if (!flush(c)) return false;
      if (!c.out.empty()) return true;
      // Into the thread's buffer, then only what arrived into the
      // connection's: an idle connection holds no read buffer (a 64 KiB
      // one each, zeroed by the vector, was 64 KiB of RSS per connection).
      thread_local char scratch[kReadSize];
      ssize_t n = read(c.fd, scratch, kReadSize);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN || errno == EWOULDBLOCK;
      }
      if (n == 0) return false;
      const std::string_view got(scratch, static_cast<size_t>(n));
      if (mode_ == Mode::kEcho) {
        c.out.append(got);
      } else {
        c.in.append(got);
        Parse p = mode_ == Mode::kHttp ? parse_http(c) : parse_resp(c);
        if (p == Parse::kError) {
          if (mode_ == Mode::kResp) c.out.append("-ERR Protocol error\r\n");
          flush(c);
          return false;
        }
        if (p == Parse::kNeedMore && c.in.size() > kMaxPending) return false;
      }
      if (!flush(c)) return false;
      if (static_cast<size_t>(n) < kReadSize) return true;  // drained
    }
  }

  void close_conn(int fd) {
    close(fd);  // also leaves the epoll set
    conns_.erase(fd);
  }

  void close_all() {
    for (auto& [fd, c] : conns_) close(fd);
    conns_.clear();
    close(listen_fd_);
    close(epfd_);
  }

  Mode mode_;
  int listen_fd_;
  int signal_fd_;
  int epfd_ = -1;
  std::unordered_map<int, std::unique_ptr<Conn>> conns_;
};

int usage() {
  std::fprintf(stderr,
               "usage: weft-epoll-peer --mode http|resp|echo [--addr HOST:PORT] [--threads N]\n");
  return 2;
}

// A listening socket on HOST:PORT (IPv4); -1 with a message on failure.
// With `shared`, others may bind the same port (SO_REUSEPORT).
int listen_on(const std::string& addr, bool shared) {
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "weft-epoll-peer: --addr wants HOST:PORT, got %s\n", addr.c_str());
    return -1;
  }
  std::string host = addr.substr(0, colon);
  if (host.empty() || host == "localhost") host = "127.0.0.1";
  long port = parse_count(addr.substr(colon + 1));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  if (port < 0 || port > 65535 || inet_pton(AF_INET, host.c_str(), &sa.sin_addr) != 1) {
    std::fprintf(stderr, "weft-epoll-peer: bad address %s (IPv4 HOST:PORT)\n", addr.c_str());
    return -1;
  }
  sa.sin_port = htons(static_cast<uint16_t>(port));
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      (shared && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
      bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || listen(fd, 4096) != 0) {
    std::fprintf(stderr, "weft-epoll-peer: listen on %s: %s\n", addr.c_str(), std::strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode_name;
  std::string addr = "127.0.0.1:8080";
  std::string threads_arg = "1";
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&](std::string_view flag, std::string& out) {
      if (a == flag && i + 1 < argc) {
        out = argv[++i];
        return true;
      }
      if (a.size() > flag.size() && a.substr(0, flag.size()) == flag && a[flag.size()] == '=') {
        out = std::string(a.substr(flag.size() + 1));
        return true;
      }
      return false;
    };
    if (!value("--mode", mode_name) && !value("--addr", addr) && !value("--threads", threads_arg)) {
      return usage();
    }
  }
  const long threads = parse_count(threads_arg);
  if (threads < 1 || threads > 1024) return usage();
  Mode mode;
  if (mode_name == "http") {
    mode = Mode::kHttp;
  } else if (mode_name == "resp") {
    mode = Mode::kResp;
  } else if (mode_name == "echo") {
    mode = Mode::kEcho;
  } else {
    return usage();
  }

  signal(SIGPIPE, SIG_IGN);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  if (sigprocmask(SIG_BLOCK, &mask, nullptr) != 0) return 1;
  int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  if (sfd < 0) return 1;

  int lfd = listen_on(addr, threads > 1);
  if (lfd < 0) return 1;
  sockaddr_in bound{};
  socklen_t len = sizeof bound;
  getsockname(lfd, reinterpret_cast<sockaddr*>(&bound), &len);
  char ip[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &bound.sin_addr, ip, sizeof ip);
  const std::string bound_addr = std::string(ip) + ":" + std::to_string(ntohs(bound.sin_port));
  // Every thread's socket before the line: a client may connect at once.
  std::vector<int> listeners{lfd};
  for (long t = 1; t < threads; ++t) {
    const int fd = listen_on(bound_addr, true);
    if (fd < 0) return 1;
    listeners.push_back(fd);
  }
  std::printf("listening on %s\n", bound_addr.c_str());
  std::fflush(stdout);

  if (threads == 1) return Server(mode, lfd, sfd).run();
  // The signal reaches this thread; the servers see an eventfd that stays
  // readable once written, all of them.
  const int stop_fd = eventfd(0, EFD_CLOEXEC);
  if (stop_fd < 0) return 1;
  std::vector<int> status(listeners.size(), 0);
  std::vector<std::thread> servers;
  for (std::size_t t = 0; t < listeners.size(); ++t) {
    servers.emplace_back([&, t] { status[t] = Server(mode, listeners[t], stop_fd).run(); });
  }
  signalfd_siginfo info;
  pollfd wait_for_signal{sfd, POLLIN, 0};
  while (poll(&wait_for_signal, 1, -1) < 0 && errno == EINTR) {
  }
  (void)!read(sfd, &info, sizeof info);
  const std::uint64_t one = 1;
  (void)!write(stop_fd, &one, sizeof one);
  int rc = 0;
  for (std::size_t t = 0; t < servers.size(); ++t) {
    servers[t].join();
    rc |= status[t];
  }
  return rc;
}
