// TCP connections: echo, big transfers, half-close, reset, SIGPIPE, close
// waking parked operations.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "fd.h"
#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using weft::test::NetBackendTest;
using weft::test::tcp_pair;

class NetConnTest : public NetBackendTest {};

TEST_P(NetConnTest, EchoRoundTrips) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln) << ln.error().to_string();
    EXPECT_EQ(ln->addr().ip(), weft::net::IP::loopback_v4());
    EXPECT_NE(ln->addr().port(), 0);
    weft::WaitGroup wg;
    wg.add(1);
    weft::go([&] {
      auto c = ln->accept();
      ASSERT_TRUE(c) << c.error().to_string();
      char buf[256];
      for (;;) {
        auto r = c->read(buf, sizeof buf);
        if (!r) {
          EXPECT_TRUE(r.is_eof()) << r.error().to_string();
          break;
        }
        ASSERT_TRUE(c->write(buf, *r));
      }
      wg.done();
    });
    auto c = weft::net::dial("tcp", ln->addr().to_string());
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_EQ(c->remote_addr().to_string(), ln->addr().to_string());
    EXPECT_TRUE(c->local_addr().ip().is_loopback());
    for (int i = 0; i < 100; ++i) {
      const std::string msg = "message " + std::to_string(i);
      auto w = c->write(msg);
      ASSERT_TRUE(w);
      EXPECT_EQ(*w, msg.size());
      std::string back(msg.size(), '\0');
      auto r = c->read_full(back.data(), back.size());
      ASSERT_TRUE(r) << r.error().to_string();
      EXPECT_EQ(back, msg);
    }
    ASSERT_TRUE(c->close());
    wg.wait();
  });
}

TEST_P(NetConnTest, LargeTransfersBothWaysAtOnce) {
  run([] {
    auto p = tcp_pair();
    constexpr std::size_t kSize = std::size_t{8} << 20;
    std::vector<char> out_a(kSize), out_b(kSize);
    for (std::size_t i = 0; i < kSize; ++i) {
      out_a[i] = static_cast<char>(i * 7 + 1);
      out_b[i] = static_cast<char>(i * 13 + 5);
    }
    std::vector<char> in_a(kSize), in_b(kSize);
    weft::WaitGroup wg;
    wg.add(4);
    // Both sides write 8 MiB while both read: neither write can finish
    // unless the reads run concurrently.
    weft::go([&] {
      auto w = p.client.write(out_a.data(), kSize);
      EXPECT_TRUE(w);
      EXPECT_EQ(*w, kSize);
      wg.done();
    });
    weft::go([&] {
      auto w = p.server.write(out_b.data(), kSize);
      EXPECT_TRUE(w);
      EXPECT_EQ(*w, kSize);
      wg.done();
    });
    weft::go([&] {
      auto r = p.server.read_full(in_a.data(), kSize);
      EXPECT_TRUE(r);
      wg.done();
    });
    weft::go([&] {
      auto r = p.client.read_full(in_b.data(), kSize);
      EXPECT_TRUE(r);
      wg.done();
    });
    wg.wait();
    EXPECT_TRUE(in_a == out_a);
    EXPECT_TRUE(in_b == out_b);
  });
}

TEST_P(NetConnTest, HalfCloseThenPeerReadsEOFAndStillWritesBack) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.write("request"));
    ASSERT_TRUE(p.client.close_write());
    char buf[64];
    std::string got;
    for (;;) {
      auto r = p.server.read(buf, sizeof buf);
      if (!r) {
        EXPECT_EQ(r.error().to_string(), "EOF");
        EXPECT_TRUE(r.error() == weft::errc::eof);
        break;
      }
      got.append(buf, *r);
    }
    EXPECT_EQ(got, "request");
    auto again = p.server.read(buf, sizeof buf);  // EOF is sticky
    EXPECT_TRUE(again.is_eof());
    ASSERT_TRUE(p.server.write("response"));
    ASSERT_TRUE(p.server.close());
    std::string resp(8, '\0');
    auto r = p.client.read_full(resp.data(), resp.size());
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(resp, "response");
    // Writing after close_write fails (EPIPE), without a signal.
    auto w = p.client.write("more");
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().op, "write");
    EXPECT_EQ(w.error().err, std::errc::broken_pipe);
  });
}

