// dial: refused, timeouts against a full backlog, Happy Eyeballs, address
// errors, cancellation through the canceler a context will use.
#include <dirent.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using weft::net::Addr;
using weft::net::Conn;
using weft::net::Dialer;
using weft::test::FullBacklog;
using weft::test::NetBackendTest;
using weft::test::open_sockets;

class NetDialTest : public NetBackendTest {};

std::string free_port_address(const char* host) {
  auto ln = weft::net::listen("tcp", std::string(host) + ":0");
  EXPECT_TRUE(ln);
  std::string a = ln->addr().to_string();
  EXPECT_TRUE(ln->close());
  return a;
}

TEST_P(NetDialTest, RefusedPrintsGoMessage) {
  run([] {
    const std::string where = free_port_address("127.0.0.1");
    auto c = weft::net::dial("tcp", where);
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().to_string(), "dial tcp " + where + ": connect: connection refused");
    EXPECT_EQ(c.error().err, std::errc::connection_refused);
    EXPECT_FALSE(c.error().is_timeout());
  });
}

TEST_P(NetDialTest, TimeoutAgainstAFullBacklog) {
  run([] {
    FullBacklog full("127.0.0.1:0");
    ASSERT_TRUE(full.ok) << "could not fill the accept queue";
    const auto t0 = Clock::now();
    auto c = weft::net::dial_timeout("tcp", full.ln.addr().to_string(), 100ms);
    const auto took = Clock::now() - t0;
    ASSERT_FALSE(c);
    EXPECT_TRUE(c.error().is_timeout());
    EXPECT_EQ(c.error().to_string(), "dial tcp " + full.ln.addr().to_string() + ": i/o timeout");
    EXPECT_GE(took, 100ms);
    // An absolute Dialer::deadline works the same way.
    Dialer d;
    d.deadline = Clock::now() + 50ms;
    auto c2 = d.dial("tcp", full.ln.addr().to_string());
    ASSERT_FALSE(c2);
    EXPECT_TRUE(c2.error().is_timeout());
  });
}

TEST_P(NetDialTest, ExpiredDeadlineFailsBeforeConnecting) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    Dialer d;
    d.timeout = -1s;  // a negative timeout counts (DL-1)
    auto c = d.dial("tcp", ln->addr().to_string());
    ASSERT_FALSE(c);
    EXPECT_TRUE(c.error().is_timeout());
    // Nothing reached the listener.
    ASSERT_TRUE(ln->set_deadline(Clock::now() + 20ms));
    EXPECT_TRUE(ln->accept().error().is_timeout());
  });
}

// The earliest representable deadline and the most negative timeout are long
// expired, not an overflow: deadline - now was once computed unchecked
// (UBSan: signed overflow) and wrapped to a deadline far in the future.
TEST_P(NetDialTest, TheEarliestDeadlineAndTimeoutAreExpired) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    const std::string port = std::to_string(ln->addr().port());
    for (const std::string& address : {"127.0.0.1:" + port, "localhost:" + port}) {
      Dialer by_deadline;
      by_deadline.deadline = Clock::time_point::min();
      auto c = by_deadline.dial("tcp", address);
      ASSERT_FALSE(c) << address;
      EXPECT_TRUE(c.error().is_timeout()) << c.error().to_string();
      Dialer by_timeout;
      by_timeout.timeout = std::chrono::nanoseconds::min();
      auto c2 = by_timeout.dial("tcp", address);
      ASSERT_FALSE(c2) << address;
      EXPECT_TRUE(c2.error().is_timeout()) << c2.error().to_string();
    }
  });
}

TEST_P(NetDialTest, ConnectDeadlineIsClearedAfterSuccess) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    Dialer d;
    d.timeout = 50ms;
    auto c = d.dial("tcp", ln->addr().to_string());
    ASSERT_TRUE(c) << c.error().to_string();
    auto s = ln->accept();
    ASSERT_TRUE(s);
    weft::sleep_for(100ms);  // past the dial timeout: it must not linger
    std::vector<char> big(std::size_t{4} << 20, 'z');
    // The reader uses `s`, which this body owns: it is joined before the
    // body returns, or it would read through a destroyed connection.
    weft::WaitGroup reader;
    reader.add(1);
    bool read_all = false;
    weft::go([&] {
      std::vector<char> sink(big.size());
      auto r = s->read_full(sink.data(), sink.size());
      read_all = r && *r == sink.size() && sink == big;
      reader.done();
    });
    auto w = c->write(big.data(), big.size());
    EXPECT_TRUE(w) << w.error().to_string();
    // A failed write (a lingering deadline) would leave the reader waiting
    // for bytes that never come: closing gives it EOF, and the test fails
    // instead of hanging.
    if (!w) (void)c->close();
    reader.wait();
    EXPECT_TRUE(read_all);
  });
}

