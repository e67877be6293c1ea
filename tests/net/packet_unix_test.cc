// UDP and Unix sockets: datagrams, connected UDP, Unix streams, unixgram,
// abstract names.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using weft::test::NetBackendTest;

class NetPacketUnixTest : public NetBackendTest {};

std::string temp_path(const char* tag) {
  return "/tmp/weft-net-" + std::to_string(getpid()) + "-" + tag + ".sock";
}

TEST_P(NetPacketUnixTest, UdpRoundTrips) {
  run([] {
    auto srv = weft::net::listen_packet("udp", "127.0.0.1:0");
    ASSERT_TRUE(srv) << srv.error().to_string();
    auto cli = weft::net::dial("udp", srv->local_addr().to_string());
    ASSERT_TRUE(cli) << cli.error().to_string();
    weft::WaitGroup wg;
    wg.add(1);
    weft::go([&] {
      char buf[64];
      for (int i = 0; i < 10; ++i) {
        auto d = srv->read_from(buf, sizeof buf);
        ASSERT_TRUE(d) << d.error().to_string();
        EXPECT_EQ(d->from.to_string(), cli->local_addr().to_string());
        ASSERT_TRUE(srv->write_to(buf, d->n, d->from));
      }
      wg.done();
    });
    for (int i = 0; i < 10; ++i) {
      const std::string msg = "dgram " + std::to_string(i);
      ASSERT_TRUE(cli->write(msg));
      char buf[64];
      auto r = cli->read(buf, sizeof buf);
      ASSERT_TRUE(r) << r.error().to_string();
      EXPECT_EQ(std::string(buf, *r), msg);
    }
    wg.wait();
    // An empty datagram is a datagram, not EOF.
    ASSERT_TRUE(cli->write(""));
    char buf[4];
    auto d = srv->read_from(buf, sizeof buf);
    ASSERT_TRUE(d);
    EXPECT_EQ(d->n, 0u);
  });
}