TEST_P(NetConnTest, ReadFullReportsUnexpectedEOF) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.write("abc"));
    ASSERT_TRUE(p.client.close());
    char buf[8];
    auto r = p.server.read_full(buf, sizeof buf);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.count(), 3u);
    EXPECT_EQ(r.error().to_string(), "unexpected EOF");
    auto again = p.server.read_full(buf, sizeof buf);
    EXPECT_TRUE(again.is_eof());
    EXPECT_EQ(again.count(), 0u);
  });
}

TEST_P(NetConnTest, PeerResetIsAnErrorNotEOF) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.set_linger(0));
    ASSERT_TRUE(p.client.close());  // RST
    char buf[16];
    auto r = p.server.read(buf, sizeof buf);
    ASSERT_FALSE(r);
    EXPECT_FALSE(r.is_eof());
    EXPECT_EQ(r.error().err, std::errc::connection_reset) << r.error().to_string();
    EXPECT_EQ(r.error().to_string().rfind("read tcp 127.0.0.1:", 0), 0u);
    EXPECT_NE(r.error().to_string().find(": read: connection reset by peer"), std::string::npos)
        << r.error().to_string();
    EXPECT_FALSE(r.error().is_timeout());
  });
}

// The reset arrives while the read is parked, so the poller reports it
// first. libkqueue takes the socket's error while reporting it (the read
// then found EOF before the event carried the error to the desc).
TEST_P(NetConnTest, PeerResetWakesAParkedReadWithTheReset) {
  run([] {
    for (int i = 0; i < 50; ++i) {
      auto p = tcp_pair();
      weft::Channel<weft::net::IoResult> got(1);
      weft::go([&] {
        char buf[16];
        EXPECT_TRUE(got.send(p.server.read(buf, sizeof buf)));
      });
      ASSERT_TRUE(weft::test::wait_parked());
      ASSERT_TRUE(p.client.set_linger(0));
      ASSERT_TRUE(p.client.close());  // RST
      weft::net::IoResult r = *got.recv();
      ASSERT_FALSE(r);
      ASSERT_FALSE(r.is_eof()) << "iteration " << i;
      ASSERT_EQ(r.error().err, std::errc::connection_reset) << r.error().to_string();
    }
  });
}

// The desc's side of the above, on every backend: an error a backend says
// it took off the socket is what the next read reports, once, where the
// socket itself would now say nothing (EAGAIN for a stream here).
TEST_P(NetConnTest, AnErrorThePollerTookIsTheNextReadsError) {
  run([] {
    auto p = tcp_pair();
    weft::detail::PollDesc* pd = weft::net::SocketAccess::fd(p.server)->pd();
    weft::Channel<weft::net::IoResult> got(1);
    weft::go([&] {
      char buf[16];
      EXPECT_TRUE(got.send(p.server.read(buf, sizeof buf)));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    weft::poll::Event taken{weft::detail::poll_token(pd), weft::poll::kReadable, ECONNRESET};
    weft::detail::netpoll_dispatch(&taken, 1, weft::detail::mono_now_ns());
    weft::net::IoResult r = *got.recv();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err, std::errc::connection_reset) << r.error().to_string();
    EXPECT_NE(r.error().to_string().find(": read: connection reset by peer"), std::string::npos)
        << r.error().to_string();
    // Taken once: the socket is still fine, and the next read gets its data.
    ASSERT_TRUE(p.client.write("x", 1));
    char c = 0;
    auto again = p.server.read(&c, 1);
    ASSERT_TRUE(again) << again.error().to_string();
    EXPECT_EQ(c, 'x');
  });
}

TEST_P(NetConnTest, WriteToClosedPeerNeverRaisesSIGPIPE) {
  // SIGPIPE at its default action would kill the test binary.
  struct sigaction old {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGPIPE, &dfl, &old);
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.server.set_linger(0));
    ASSERT_TRUE(p.server.close());
    std::vector<char> chunk(64 * 1024, 'x');
    bool failed = false;
    for (int i = 0; i < 100 && !failed; ++i) {
      auto w = p.client.write(chunk.data(), chunk.size());
      if (!w) {
        failed = true;
        const auto& e = w.error().err;
        EXPECT_TRUE(e == std::errc::broken_pipe || e == std::errc::connection_reset)
            << w.error().to_string();
      }
    }
    EXPECT_TRUE(failed);
  });
  sigaction(SIGPIPE, &old, nullptr);
}