TEST_P(NetDialTest, BadAddressesGivePreciseMessages) {
  run([] {
    auto msg = [](const char* net, const char* addr) {
      auto c = weft::net::dial(net, addr);
      return c ? std::string("connected") : c.error().to_string();
    };
    EXPECT_EQ(msg("tcp", "1.2.3.4"), "dial tcp: address 1.2.3.4: missing port in address");
    EXPECT_EQ(msg("tcp", "[::1:80"), "dial tcp: address [::1:80: missing ']' in address");
    EXPECT_EQ(msg("tcp", "::1:80"), "dial tcp: address ::1:80: too many colons in address");
    EXPECT_EQ(msg("tcp", "127.0.0.1:70000"), "dial tcp: address 70000: invalid port");
    EXPECT_EQ(msg("tcp4", "[::1]:80"), "dial tcp4: address ::1: no suitable address found");
    EXPECT_EQ(msg("tcp", ""), "dial tcp: missing address");
    EXPECT_EQ(msg("foo", "1.2.3.4:5"), "dial foo: unknown network foo");
    // The lookup's own reason depends on the machine's resolver (NXDOMAIN
    // where DNS answers, a temporary failure where nothing does).
    const std::string lookup = msg("tcp", "no-such-host.invalid:80");
    EXPECT_EQ(lookup.rfind("dial tcp: lookup no-such-host.invalid: ", 0), 0u) << lookup;
  });
}

// A zone that names no interface fails where the kernel would need it (Go
// silently uses scope 0 there, so a link-local dial fails with EINVAL or
// leaves through whichever interface the kernel picks).
TEST_P(NetDialTest, AnUnknownZoneIsAnErrorThatNamesIt) {
  if (!weft::test::have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  run([] {
    const int fds_before = open_sockets();
    auto c = weft::net::dial("tcp", "[fe80::1%weft-nosuch0]:80");
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().to_string(),
              "dial tcp [fe80::1%weft-nosuch0]:80: no such network interface");
    auto ln = weft::net::listen("tcp", "[::1%weft-nosuch0]:0");
    ASSERT_FALSE(ln);
    EXPECT_EQ(ln.error().to_string(), "listen tcp [::1%weft-nosuch0]:0: no such network interface");
    EXPECT_EQ(open_sockets(), fds_before);
    auto pc = weft::net::listen_packet("udp6", "[::1]:0");
    ASSERT_TRUE(pc) << pc.error().to_string();
    auto to = weft::net::resolve_addr("udp6", "[fe80::1%weft-nosuch0]:53");
    ASSERT_TRUE(to) << to.error().to_string();
    auto w = pc->write_to("x", *to);
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().to_string(), "write udp6 " + pc->local_addr().to_string() +
                                         "->[fe80::1%weft-nosuch0]:53: no such network interface");
  });
}

// Go's resolveAddrList with a local address: only its family is dialed.
TEST_P(NetDialTest, ASpecificLocalAddressPicksTheFamily) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    const std::uint16_t port = ln->addr().port();
    Dialer d;
    d.local_addr = Addr::ip_port("tcp", weft::net::IP::loopback_v4(), 0);
    // ::1 first would be the primary family; the local address rules it out.
    auto c = d.dial_addrs("tcp", {Addr::ip_port("tcp", weft::net::IP::loopback_v6(), port),
                                  Addr::ip_port("tcp", weft::net::IP::loopback_v4(), port)});
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_TRUE(c->remote_addr().ip().is_v4());
    EXPECT_TRUE(c->local_addr().ip().is_v4());
    d.local_addr = Addr::ip_port("tcp", weft::net::IP::loopback_v6(), 0);
    auto none = d.dial("tcp", ln->addr().to_string());
    ASSERT_FALSE(none);
    EXPECT_EQ(none.error().to_string(), "dial tcp: address [::1]:0: no suitable address found");
  });
}

TEST_P(NetDialTest, LocalhostAndWildcardListenerAddresses) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    auto c = weft::net::dial("tcp", "localhost:" + std::to_string(ln->addr().port()));
    ASSERT_TRUE(c) << c.error().to_string();
    // Dialing what a ":0" listener reports works (Go issue #18806).
    auto any = weft::net::listen("tcp", ":0");
    ASSERT_TRUE(any) << any.error().to_string();
    auto c2 = weft::net::dial("tcp", any->addr().to_string());
    ASSERT_TRUE(c2) << any->addr().to_string() << ": " << c2.error().to_string();
    auto s2 = any->accept();
    ASSERT_TRUE(s2);
    // A local address for the dialer.
    Dialer d;
    d.local_addr = Addr::ip_port("tcp", weft::net::IP::loopback_v4(), 0);
    auto c3 = d.dial("tcp", ln->addr().to_string());
    ASSERT_TRUE(c3) << c3.error().to_string();
    EXPECT_TRUE(c3->local_addr().ip().is_loopback());
  });
}

