// The context-aware API beside dial(ctx, ...): ListenConfig::listen(ctx, ...)
// and listen_packet(ctx, ...), whose context bounds only the name's lookup;
// Dialer::dial_addrs(ctx, ...); and the Resolver hook, which makes a name
// resolve to any addresses, so that Happy Eyeballs and parallel dials can be
// driven with a cancellable context.
#include <gtest/gtest.h>
#include <netdb.h>

#include <atomic>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "net_internal.h"
#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/debug.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using weft::errc;
using weft::net::Addr;
using weft::net::Conn;
using weft::net::Dialer;
using weft::net::IP;
using weft::net::ListenConfig;
using weft::net::OpError;
using weft::net::Resolver;
using weft::test::FullBacklog;
using weft::test::have_ipv6_loopback;
using weft::test::NetBackendTest;
using weft::test::open_sockets;
using weft::test::wait_parked;
using Clock = std::chrono::steady_clock;
using Ips = weft::net::Result<std::vector<IP>>;

class NetContextApiTest : public NetBackendTest {};

// What a test hook saw: how often it was called, and the last family.
struct Seen {
  std::atomic<int> calls{0};
  std::atomic<int> family{-1};
};

// A resolver that answers every name with `ips` and counts its calls.
std::shared_ptr<Resolver> resolving_to(std::vector<IP> ips,
                                       std::shared_ptr<Seen> seen = std::make_shared<Seen>()) {
  auto r = std::make_shared<Resolver>();
  r->lookup = [ips = std::move(ips), seen](const weft::Context&, std::string_view,
                                           int family) -> Ips {
    ++seen->calls;
    seen->family = family;
    return ips;
  };
  return r;
}

std::shared_ptr<Resolver> failing_with(OpError e) {
  auto r = std::make_shared<Resolver>();
  r->lookup = [e = std::move(e)](const weft::Context&, std::string_view, int) -> Ips { return e; };
  return r;
}

std::string outcome(const weft::net::Result<Conn>& c) {
  return c ? "connected to " + c->remote_addr().to_string()
           : c.error().to_string() + (c.error().is_canceled() ? "" : " (not canceled)");
}

// Cancels `made` from another fiber once the hook says it has been entered;
// `canceler` is done after the cancel (the caller joins it: `made` is its).
void cancel_once_entered(weft::Channel<int> entered, weft::WithCancelResult<weft::CancelFunc>& made,
                         weft::WaitGroup& canceler) {
  canceler.add(1);
  weft::go([&made, &canceler, entered]() mutable {
    (void)entered.recv();
    made.cancel();
    canceler.done();
  });
}

// Go: ListenConfig.Listen's resolution fails as OpError{listen, net, Addr:
// nil}: "listen tcp: lookup HOST: operation was canceled", and no socket was
// made. A literal or empty host needs no lookup, so a done ctx changes
// nothing for it (L-2).
TEST_P(NetContextApiTest, ListenWithADoneContextFailsInTheLookupBeforeAnySocket) {
  run([] {
    auto seen = std::make_shared<Seen>();
    ListenConfig cfg;
    cfg.resolver = resolving_to({IP::loopback_v4()}, seen);
    auto made = weft::with_cancel(weft::background());
    made.cancel();
    const int fds_before = open_sockets();
    auto ln = cfg.listen(made.ctx, "tcp", "example.test:0");
    ASSERT_FALSE(ln);
    EXPECT_TRUE(ln.error().is_canceled());
    EXPECT_EQ(ln.error().err, errc::operation_canceled);
    EXPECT_EQ(ln.error().to_string(), "listen tcp: lookup example.test: operation was canceled");
    auto pc = cfg.listen_packet(made.ctx, "udp", "example.test:0");
    ASSERT_FALSE(pc);
    EXPECT_EQ(pc.error().to_string(), "listen udp: lookup example.test: operation was canceled");
    auto expired = weft::with_timeout(weft::background(), -1s);
    auto t = cfg.listen(expired.ctx, "tcp4", "example.test:0");
    ASSERT_FALSE(t);
    EXPECT_TRUE(t.error().is_timeout());
    EXPECT_EQ(t.error().to_string(), "listen tcp4: lookup example.test: i/o timeout");
    EXPECT_EQ(seen->calls.load(), 0);
    EXPECT_EQ(open_sockets(), fds_before);

    // The default resolver: the same, and getaddrinfo is never asked.
    weft::test::counted_lookups = 0;
    weft::net::detail::set_getaddrinfo_for_tests(&weft::test::counting_no_such_host);
    auto d = ListenConfig{}.listen(made.ctx, "tcp", "weft-test-host.invalid:0");
    weft::net::detail::set_getaddrinfo_for_tests(nullptr);
    ASSERT_FALSE(d);
    EXPECT_EQ(d.error().to_string(),
              "listen tcp: lookup weft-test-host.invalid: operation was canceled");
    EXPECT_EQ(weft::test::counted_lookups.load(), 0);
    EXPECT_EQ(open_sockets(), fds_before);

    // No lookup, so the done ctx does not matter.
    auto literal = cfg.listen(made.ctx, "tcp", "127.0.0.1:0");
    ASSERT_TRUE(literal) << literal.error().to_string();
    auto wildcard = cfg.listen_packet(made.ctx, "udp4", ":0");
    ASSERT_TRUE(wildcard) << wildcard.error().to_string();
    EXPECT_EQ(seen->calls.load(), 0);
  });
}