TEST_P(NetConnTest, CloseWakesParkedReadWithClosed) {
  run([] {
    auto p = tcp_pair();
    weft::Channel<weft::net::IoResult> done(1);
    weft::go([&] {
      char buf[8];
      EXPECT_TRUE(done.send(p.client.read(buf, sizeof buf)));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(p.client.close());
    auto r = *done.recv();
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error() == weft::errc::closed);
    EXPECT_FALSE(r.is_eof());
    EXPECT_FALSE(r.error().is_timeout());
    EXPECT_EQ(r.error().to_string().rfind("read tcp 127.0.0.1:", 0), 0u);
    EXPECT_NE(r.error().to_string().find(": use of closed network connection"), std::string::npos);
    // Every later operation fails the same way; a second close too.
    char buf[4];
    EXPECT_TRUE(p.client.read(buf, 4).error() == weft::errc::closed);
    EXPECT_TRUE(p.client.read(buf, 0).error() == weft::errc::closed);
    EXPECT_TRUE(p.client.write("x").error() == weft::errc::closed);
    auto second = p.client.close();
    ASSERT_FALSE(second);
    EXPECT_EQ(second.error().op, "close");
    EXPECT_TRUE(second.error() == weft::errc::closed);
    auto dl = p.client.set_deadline(weft::test::in(1s));
    ASSERT_FALSE(dl);
    EXPECT_EQ(dl.error().op, "set");
    EXPECT_EQ(p.client.native_handle(), -1);
  });
}

TEST_P(NetConnTest, CloseWakesParkedWriteWithClosedAndCount) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.set_write_buffer(4096));
    ASSERT_TRUE(p.server.set_read_buffer(4096));
    std::vector<char> big(std::size_t{32} << 20, 'y');
    weft::Channel<weft::net::IoResult> done(1);
    weft::go([&] { EXPECT_TRUE(done.send(p.client.write(big.data(), big.size()))); });
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(p.client.close());
    auto w = *done.recv();
    ASSERT_FALSE(w);
    EXPECT_TRUE(w.error() == weft::errc::closed) << w.error().to_string();
    EXPECT_GT(w.count(), 0u);
    EXPECT_LT(w.count(), big.size());
  });
}

TEST_P(NetConnTest, CloseWakesParkedAcceptWithClosed) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    const std::string where = ln->addr().to_string();
    weft::Channel<std::string> done(1);
    weft::go([&] {
      auto c = ln->accept();
      EXPECT_TRUE(done.send(c ? std::string("accepted") : c.error().to_string()));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(ln->close());
    EXPECT_EQ(*done.recv(), "accept tcp " + where + ": use of closed network connection");
    auto again = ln->accept();
    ASSERT_FALSE(again);
    EXPECT_TRUE(again.error() == weft::errc::closed);
    // The port is free again: nobody listens. On io_uring the listener's
    // poll request holds a reference to its file, which the kernel drops a
    // moment after close() returns (a TSan run caught a dial in between), so
    // the port may take a while to go.
    auto d = weft::net::dial("tcp", where);
    for (int i = 0; i < 2000 && d; ++i) {
      weft::sleep_for(std::chrono::milliseconds(1));
      d = weft::net::dial("tcp", where);
    }
    EXPECT_FALSE(d);
  });
}

