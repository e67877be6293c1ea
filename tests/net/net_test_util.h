// Helpers shared by the net suites.
#pragma once

#include <dirent.h>
#include <gtest/gtest.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "net_internal.h"
#include "netpoll.h"
#include "test_util.h"
#include "weft/net.h"
#include "weft/runtime.h"
#include "weft/time.h"

namespace weft::test {

// A suite that runs each case once per poller backend (WEFT_POLLER) and
// worker count (1 and 2): some races (io_uring completions reaped by one
// worker for fibers parked by another) only exist with two.
struct NetParam {
  std::string backend;
  int workers;
};

class NetBackendTest : public ::testing::TestWithParam<NetParam> {
 protected:
  void SetUp() override { setenv("WEFT_POLLER", GetParam().backend.c_str(), 1); }
  void TearDown() override { unsetenv("WEFT_POLLER"); }
  template <class F>
  void run(F&& fn) {
    weft::run(std::forward<F>(fn), weft::RunOptions{.workers = GetParam().workers});
  }
  int workers() const { return GetParam().workers; }
};

// gtest prints a parameter it cannot name as bytes.
inline void PrintTo(const NetParam& p, std::ostream* os) {
  *os << p.backend << " with " << p.workers << (p.workers == 1 ? " worker" : " workers");
}

inline std::vector<NetParam> net_params() {
  std::vector<NetParam> params;
  for (const std::string& b : poller_backends()) {
    for (int w : {1, 2}) params.push_back({b, w});
  }
  return params;
}

inline std::string backend_name(const ::testing::TestParamInfo<NetParam>& info) {
  std::string name = info.param.backend;
  name += "_w";
  name += std::to_string(info.param.workers);
  return name;
}

#define WEFT_NET_INSTANTIATE(Suite)                                                          \
  INSTANTIATE_TEST_SUITE_P(Backends, Suite, ::testing::ValuesIn(::weft::test::net_params()), \
                           ::weft::test::backend_name)

// Waits (yielding, then napping; at most 10 s) until at least `n` fibers are
// parked in the poller. Synchronises "the op is parked" without guessing.
inline bool wait_parked(int n = 1) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (int i = 0; weft::detail::netpoll_waiters() < n; ++i) {
    if (std::chrono::steady_clock::now() > until) return false;
    if (i < 1000) {
      weft::yield();
    } else {
      weft::sleep_for(std::chrono::microseconds(100));
    }
  }
  return true;
}

// Whether ::1 can be bound here (the library's own probe).
inline bool have_ipv6_loopback() {
  return weft::net::detail::ipv6_supported();
}

// A connected TCP pair over 127.0.0.1: {dialed, accepted}.
struct TcpPair {
  weft::net::Conn client, server;
};
inline TcpPair tcp_pair(weft::net::Listener& ln) {
  TcpPair p;
  auto c = weft::net::dial("tcp", ln.addr().to_string());
  EXPECT_TRUE(c) << c.error().to_string();
  auto s = ln.accept();
  EXPECT_TRUE(s) << s.error().to_string();
  if (c) p.client = std::move(*c);
  if (s) p.server = std::move(*s);
  return p;
}
inline TcpPair tcp_pair() {
  auto ln = weft::net::listen("tcp", "127.0.0.1:0");
  EXPECT_TRUE(ln) << ln.error().to_string();
  return tcp_pair(*ln);
}

// A connected Unix stream pair, adopted (no listener, no port: for loops of
// thousands): {sv[0], sv[1]} as {client, server}.
inline TcpPair unix_pair() {
  TcpPair p;
  int sv[2];
  EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  auto a = weft::net::adopt_conn(sv[0], "unix");
  auto b = weft::net::adopt_conn(sv[1], "unix");
  EXPECT_TRUE(a && b);
  if (a) p.client = std::move(*a);
  if (b) p.server = std::move(*b);
  return p;
}

// Sockets this process has open, for leak checks. Sockets only: a poller
// backend may open and close descriptors of its own on a schedule the test
// does not control (libkqueue frees a closed kqueue's eventfds and epoll fd
// from its monitoring thread, later).
inline int open_sockets() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (const dirent* e = readdir(d)) {
      char path[300], target[64];
      std::snprintf(path, sizeof path, "/proc/self/fd/%s", e->d_name);
      const ssize_t len = readlink(path, target, sizeof target - 1);
      if (len > 0 &&
          std::string_view(target, static_cast<std::size_t>(len)).rfind("socket:", 0) == 0) {
        ++n;
      }
    }
    closedir(d);
  }
  return n;
}

// A listener whose accept queue is full: further connects get no answer.
// Filled with dials that complete until one times out (that one proves it).
struct FullBacklog {
  weft::net::Listener ln;
  std::vector<weft::net::Conn> fillers;
  bool ok = false;
  explicit FullBacklog(const char* address) {
    weft::net::ListenConfig cfg;
    cfg.backlog = 0;
    auto l = cfg.listen("tcp", address);
    if (!l) return;
    ln = std::move(*l);
    weft::net::Dialer d;
    d.timeout = std::chrono::milliseconds(100);
    for (int i = 0; i < 16; ++i) {
      auto c = d.dial("tcp", ln.addr().to_string());
      if (!c) {
        ok = c.error().is_timeout();
        return;
      }
      fillers.push_back(std::move(*c));
    }
  }
};

inline std::chrono::steady_clock::time_point in(std::chrono::nanoseconds d) {
  return std::chrono::steady_clock::now() + d;
}

// A getaddrinfo for set_getaddrinfo_for_tests that knows no host and counts
// its calls: where a test expects no lookup, or exactly one.
inline std::atomic<int> counted_lookups{0};
inline int counting_no_such_host(const char*, const char*, const addrinfo*, addrinfo** res) {
  *res = nullptr;
  ++counted_lookups;
  return EAI_NONAME;
}

}  // namespace weft::test