// A hook that honours its context: it parks on ctx.done(), and a cancel from
// another fiber ends the listen with the lookup's cancellation.
TEST_P(NetContextApiTest, ListenCanceledWhileTheHookWaitsOnTheContext) {
  run([] {
    weft::Channel<int> entered(1);
    auto r = std::make_shared<Resolver>();
    r->lookup = [entered](const weft::Context& ctx, std::string_view, int) mutable -> Ips {
      EXPECT_TRUE(entered.send(1));
      ctx.done().wait();
      return OpError(weft::net::detail::map_context_error(ctx.err()));
    };
    ListenConfig cfg;
    cfg.resolver = r;
    auto made = weft::with_cancel(weft::background());
    weft::WaitGroup canceler;  // joined below: it uses `made`
    cancel_once_entered(entered, made, canceler);
    const int fds_before = open_sockets();
    auto ln = cfg.listen(made.ctx, "tcp", "example.test:0");
    ASSERT_FALSE(ln);
    EXPECT_TRUE(ln.error().is_canceled());
    EXPECT_EQ(ln.error().to_string(), "listen tcp: lookup example.test: operation was canceled");
    EXPECT_EQ(open_sockets(), fds_before);
    canceler.wait();
    // The lookup's fiber, abandoned by the cancel, finishes in the
    // background: let it end before main does, or teardown abandons it with
    // what its closure holds (LeakSanitizer).
    EXPECT_TRUE(weft::test::eventually([] { return weft::metrics().fibers_live == 1; }));
  });
}

// The listener outlives its context: ctx covers the resolution only. A
// name listens on its first IPv4 address (Go's addrs.first(isIPv4)), and
// tcp6 hands the hook AF_INET6 and keeps only IPv6 answers.
TEST_P(NetContextApiTest, ListenResolvesThroughTheHookAndOutlivesItsContext) {
  run([] {
    auto seen = std::make_shared<Seen>();
    ListenConfig cfg;
    cfg.resolver = resolving_to({IP::loopback_v6(), IP::loopback_v4()}, seen);
    auto made = weft::with_cancel(weft::background());
    auto ln = cfg.listen(made.ctx, "tcp", "example.test:0");
    ASSERT_TRUE(ln) << ln.error().to_string();
    EXPECT_EQ(seen->calls.load(), 1);
    EXPECT_EQ(seen->family.load(), AF_UNSPEC);
    EXPECT_EQ(ln->addr().ip(), IP::loopback_v4());
    made.cancel();
    weft::Channel<bool> accepted(1);
    weft::go([&] { EXPECT_TRUE(accepted.send(static_cast<bool>(ln->accept()))); });
    auto c = weft::net::dial("tcp", ln->addr().to_string());
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_TRUE(*accepted.recv());

    if (!have_ipv6_loopback()) return;
    auto ln6 = cfg.listen(weft::background(), "tcp6", "example.test:0");
    ASSERT_TRUE(ln6) << ln6.error().to_string();
    EXPECT_EQ(seen->family.load(), AF_INET6);
    EXPECT_EQ(ln6->addr().ip(), IP::loopback_v6());
  });
}