TEST_P(NetConnTest, ZeroLengthReadReturnsAtOnce) {
  run([] {
    auto p = tcp_pair();
    char buf[1];
    auto r = p.client.read(buf, 0);  // no data: still returns, no wait
    ASSERT_TRUE(r);
    EXPECT_EQ(*r, 0u);
    ASSERT_TRUE(p.server.close());
    auto r2 = p.client.read(buf, 0);  // even at EOF: (0, no error)
    EXPECT_TRUE(r2);
  });
}

TEST_P(NetConnTest, OptionsAndAddresses) {
  run([] {
    auto p = tcp_pair();
    const int fd = p.client.native_handle();
    ASSERT_GE(fd, 0);
    int v = 0;
    socklen_t len = sizeof v;
    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    EXPECT_EQ(v, 1);  // on by default
    ASSERT_EQ(getsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &v, &len), 0);
    EXPECT_EQ(v, 1);
    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len), 0);
    EXPECT_EQ(v, 15);
    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &v, &len), 0);
    EXPECT_EQ(v, 9);
    ASSERT_TRUE(p.client.set_no_delay(false));
    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len), 0);
    EXPECT_EQ(v, 0);
    ASSERT_TRUE(p.client.set_keep_alive_config({.enable = true,
                                                .idle = std::chrono::seconds(30),
                                                .interval = std::chrono::seconds(5),
                                                .count = 3}));
    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len), 0);
    EXPECT_EQ(v, 30);
    ASSERT_EQ(getsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &v, &len), 0);
    EXPECT_EQ(v, 5);
    const int flags = fcntl(fd, F_GETFL);
    EXPECT_TRUE(flags & O_NONBLOCK);
    EXPECT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    EXPECT_EQ(p.client.local_addr().to_string(), p.server.remote_addr().to_string());
    EXPECT_EQ(p.client.remote_addr().to_string(), p.server.local_addr().to_string());
  });
}

// A connection's addresses are made on first use (fd.h's SocketAddress):
// fibers on every worker and a thread asking at once all get the one
// address, the one an accept on IPv4 and on IPv6 was given.
TEST_P(NetConnTest, AddressesMadeOnFirstUseAgreeUnderConcurrentAsks) {
  run([this] {
    std::vector<std::string> listens{"127.0.0.1:0"};
    if (weft::test::have_ipv6_loopback()) listens.push_back("[::1]:0");
    for (const std::string& where : listens) {
      auto ln = weft::net::listen("tcp", where);
      ASSERT_TRUE(ln);
      for (int round = 0; round < weft::test::stress_iterations(200); ++round) {
        auto p = weft::test::tcp_pair(*ln);
        const std::string want_remote = p.client.local_addr().to_string();
        const std::string want_local = p.client.remote_addr().to_string();
        weft::WaitGroup asked;
        std::atomic<int> wrong{0};
        auto ask = [&] {
          if (p.server.remote_addr().to_string() != want_remote) wrong.fetch_add(1);
          if (p.server.local_addr().to_string() != want_local) wrong.fetch_add(1);
        };
        asked.add(workers() + 1);
        for (int i = 0; i < workers(); ++i) {
          weft::go([&] {
            ask();
            asked.done();
          });
        }
        std::thread thread([&] {
          ask();
          asked.done();
        });
        asked.wait();
        thread.join();
        ASSERT_EQ(wrong.load(), 0) << where;
      }
    }
  });
}