// Go listens on both families for "tcp" on 0.0.0.0 (and on "::"), and on
// IPv4 alone for "tcp4".
TEST_P(NetDialTest, WildcardIPv4ListenerTakesBothFamilies) {
  if (!weft::test::have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  run([] {
    auto any = weft::net::listen("tcp", "0.0.0.0:0");
    ASSERT_TRUE(any) << any.error().to_string();
    const std::string port = std::to_string(any->addr().port());
    for (const std::string host : {"127.0.0.1", "[::1]"}) {
      auto c = weft::net::dial("tcp", host + ":" + port);
      ASSERT_TRUE(c) << host << ": " << c.error().to_string();
      auto s = any->accept();
      ASSERT_TRUE(s) << s.error().to_string();
      ASSERT_TRUE(c->write("x"));
      char b = 0;
      ASSERT_TRUE(s->read_full(&b, 1));
    }
    auto v4 = weft::net::listen("tcp4", "0.0.0.0:0");
    ASSERT_TRUE(v4) << v4.error().to_string();
    auto refused = weft::net::dial("tcp", "[::1]:" + std::to_string(v4->addr().port()));
    EXPECT_FALSE(refused);
  });
}

TEST_P(NetDialTest, HappyEyeballsFallsBackToIPv4WhenIPv6Hangs) {
  if (!weft::test::have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  run([] {
    FullBacklog v6("[::1]:0");
    ASSERT_TRUE(v6.ok) << "could not fill the ::1 accept queue";
    auto v4 = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(v4);
    const int fds_before = open_sockets();
    Dialer d;
    d.fallback_delay = 50ms;
    d.timeout = 30s;
    const auto t0 = Clock::now();
    auto c = d.dial_addrs("tcp", {v6.ln.addr(), v4->addr()});
    const auto took = Clock::now() - t0;
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_EQ(c->remote_addr().to_string(), v4->addr().to_string());
    EXPECT_GE(took, 50ms);  // the fallback waited for its delay
    EXPECT_LT(took, 20s);   // and did not wait for the primary's timeout
    // The hanging primary was canceled and closed: only the winner is new.
    EXPECT_EQ(open_sockets(), fds_before + 1);
    auto s = v4->accept();
    ASSERT_TRUE(s);
    ASSERT_TRUE(c->write("he"));
    char buf[2];
    EXPECT_TRUE(s->read_full(buf, 2));
  });
}

TEST_P(NetDialTest, HappyEyeballsStartsFallbackAtOnceWhenPrimaryFails) {
  if (!weft::test::have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  run([] {
    const std::string refused6 = free_port_address("[::1]");
    auto v4 = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(v4);
    auto a6 = weft::net::resolve_addr("tcp", refused6);
    ASSERT_TRUE(a6);
    Dialer d;
    d.fallback_delay = 60s;  // only a failed primary can start it early
    const auto t0 = Clock::now();
    auto c = d.dial_addrs("tcp", {*a6, v4->addr()});
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_LT(Clock::now() - t0, 30s);
    EXPECT_EQ(c->remote_addr().to_string(), v4->addr().to_string());
  });
}

TEST_P(NetDialTest, HappyEyeballsBothFailReturnsPrimaryError) {
  if (!weft::test::have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  run([] {
    const std::string r6 = free_port_address("[::1]");
    const std::string r4 = free_port_address("127.0.0.1");
    Dialer d;
    auto c = d.dial_addrs(
        "tcp", {*weft::net::resolve_addr("tcp", r6), *weft::net::resolve_addr("tcp", r4)});
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().to_string(), "dial tcp " + r6 + ": connect: connection refused");
    // v4 first: v4 is the primary.
    auto c2 = d.dial_addrs(
        "tcp", {*weft::net::resolve_addr("tcp", r4), *weft::net::resolve_addr("tcp", r6)});
    ASSERT_FALSE(c2);
    EXPECT_EQ(c2.error().to_string(), "dial tcp " + r4 + ": connect: connection refused");
  });
}

TEST_P(NetDialTest, SerialDialTriesTheNextAddress) {
  run([] {
    const std::string r4 = free_port_address("127.0.0.1");
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    Dialer d;
    d.fallback_delay = -1ns;  // no racing
    auto c = d.dial_addrs("tcp", {*weft::net::resolve_addr("tcp", r4), ln->addr()});
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_EQ(c->remote_addr().to_string(), ln->addr().to_string());
  });
}

TEST_P(NetDialTest, CancelerInterruptsAConnectInProgress) {
  run([] {
    FullBacklog full("127.0.0.1:0");
    ASSERT_TRUE(full.ok);
    auto cancel = weft::net::detail::DialCanceler::make();
    weft::Channel<std::string> done(1);
    Dialer d;
    weft::go([&] {
      auto c = d.dial_impl("tcp", full.ln.addr().to_string(), std::nullopt, cancel);
      EXPECT_TRUE(done.send(c ? std::string("connected") : c.error().to_string()));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    cancel->cancel(weft::errc::operation_canceled);
    EXPECT_EQ(*done.recv(), "dial tcp " + full.ln.addr().to_string() + ": operation was canceled");
    // Already canceled: fails before any socket.
    const int before = open_sockets();
    auto c = d.dial_impl("tcp", full.ln.addr().to_string(), std::nullopt, cancel);
    ASSERT_FALSE(c);
    EXPECT_TRUE(c.error().is_canceled());
    EXPECT_EQ(open_sockets(), before);
  });
}

WEFT_NET_INSTANTIATE(NetDialTest);

}  // namespace