// Go's lookupIPAddr waits for the lookup or for ctx, whichever is first: a
// hook that ignores its context does not hold up a cancelled dial, and its
// late answer is dropped.
TEST_P(NetContextApiTest, ALookupThatIgnoresItsContextIsAbandonedOnCancel) {
  run([] {
    weft::Channel<int> entered(1), release(0), finished(1);
    auto r = std::make_shared<Resolver>();
    r->lookup = [entered, release, finished](const weft::Context&, std::string_view,
                                             int) mutable -> Ips {
      EXPECT_TRUE(entered.send(1));
      (void)release.recv();  // a slow server, deaf to the context
      EXPECT_TRUE(finished.send(1));
      return std::vector<IP>{IP::loopback_v4()};
    };
    Dialer d;
    d.resolver = r;
    auto made = weft::with_cancel(weft::background());
    weft::WaitGroup canceler;  // joined below: it uses `made`
    cancel_once_entered(entered, made, canceler);
    auto c = d.dial(made.ctx, "tcp", "example.test:80");
    EXPECT_EQ(outcome(c), "dial tcp: lookup example.test: operation was canceled");
    EXPECT_FALSE(finished.try_recv()) << "the dial waited for the hook";
    release.close();
    EXPECT_TRUE(finished.recv());
    canceler.wait();
  });
}

Dialer happy_eyeballs_dialer(std::shared_ptr<Resolver> r) {
  Dialer d;
  d.resolver = std::move(r);
  d.fallback_delay = 50ms;
  d.timeout = 60s;
  return d;
}

// "example.test" resolves to [::1, 127.0.0.1]: IPv6 is the primary. Where
// ::1 hangs (a full accept queue on its port), the fallback's 127.0.0.1
// wins after the delay. Where this host has no IPv6 at all, ::1 fails at
// once and the fallback starts without waiting.
TEST_P(NetContextApiTest, HappyEyeballsOverANameTheHookResolves) {
  run([] {
    const bool v6 = have_ipv6_loopback();
    std::optional<FullBacklog> hung;
    std::string v4_address = "127.0.0.1:0";
    if (v6) {
      hung.emplace("[::1]:0");
      ASSERT_TRUE(hung->ok) << "could not fill the ::1 accept queue";
      v4_address = "127.0.0.1:" + std::to_string(hung->ln.addr().port());
    }
    auto v4 = weft::net::listen("tcp4", v4_address);
    ASSERT_TRUE(v4) << v4.error().to_string();
    const std::string port = std::to_string(v4->addr().port());
    auto seen = std::make_shared<Seen>();
    Dialer d = happy_eyeballs_dialer(resolving_to({IP::loopback_v6(), IP::loopback_v4()}, seen));
    auto made = weft::with_cancel(weft::background());
    const int fds_before = open_sockets();
    const auto t0 = Clock::now();
    auto c = d.dial(made.ctx, "tcp", "example.test:" + port);
    EXPECT_EQ(outcome(c), "connected to " + v4->addr().to_string());
    if (v6) {
      EXPECT_GE(Clock::now() - t0, 50ms);  // the fallback waited for its delay
    }
    EXPECT_LT(Clock::now() - t0, 30s);
    EXPECT_EQ(seen->calls.load(), 1);
    EXPECT_EQ(seen->family.load(), AF_UNSPEC);
    EXPECT_EQ(open_sockets(), fds_before + 1);  // the losing ::1 socket was closed
    made.cancel();                              // after success: no effect (DL-8)
    ASSERT_TRUE(c);
    auto s = v4->accept();
    ASSERT_TRUE(s);
    ASSERT_TRUE(c->write("he"));
    char buf[2];
    EXPECT_TRUE(s->read_full(buf, 2));
  });
}