// A connected UDP socket's datagram to a closed port comes back as an ICMP
// error, which a parked read reports once (Go's setEventErr), on every
// backend: epoll reports it alone, libkqueue takes it off the socket into
// the event. (A read right after it may still say "not pollable" until
// another event comes, as Go's does; here a datagram comes.)
TEST_P(NetPacketUnixTest, UdpIcmpErrorReachesAParkedReadOnce) {
  run([] {
    std::string closed_port;
    {
      auto gone = weft::net::listen_packet("udp", "127.0.0.1:0");
      ASSERT_TRUE(gone) << gone.error().to_string();
      closed_port = gone->local_addr().to_string();
    }
    auto cli = weft::net::dial("udp", closed_port);
    ASSERT_TRUE(cli) << cli.error().to_string();
    weft::Channel<weft::net::IoResult> got(1);
    weft::go([&] {
      char buf[16];
      EXPECT_TRUE(got.send(cli->read(buf, sizeof buf)));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(cli->write("ping"));
    weft::net::IoResult r = *got.recv();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err, std::errc::connection_refused) << r.error().to_string();
    // Once: a datagram from the port that refused now reaches the next
    // read (its event clears the error mark, as in Go).
    auto back = weft::net::listen_packet("udp", closed_port);
    ASSERT_TRUE(back) << back.error().to_string();
    ASSERT_TRUE(back->write_to(std::string_view("pong"), cli->local_addr()));
    char buf[16];
    auto after = cli->read(buf, sizeof buf);
    ASSERT_TRUE(after) << after.error().to_string();
    EXPECT_EQ(std::string_view(buf, *after), "pong");
  });
}

TEST_P(NetPacketUnixTest, UdpReadDeadlineAndClose) {
  run([] {
    auto srv = weft::net::listen_packet("udp", "127.0.0.1:0");
    ASSERT_TRUE(srv);
    ASSERT_TRUE(srv->set_read_deadline(Clock::now() + 20ms));
    char buf[4];
    auto d = srv->read_from(buf, sizeof buf);
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().to_string(), "read udp " + srv->local_addr().to_string() + ": i/o timeout");
    ASSERT_TRUE(srv->set_read_deadline(Clock::time_point{}));
    weft::Channel<bool> closed(1);
    weft::go([&] {
      auto r = srv->read_from(buf, sizeof buf);
      EXPECT_TRUE(closed.send(!r && r.error() == weft::errc::closed));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(srv->close());
    EXPECT_TRUE(*closed.recv());
  });
}

TEST_P(NetPacketUnixTest, Udp6RoundTrip) {
  if (!weft::test::have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  run([] {
    auto srv = weft::net::listen_packet("udp6", "[::1]:0");
    ASSERT_TRUE(srv) << srv.error().to_string();
    auto cli = weft::net::listen_packet("udp", "[::1]:0");
    ASSERT_TRUE(cli);
    ASSERT_TRUE(cli->write_to("six", srv->local_addr()));
    char buf[8];
    auto d = srv->read_from(buf, sizeof buf);
    ASSERT_TRUE(d);
    EXPECT_EQ(std::string(buf, d->n), "six");
    EXPECT_EQ(d->from.to_string(), cli->local_addr().to_string());
  });
}

TEST_P(NetPacketUnixTest, UnixStreamEchoAndUnlinkOnClose) {
  run([] {
    const std::string path = temp_path("stream");
    ::unlink(path.c_str());
    auto ln = weft::net::listen("unix", path);
    ASSERT_TRUE(ln) << ln.error().to_string();
    EXPECT_EQ(ln->addr().to_string(), path);
    weft::go([&] {
      auto c = ln->accept();
      ASSERT_TRUE(c);
      char buf[32];
      auto r = c->read(buf, sizeof buf);
      ASSERT_TRUE(r);
      ASSERT_TRUE(c->write(buf, *r));
    });
    auto c = weft::net::dial("unix", path);
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_EQ(c->remote_addr().to_string(), path);
    ASSERT_TRUE(c->write("over unix"));
    char buf[32];
    auto r = c->read_full(buf, 9);
    ASSERT_TRUE(r);
    EXPECT_EQ(std::string(buf, 9), "over unix");
    ASSERT_TRUE(c->set_read_deadline(Clock::now() - 1s));
    auto t = c->read(buf, 1);
    ASSERT_FALSE(t);
    EXPECT_EQ(t.error().to_string(), "read unix ->" + path + ": i/o timeout");
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0);
    ASSERT_TRUE(ln->close());
    EXPECT_NE(::stat(path.c_str(), &st), 0);  // removed with the listener
  });
}

// SOCK_SEQPACKET: a stream of connections whose reads keep message
// boundaries; a read shorter than the message drops the rest (Go's
// "unixpacket").
TEST_P(NetPacketUnixTest, UnixpacketKeepsMessageBoundaries) {
  run([] {
    const std::string path = temp_path("seqpacket");
    ::unlink(path.c_str());
    auto ln = weft::net::listen("unixpacket", path);
    ASSERT_TRUE(ln) << ln.error().to_string();
    auto c = weft::net::dial("unixpacket", path);
    ASSERT_TRUE(c) << c.error().to_string();
    auto s = ln->accept();
    ASSERT_TRUE(s) << s.error().to_string();
    ASSERT_TRUE(c->write("ab"));
    ASSERT_TRUE(c->write("cde"));
    ASSERT_TRUE(c->write("truncated"));
    char buf[32];
    auto r = s->read(buf, sizeof buf);
    ASSERT_TRUE(r);
    EXPECT_EQ(std::string(buf, *r), "ab");
    r = s->read(buf, sizeof buf);
    ASSERT_TRUE(r);
    EXPECT_EQ(std::string(buf, *r), "cde");
    r = s->read(buf, 5);
    ASSERT_TRUE(r);
    EXPECT_EQ(std::string(buf, *r), "trunc");
    ASSERT_TRUE(c->close());
    r = s->read(buf, sizeof buf);  // the rest of "truncated" is gone: end of stream
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.is_eof()) << r.error().to_string();
  });
}

TEST_P(NetPacketUnixTest, UnixAbstractName) {
  run([] {
    const std::string name = "@weft-net-" + std::to_string(getpid());
    auto ln = weft::net::listen("unix", name);
    ASSERT_TRUE(ln) << ln.error().to_string();
    EXPECT_EQ(ln->addr().to_string(), name);
    auto c = weft::net::dial("unix", name);
    ASSERT_TRUE(c) << c.error().to_string();
    auto s = ln->accept();
    ASSERT_TRUE(s);
    EXPECT_EQ(s->local_addr().to_string(), name);
    ASSERT_TRUE(s->write("abstract"));
    char buf[8];
    ASSERT_TRUE(c->read_full(buf, 8));
    EXPECT_EQ(std::string(buf, 8), "abstract");
    auto missing = weft::net::dial("unix", "@weft-no-such-name-" + std::to_string(getpid()));
    ASSERT_FALSE(missing);
    EXPECT_EQ(missing.error().err, std::errc::connection_refused);
  });
}

TEST_P(NetPacketUnixTest, UnixgramDatagrams) {
  run([] {
    const std::string a_path = temp_path("gram-a"), b_path = temp_path("gram-b");
    ::unlink(a_path.c_str());
    ::unlink(b_path.c_str());
    auto a = weft::net::listen_packet("unixgram", a_path);
    auto b = weft::net::listen_packet("unixgram", b_path);
    ASSERT_TRUE(a && b);
    ASSERT_TRUE(a->write_to("one", b->local_addr()));
    ASSERT_TRUE(a->write_to("two", b->local_addr()));
    char buf[8];
    auto d1 = b->read_from(buf, sizeof buf);
    ASSERT_TRUE(d1);
    EXPECT_EQ(std::string(buf, d1->n), "one");
    EXPECT_EQ(d1->from.to_string(), a_path);
    auto d2 = b->read_from(buf, sizeof buf);
    ASSERT_TRUE(d2);
    EXPECT_EQ(std::string(buf, d2->n), "two");
    // A connected unixgram Conn.
    auto c = weft::net::dial("unixgram", b_path);
    ASSERT_TRUE(c) << c.error().to_string();
    ASSERT_TRUE(c->write("three"));
    auto d3 = b->read_from(buf, sizeof buf);
    ASSERT_TRUE(d3);
    EXPECT_EQ(std::string(buf, d3->n), "three");
    ::unlink(a_path.c_str());
    ::unlink(b_path.c_str());
  });
}

WEFT_NET_INSTANTIATE(NetPacketUnixTest);

}  // namespace