TEST_P(NetConnTest, AdoptedSocketWorks) {
  run([] {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);  // blocking on purpose
    auto a = weft::net::adopt_conn(sv[0], "unix");
    auto b = weft::net::adopt_conn(sv[1], "unix");
    ASSERT_TRUE(a && b);
    weft::Channel<std::string> got(1);
    weft::go([&] {
      char buf[8];
      auto r = b->read(buf, sizeof buf);  // parks instead of blocking the worker
      EXPECT_TRUE(got.send(r ? std::string(buf, *r) : r.error().to_string()));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(a->write("hi"));
    EXPECT_EQ(*got.recv(), "hi");
  });
}

WEFT_NET_INSTANTIATE(NetConnTest);

// Without a running runtime there is no poller to register a socket with:
// every call that would need one fails, before any socket or lookup exists,
// with an error that says so (not EPERM, which reads like a permissions
// problem), and nothing aborts.
namespace outside {

constexpr const char* kNoRuntime = "no weft runtime is running (call inside weft::run)";
std::atomic<int> lookups{0};
int counting_getaddrinfo(const char*, const char*, const addrinfo*, addrinfo** res) {
  *res = nullptr;
  ++lookups;
  return EAI_NONAME;
}

}  // namespace outside

TEST(NetOutsideRuntime, ListenAndDialSayTheyNeedARunningRuntime) {
  using outside::kNoRuntime;
  ASSERT_EQ(weft::num_workers(), 0);
  const int fds_before = weft::test::open_sockets();
  auto ln = weft::net::listen("tcp", "127.0.0.1:0");
  ASSERT_FALSE(ln);
  EXPECT_EQ(ln.error().to_string(), std::string("listen tcp 127.0.0.1:0: ") + kNoRuntime);
  EXPECT_EQ(ln.error().err, weft::errc::no_runtime);
  auto pc = weft::net::listen_packet("udp", "127.0.0.1:0");
  ASSERT_FALSE(pc);
  EXPECT_EQ(pc.error().to_string(), std::string("listen udp 127.0.0.1:0: ") + kNoRuntime);
  const std::string path = "/tmp/weft-outside-runtime-" + std::to_string(getpid()) + ".sock";
  auto un = weft::net::listen("unix", path);
  ASSERT_FALSE(un);
  EXPECT_EQ(un.error().to_string(), "listen unix " + path + ": " + kNoRuntime);
  EXPECT_NE(access(path.c_str(), F_OK), 0) << "a socket file was left at " << path;
  auto c = weft::net::dial("tcp", "127.0.0.1:1");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().to_string(), std::string("dial tcp 127.0.0.1:1: ") + kNoRuntime);
  weft::net::Dialer d;
  d.timeout = std::chrono::seconds(5);  // a deadline, which needs the timer heap
  auto t = d.dial("tcp", "127.0.0.1:1");
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().to_string(), std::string("dial tcp 127.0.0.1:1: ") + kNoRuntime);
  EXPECT_EQ(weft::test::open_sockets(), fds_before);
  // A socket made elsewhere is closed, as adopt_conn promises on failure.
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(s, 0);
  auto adopted = weft::net::adopt_conn(s, "tcp");
  ASSERT_FALSE(adopted);
  EXPECT_EQ(adopted.error().to_string(), std::string("file tcp: ") + kNoRuntime);
  EXPECT_EQ(weft::test::open_sockets(), fds_before);
}

TEST(NetOutsideRuntime, OnlyLookupsThatNeedTheResolverFail) {
  using outside::kNoRuntime;
  outside::lookups = 0;
  weft::net::detail::set_getaddrinfo_for_tests(&outside::counting_getaddrinfo);
  // Numeric hosts, /etc/hosts and "localhost" need no fiber.
  EXPECT_TRUE(weft::net::resolve_addr("tcp", "127.0.0.1:80"));
  EXPECT_TRUE(weft::net::resolve_addr("tcp", "localhost:80"));
  auto l = weft::net::lookup_ip("weft-test-host.invalid");
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().to_string(), std::string("lookup weft-test-host.invalid: ") + kNoRuntime);
  auto c = weft::net::dial("tcp", "weft-test-host.invalid:80");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().to_string(),
            std::string("dial tcp: lookup weft-test-host.invalid: ") + kNoRuntime);
  EXPECT_EQ(outside::lookups.load(), 0);
  weft::net::detail::set_getaddrinfo_for_tests(nullptr);
}

}  // namespace