// Both families listening: the primary (the hook's first address) wins.
TEST_P(NetContextApiTest, TheHooksFirstAddressPicksThePrimaryFamily) {
  if (!have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  run([] {
    auto v6 = weft::net::listen("tcp6", "[::1]:0");
    ASSERT_TRUE(v6) << v6.error().to_string();
    const std::string port = std::to_string(v6->addr().port());
    auto v4 = weft::net::listen("tcp4", "127.0.0.1:" + port);
    ASSERT_TRUE(v4) << v4.error().to_string();
    Dialer six = happy_eyeballs_dialer(resolving_to({IP::loopback_v6(), IP::loopback_v4()}));
    six.fallback_delay = 60s;  // only a failed primary could start it early
    EXPECT_EQ(outcome(six.dial(weft::background(), "tcp", "example.test:" + port)),
              "connected to " + v6->addr().to_string());
    Dialer four = happy_eyeballs_dialer(resolving_to({IP::loopback_v4(), IP::loopback_v6()}));
    four.fallback_delay = 60s;
    EXPECT_EQ(outcome(four.dial(weft::background(), "tcp", "example.test:" + port)),
              "connected to " + v4->addr().to_string());
  });
}

// Both racers connecting to addresses that hang: one cancel reaches both,
// and the dial reports the primary's cancellation with no socket left.
TEST_P(NetContextApiTest, CancelEndsBothRacersOfAParallelDial) {
  if (!have_ipv6_loopback()) GTEST_SKIP() << "no IPv6 loopback";
  run([] {
    FullBacklog hung6("[::1]:0");
    ASSERT_TRUE(hung6.ok) << "could not fill the ::1 accept queue";
    const std::string port = std::to_string(hung6.ln.addr().port());
    FullBacklog hung4(("127.0.0.1:" + port).c_str());
    ASSERT_TRUE(hung4.ok) << "could not fill the 127.0.0.1 accept queue";
    Dialer d = happy_eyeballs_dialer(resolving_to({IP::loopback_v6(), IP::loopback_v4()}));
    d.fallback_delay = 1ms;
    auto made = weft::with_cancel(weft::background());
    const int fds_before = open_sockets();
    weft::Channel<std::string> done(1);
    weft::go([&, ctx = made.ctx] {
      EXPECT_TRUE(done.send(outcome(d.dial(ctx, "tcp", "example.test:" + port))));
    });
    ASSERT_TRUE(wait_parked(2));  // both racers are connecting
    made.cancel();
    EXPECT_EQ(*done.recv(), "dial tcp [::1]:" + port + ": operation was canceled");
    EXPECT_EQ(open_sockets(), fds_before);
  });
}

// dial_addrs(ctx, ...): a cancel interrupts the connect in progress, and the
// connecting socket is closed.
TEST_P(NetContextApiTest, DialAddrsCancelInterruptsAConnectInProgress) {
  run([] {
    FullBacklog full("127.0.0.1:0");
    ASSERT_TRUE(full.ok) << "connect does not hang on a full backlog here";
    const std::string where = full.ln.addr().to_string();
    const int fds_before = open_sockets();
    auto made = weft::with_cancel(weft::background());
    weft::Channel<std::string> done(1);
    const auto t0 = Clock::now();
    weft::go([&, ctx = made.ctx] {
      EXPECT_TRUE(done.send(outcome(Dialer{}.dial_addrs(ctx, "tcp", {full.ln.addr()}))));
    });
    ASSERT_TRUE(wait_parked());
    made.cancel();
    EXPECT_EQ(*done.recv(), "dial tcp " + where + ": operation was canceled");
    EXPECT_LT(Clock::now() - t0, 30s);  // not the kernel's connect timeout
    EXPECT_EQ(open_sockets(), fds_before);
  });
}

// dial_addrs(ctx, ...) with ctx already done fails before any socket,
// naming the first address; ctx's deadline bounds the connect; a dial that
// succeeded is not touched by a later cancel.
TEST_P(NetContextApiTest, DialAddrsFollowsTheContextsRules) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    const std::string where = ln->addr().to_string();
    auto done = weft::with_cancel(weft::background());
    done.cancel();
    const int fds_before = open_sockets();
    auto c = Dialer{}.dial_addrs(done.ctx, "tcp", {ln->addr()});
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().err, errc::operation_canceled);
    EXPECT_EQ(c.error().to_string(), "dial tcp " + where + ": operation was canceled");
    auto expired = weft::with_timeout(weft::background(), -1s);
    auto t = Dialer{}.dial_addrs(expired.ctx, "tcp", {ln->addr()});
    ASSERT_FALSE(t);
    EXPECT_TRUE(t.error().is_timeout());
    EXPECT_EQ(t.error().to_string(), "dial tcp " + where + ": i/o timeout");
    if (have_ipv6_loopback()) {  // Happy Eyeballs: the primary names itself
      const Addr a6 = Addr::ip_port("tcp", IP::loopback_v6(), ln->addr().port());
      auto both = Dialer{}.dial_addrs(done.ctx, "tcp", {a6, ln->addr()});
      ASSERT_FALSE(both);
      EXPECT_EQ(both.error().to_string(),
                "dial tcp " + a6.to_string() + ": operation was canceled");
    }
    EXPECT_EQ(open_sockets(), fds_before);

    FullBacklog full("127.0.0.1:0");
    ASSERT_TRUE(full.ok);
    const auto t0 = Clock::now();
    auto soon = weft::with_timeout(weft::background(), 50ms);
    auto late = Dialer{}.dial_addrs(soon.ctx, "tcp", {full.ln.addr()});
    ASSERT_FALSE(late);
    EXPECT_GE(Clock::now() - t0, 50ms);
    EXPECT_LT(Clock::now() - t0, 30s);
    EXPECT_TRUE(late.error().is_timeout()) << late.error().to_string();
    EXPECT_EQ(late.error().to_string(), "dial tcp " + full.ln.addr().to_string() + ": i/o timeout");

    auto live = weft::with_cancel(weft::background());
    auto ok = Dialer{}.dial_addrs(live.ctx, "tcp", {ln->addr()});
    ASSERT_TRUE(ok) << ok.error().to_string();
    live.cancel();
    auto s = ln->accept();
    ASSERT_TRUE(s);
    ASSERT_TRUE(ok->write("k"));  // the cancel left the connection alone
    char b = 0;
    ASSERT_TRUE(s->read_full(&b, 1));
    EXPECT_EQ(b, 'k');
  });
}

// Go never asks a resolver about a literal address, nor about an empty host.
TEST_P(NetContextApiTest, TheHookIsNotCalledForLiterals) {
  run([] {
    auto seen = std::make_shared<Seen>();
    auto r = resolving_to({IP::loopback_v4()}, seen);
    ListenConfig cfg;
    cfg.resolver = r;
    auto ln = cfg.listen(weft::background(), "tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln) << ln.error().to_string();
    auto any = cfg.listen(weft::background(), "tcp", ":0");
    ASSERT_TRUE(any) << any.error().to_string();
    Dialer d;
    d.resolver = r;
    auto c = d.dial(weft::background(), "tcp", ln->addr().to_string());
    ASSERT_TRUE(c) << c.error().to_string();
    auto plain = d.dial("tcp", ln->addr().to_string());
    ASSERT_TRUE(plain) << plain.error().to_string();
    auto ip = r->lookup_ip(weft::background(), "10.1.2.3");
    ASSERT_TRUE(ip);
    EXPECT_EQ(*ip, std::vector<IP>{*IP::parse("10.1.2.3")});
    auto zoned = r->lookup_ip("fe80::1%1");
    ASSERT_TRUE(zoned) << zoned.error().to_string();
    EXPECT_EQ(zoned->size(), 1u);
    EXPECT_EQ(seen->calls.load(), 0);
    auto named = r->lookup_ip("example.test");
    ASSERT_TRUE(named);
    EXPECT_EQ(seen->calls.load(), 1);
  });
}

// The hook's errors read as Go's DNS errors: "dial tcp: lookup HOST: ...".
TEST_P(NetContextApiTest, TheHooksErrorIsWrappedAsGoDoes) {
  run([] {
    Dialer d;
    d.resolver = failing_with(OpError(weft::net::net_errc::no_such_host));
    auto c = d.dial(weft::background(), "tcp", "x.test:80");
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().err, weft::net::net_errc::no_such_host);
    EXPECT_EQ(c.error().to_string(), "dial tcp: lookup x.test: no such host");

    d.resolver = failing_with(OpError(std::make_error_code(std::errc::connection_refused)));
    c = d.dial("tcp", "x.test:80");
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().err, std::errc::connection_refused);
    EXPECT_EQ(c.error().to_string(), "dial tcp: lookup x.test: connection refused");

    d.resolver = failing_with(OpError(weft::net::net_errc::no_such_host, "server misbehaving"));
    c = d.dial(weft::background(), "tcp", "x.test:80");
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().to_string(), "dial tcp: lookup x.test: server misbehaving");

    ListenConfig cfg;
    cfg.resolver = d.resolver;
    auto ln = cfg.listen(weft::background(), "tcp", "x.test:0");
    ASSERT_FALSE(ln);
    EXPECT_EQ(ln.error().to_string(), "listen tcp: lookup x.test: server misbehaving");

    // An empty answer, and one with nothing of the family asked for.
    d.resolver = resolving_to({});
    c = d.dial("tcp", "x.test:80");
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().to_string(), "dial tcp: lookup x.test: no such host");
    auto seen = std::make_shared<Seen>();
    d.resolver = resolving_to({IP::loopback_v6()}, seen);
    c = d.dial("tcp4", "x.test:80");
    ASSERT_FALSE(c);
    EXPECT_EQ(seen->family.load(), AF_INET);
    EXPECT_EQ(c.error().to_string(), "dial tcp4: lookup x.test: no such host");

    // A hook that hands names it does not know to the default lookup: that
    // lookup's error already names the host and is not wrapped twice.
    weft::test::counted_lookups = 0;
    weft::net::detail::set_getaddrinfo_for_tests(&weft::test::counting_no_such_host);
    auto r = std::make_shared<Resolver>();
    r->lookup = [](const weft::Context& ctx, std::string_view host, int family) {
      return weft::net::lookup_ip(ctx, host, family);
    };
    d.resolver = r;
    c = d.dial(weft::background(), "tcp", "weft-test-host.invalid:80");
    weft::net::detail::set_getaddrinfo_for_tests(nullptr);
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().to_string(), "dial tcp: lookup weft-test-host.invalid: no such host");
    EXPECT_EQ(weft::test::counted_lookups.load(), 1);
  });
}

// The hook's answer takes the default's path: filtered to the network's
// family, in the hook's order, duplicates dropped; tcp4 hands it AF_INET.
TEST_P(NetContextApiTest, TheHooksAnswerIsFilteredByFamily) {
  run([] {
    auto seen = std::make_shared<Seen>();
    auto r = resolving_to(
        {IP::loopback_v6(), IP::loopback_v4(), IP::loopback_v6(), IP::loopback_v4()}, seen);
    auto all = r->lookup_ip(weft::background(), "example.test");
    ASSERT_TRUE(all);
    EXPECT_EQ(*all, (std::vector<IP>{IP::loopback_v6(), IP::loopback_v4()}));
    auto four = r->lookup_ip(weft::background(), "example.test", AF_INET);
    ASSERT_TRUE(four);
    EXPECT_EQ(*four, std::vector<IP>{IP::loopback_v4()});
    EXPECT_EQ(seen->family.load(), AF_INET);

    auto ln = weft::net::listen("tcp4", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    Dialer d;
    d.resolver = r;
    auto c =
        d.dial(weft::background(), "tcp4", "example.test:" + std::to_string(ln->addr().port()));
    EXPECT_EQ(outcome(c), "connected to " + ln->addr().to_string());
    EXPECT_EQ(seen->family.load(), AF_INET);
  });
}

WEFT_NET_INSTANTIATE(NetContextApiTest);

// Outside a runtime the hook runs on the caller's thread, and the dial that
// asked still fails for want of a runtime, after the lookup.
TEST(NetResolverNoRuntime, TheHookRunsOnTheCallersThread) {
  auto seen = std::make_shared<Seen>();
  auto r = resolving_to({IP::loopback_v4()}, seen);
  auto ips = r->lookup_ip(weft::background(), "example.test");
  ASSERT_TRUE(ips) << ips.error().to_string();
  EXPECT_EQ(*ips, std::vector<IP>{IP::loopback_v4()});
  EXPECT_EQ(seen->calls.load(), 1);
  Dialer d;
  d.resolver = r;
  auto c = d.dial(weft::background(), "tcp", "example.test:80");
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().err, errc::no_runtime);
  EXPECT_EQ(seen->calls.load(), 2);
}

}  // namespace
