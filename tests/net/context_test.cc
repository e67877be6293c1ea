// Socket operations bound to a context: cancellation and context deadlines
// reach parked reads, writes, accepts and connects through an expired
// deadline, report the context's error, and leave the socket usable.
#include <gtest/gtest.h>
#include <netdb.h>

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fd.h"
#include "net_internal.h"
#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;
using weft::errc;
using weft::net::Conn;
using weft::net::IoResult;
using weft::test::FullBacklog;
using weft::test::NetBackendTest;
using weft::test::open_sockets;
using weft::test::tcp_pair;
using weft::test::wait_parked;

class NetContextTest : public NetBackendTest {};

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

TEST_P(NetContextTest, CancelWakesAParkedReadAndTheConnStaysUsable) {
  run([] {
    auto p = tcp_pair();
    auto made = weft::with_cancel(weft::background());
    weft::Channel<IoResult> done(1);
    weft::go([&, ctx = made.ctx] {
      char b;
      EXPECT_TRUE(done.send(p.client.read(ctx, &b, 1)));
    });
    ASSERT_TRUE(wait_parked());
    made.cancel();
    IoResult r = *done.recv();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err, errc::canceled);
    EXPECT_TRUE(r.error().is_canceled());
    EXPECT_TRUE(ends_with(r.error().to_string(), ": context canceled")) << r.error().to_string();
    EXPECT_EQ(r.error().to_string().rfind("read tcp 127.0.0.1:", 0), 0u) << r.error().to_string();
    // The expired deadline the cancel used is gone again.
    ASSERT_TRUE(p.server.write("x"));
    char b = 0;
    IoResult again = p.client.read(&b, 1);
    ASSERT_TRUE(again) << again.error().to_string();
    EXPECT_EQ(b, 'x');
  });
}

TEST_P(NetContextTest, ADoneContextFailsBeforeTheSyscallEvenWithDataReady) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.server.write("y"));
    auto made = weft::with_cancel(weft::background());
    made.cancel();
    char b = 0;
    IoResult r = p.client.read(made.ctx, &b, 1);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err, errc::canceled);
    ASSERT_TRUE(p.client.read(&b, 1));  // the byte was left where it was
    EXPECT_EQ(b, 'y');
  });
}

TEST_P(NetContextTest, ContextDeadlineEndsAReadWithDeadlineExceeded) {
  run([] {
    auto p = tcp_pair();
    const auto start =
        std::chrono::steady_clock::now();  // before: the deadline counts from creation
    auto made = weft::with_timeout(weft::background(), 20ms);
    char b;
    IoResult r = p.client.read(made.ctx, &b, 1);
    ASSERT_FALSE(r);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms);
    EXPECT_EQ(r.error().err, errc::deadline_exceeded);
    EXPECT_TRUE(r.error().is_timeout());
  });
}

TEST_P(NetContextTest, TheUsersOwnDeadlineSurvivesACancel) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.set_read_deadline(weft::test::in(50ms)));
    auto made = weft::with_cancel(weft::background());
    weft::go([&] {
      EXPECT_TRUE(wait_parked());
      made.cancel();
    });
    char b;
    IoResult r = p.client.read(made.ctx, &b, 1);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err, errc::canceled);
    // The 50 ms deadline is back in force: a plain read times out with it.
    IoResult later = p.client.read(&b, 1);
    ASSERT_FALSE(later);
    EXPECT_EQ(later.error().err, errc::timeout);
  });
}

TEST_P(NetContextTest, CancelWakesAParkedAcceptAndTheListenerStaysOpen) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    auto made = weft::with_cancel(weft::background());
    weft::Channel<bool> canceled(1);
    weft::go([&, ctx = made.ctx] {
      auto c = ln->accept(ctx);
      EXPECT_TRUE(canceled.send(!c && c.error().err == errc::canceled));
    });
    ASSERT_TRUE(wait_parked());
    made.cancel();
    EXPECT_TRUE(*canceled.recv());
    auto p = tcp_pair(*ln);  // still accepting
    EXPECT_TRUE(p.server.valid());
  });
}

TEST_P(NetContextTest, CancelEndsABlockedWriteWithWhatItWrote) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.set_write_buffer(16 * 1024));
    const std::string big(8 << 20, 'z');  // far more than the socket buffers hold
    auto made = weft::with_cancel(weft::background());
    weft::Channel<IoResult> done(1);
    weft::go([&, ctx = made.ctx] { EXPECT_TRUE(done.send(p.client.write(ctx, big))); });
    ASSERT_TRUE(wait_parked());
    made.cancel();
    IoResult r = *done.recv();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err, errc::canceled);
    EXPECT_GT(r.count(), 0u);
    EXPECT_LT(r.count(), big.size());
  });
}

TEST_P(NetContextTest, CancelInterruptsAConnectInProgress) {
  run([] {
    FullBacklog full("127.0.0.1:0");
    ASSERT_TRUE(full.ok) << "connect does not hang on a full backlog here";
    const std::string where = full.ln.addr().to_string();
    const int fds_before = open_sockets();
    auto made = weft::with_cancel(weft::background());
    weft::Channel<std::string> done(1);
    weft::go([&, ctx = made.ctx] {
      auto c = weft::net::dial(ctx, "tcp", where);
      EXPECT_TRUE(done.send(c ? std::string("connected")
                              : c.error().to_string() +
                                    (c.error().is_canceled() ? "" : " (not canceled)")));
    });
    ASSERT_TRUE(wait_parked());
    made.cancel();
    EXPECT_EQ(*done.recv(), "dial tcp " + where + ": operation was canceled");
    EXPECT_EQ(open_sockets(), fds_before);  // the connecting socket is closed
  });
}

// Go's DialContext with a context already done: a literal address needs no
// lookup, so the dial fails in dialSerial, before any socket, naming the
// address: "dial tcp 127.0.0.1:PORT: operation was canceled" (or "i/o
// timeout" for a deadline).
TEST_P(NetContextTest, ADoneContextFailsADialBeforeAnySocketNamingTheAddress) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    const std::string where = ln->addr().to_string();
    auto made = weft::with_cancel(weft::background());
    made.cancel();
    const int fds_before = open_sockets();
    auto c = weft::net::dial(made.ctx, "tcp", where);
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().err, errc::operation_canceled);
    EXPECT_TRUE(c.error().is_canceled());
    EXPECT_EQ(c.error().to_string(), "dial tcp " + where + ": operation was canceled");
    EXPECT_EQ(open_sockets(), fds_before);

    auto expired = weft::with_timeout(weft::background(), -1s);
    auto t = weft::net::dial(expired.ctx, "tcp", where);
    ASSERT_FALSE(t);
    EXPECT_TRUE(t.error().is_timeout()) << t.error().to_string();
    EXPECT_EQ(t.error().to_string(), "dial tcp " + where + ": i/o timeout");

    weft::net::Dialer d;
    d.local_addr = weft::net::Addr::ip_port("tcp", weft::net::IP::loopback_v4(), 0);
    auto s = d.dial(made.ctx, "tcp", where);
    ASSERT_FALSE(s);
    EXPECT_EQ(s.error().to_string(), "dial tcp 127.0.0.1:0->" + where + ": operation was canceled");

    auto u = weft::net::dial(made.ctx, "unix", "/weft-test-no-such.sock");
    ASSERT_FALSE(u);
    EXPECT_EQ(u.error().to_string(), "dial unix /weft-test-no-such.sock: operation was canceled");
    EXPECT_EQ(open_sockets(), fds_before);
  });
}

// A name that needs a lookup fails in the lookup, which a done context ends
// at once; Go prints "dial tcp: lookup HOST: operation was canceled" (the
// address is not known yet), and "... lookup HOST: i/o timeout" for a
// deadline.
TEST_P(NetContextTest, ADoneContextFailsADialInTheLookup) {
  run([] {
    weft::test::counted_lookups = 0;
    weft::net::detail::set_getaddrinfo_for_tests(&weft::test::counting_no_such_host);
    auto made = weft::with_cancel(weft::background());
    made.cancel();
    const int fds_before = open_sockets();
    auto c = weft::net::dial(made.ctx, "tcp", "weft-test-host.invalid:80");
    ASSERT_FALSE(c);
    EXPECT_TRUE(c.error().is_canceled());
    EXPECT_EQ(c.error().to_string(),
              "dial tcp: lookup weft-test-host.invalid: operation was canceled");
    auto expired = weft::with_timeout(weft::background(), -1s);
    auto t = weft::net::dial(expired.ctx, "tcp", "weft-test-host.invalid:80");
    ASSERT_FALSE(t);
    EXPECT_TRUE(t.error().is_timeout());
    EXPECT_EQ(t.error().to_string(), "dial tcp: lookup weft-test-host.invalid: i/o timeout");
    EXPECT_EQ(open_sockets(), fds_before);
    EXPECT_EQ(weft::test::counted_lookups.load(), 0);
    weft::net::detail::set_getaddrinfo_for_tests(nullptr);
  });
}

// A context whose deadline is the steady clock's epoch is born expired, and
// everything bound to it times out before its syscall.
TEST_P(NetContextTest, ADeadlineAtTheClocksEpochTimesOutEveryOperation) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    auto p = tcp_pair(*ln);
    ASSERT_TRUE(p.server.write("z"));
    auto [ctx, cancel] =
        weft::with_deadline(weft::background(), std::chrono::steady_clock::time_point{});
    ASSERT_TRUE(ctx.deadline());
    char b = 0;
    IoResult r = p.client.read(ctx, &b, 1);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err, errc::deadline_exceeded);
    IoResult w = p.client.write(ctx, "x");
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().err, errc::deadline_exceeded);
    auto a = ln->accept(ctx);
    ASSERT_FALSE(a);
    EXPECT_EQ(a.error().err, errc::deadline_exceeded);
    const int fds_before = open_sockets();
    const std::string where = ln->addr().to_string();
    auto c = weft::net::dial(ctx, "tcp", where);
    ASSERT_FALSE(c);
    EXPECT_TRUE(c.error().is_timeout());
    EXPECT_EQ(c.error().to_string(), "dial tcp " + where + ": i/o timeout");
    EXPECT_EQ(open_sockets(), fds_before);
    ASSERT_TRUE(p.client.read(&b, 1));  // the byte was left where it was
    EXPECT_EQ(b, 'z');
  });
}

TEST_P(NetContextTest, ContextDeadlineBoundsAConnect) {
  run([] {
    FullBacklog full("127.0.0.1:0");
    ASSERT_TRUE(full.ok);
    const auto start = std::chrono::steady_clock::now();
    auto made = weft::with_timeout(weft::background(), 50ms);
    auto c = weft::net::dial(made.ctx, "tcp", full.ln.addr().to_string());
    ASSERT_FALSE(c);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
    EXPECT_TRUE(c.error().is_timeout());
    EXPECT_TRUE(ends_with(c.error().to_string(), ": i/o timeout")) << c.error().to_string();
  });
}

// Data arriving and a cancel racing it: either the data is read, or the
// read reports the cancel and the data is still there for the next read.
TEST_P(NetContextTest, CompletionRacingCancelLosesNothing) {
  run([] {
    auto p = tcp_pair();
    const int n = weft::test::stress_iterations(3000);
    int canceled = 0;
    for (int i = 0; i < n; ++i) {
      auto made = weft::with_cancel(weft::background());
      weft::WaitGroup wg;
      wg.add(1);
      const char sent = static_cast<char>('a' + i % 26);
      weft::go([&, c = &made.cancel] {
        if (i % 2) weft::yield();
        ASSERT_TRUE(p.server.write(&sent, 1));
        (*c)();
        wg.done();
      });
      char got = 0;
      IoResult r = p.client.read(made.ctx, &got, 1);
      if (!r) {
        ASSERT_EQ(r.error().err, errc::canceled) << r.error().to_string();
        ++canceled;
        r = p.client.read(&got, 1);  // no leftover expired deadline
        ASSERT_TRUE(r) << r.error().to_string();
      }
      ASSERT_EQ(got, sent);
      wg.wait();
    }
    RecordProperty("canceled", canceled);
  });
}

// A context the user implemented, with a Done of its own and nothing a
// child could link to: socket operations reach it through a watcher fiber.
class OpaqueContext final : public weft::ContextImpl {
 public:
  OpaqueContext() {
    auto own = weft::with_cancel(weft::background());
    own_ = std::move(own.ctx);
    cancel_ = std::move(own.cancel);
  }
  void cancel() const { cancel_(); }
  weft::Done done() const noexcept override { return own_.done(); }
  std::error_code err() const noexcept override { return own_.err(); }

 private:
  weft::Context own_;
  weft::CancelFunc cancel_;
};

TEST_P(NetContextTest, AUserContextCancelsAParkedRead) {
  run([] {
    const std::int64_t watchers = weft::detail::context_watchers_alive();
    auto p = tcp_pair();
    auto impl = std::make_shared<OpaqueContext>();
    const weft::Context ctx = weft::make_context(impl);
    weft::Channel<IoResult> done(1);
    weft::go([&] {
      char b;
      EXPECT_TRUE(done.send(p.client.read(ctx, &b, 1)));
    });
    ASSERT_TRUE(wait_parked());
    EXPECT_EQ(weft::detail::context_watchers_alive(), watchers + 1);
    impl->cancel();
    IoResult r = *done.recv();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err, errc::canceled) << r.error().to_string();
    ASSERT_TRUE(p.server.write("x"));
    char b = 0;
    ASSERT_TRUE(p.client.read(&b, 1));
    EXPECT_EQ(b, 'x');
    for (int i = 0; i < 10000 && weft::detail::context_watchers_alive() > watchers; ++i) {
      weft::sleep_for(100us);
    }
    EXPECT_EQ(weft::detail::context_watchers_alive(), watchers) << "the op's watcher outlived it";
  });
}

// As CompletionRacingCancelLosesNothing, through a user's context: its
// watcher's cancel races the op's completion and its own end.
TEST_P(NetContextTest, CompletionRacingAUserContextCancelLosesNothing) {
  run([] {
    auto p = tcp_pair();
    const int n = weft::test::stress_iterations(1000);
    for (int i = 0; i < n; ++i) {
      auto impl = std::make_shared<OpaqueContext>();
      const weft::Context ctx = weft::make_context(impl);
      weft::WaitGroup wg;
      wg.add(1);
      const char sent = static_cast<char>('a' + i % 26);
      weft::go([&] {
        if (i % 2) weft::yield();
        ASSERT_TRUE(p.server.write(&sent, 1));
        impl->cancel();
        wg.done();
      });
      char got = 0;
      IoResult r = p.client.read(ctx, &got, 1);
      if (!r) {
        ASSERT_EQ(r.error().err, errc::canceled) << r.error().to_string();
        r = p.client.read(&got, 1);  // no leftover expired deadline
        ASSERT_TRUE(r) << r.error().to_string();
      }
      ASSERT_EQ(got, sent);
      wg.wait();
    }
  });
}

TEST_P(NetContextTest, ConnectRacingCancelLeaksNoSocket) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    const std::string where = ln->addr().to_string();
    std::atomic<bool> stop{false};
    weft::WaitGroup acceptor;
    acceptor.add(1);
    weft::go([&] {
      {
        std::vector<Conn> held;
        while (!stop.load()) {
          auto c = ln->accept();
          if (!c) break;
          held.push_back(std::move(*c));
          if (held.size() > 64) held.clear();
        }
      }  // closed before done()
      acceptor.done();
    });
    const int fds_before = open_sockets();
    const int n = weft::test::stress_iterations(500);
    for (int i = 0; i < n; ++i) {
      auto made = weft::with_cancel(weft::background());
      weft::WaitGroup wg;
      wg.add(1);
      weft::go([&, c = &made.cancel] {
        if (i % 2) weft::yield();
        (*c)();
        wg.done();
      });
      auto c = weft::net::dial(made.ctx, "tcp", where);
      if (c) {
        ASSERT_TRUE(c->write("k")) << "a dial that succeeded must give a working conn";
      } else {
        ASSERT_TRUE(c.error().is_canceled()) << c.error().to_string();
      }
      wg.wait();
    }
    stop = true;
    ASSERT_TRUE(ln->close());
    acceptor.wait();
    EXPECT_LE(open_sockets(), fds_before);  // every dialed socket was closed
  });
}

// A lookup getaddrinfo is still working on: the caller returns as soon as
// its context is canceled, and the abandoned answer is dropped later.
std::atomic<bool> slow_lookup_entered{false}, slow_lookup_release{false},
    slow_lookup_returned{false};
int slow_getaddrinfo(const char*, const char*, const addrinfo*, addrinfo** res) {
  *res = nullptr;
  slow_lookup_entered = true;
  while (!slow_lookup_release.load()) std::this_thread::sleep_for(1ms);  // a DNS server, slowly
  slow_lookup_returned = true;
  return EAI_NONAME;
}

TEST_P(NetContextTest, CancelReturnsFromALookupAtOnce) {
  run([] {
    slow_lookup_entered = slow_lookup_release = slow_lookup_returned = false;
    weft::net::detail::set_getaddrinfo_for_tests(&slow_getaddrinfo);
    auto made = weft::with_cancel(weft::background());
    weft::Channel<std::string> done(1);
    weft::go([&, ctx = made.ctx] {
      auto c = weft::net::dial(ctx, "tcp", "weft-test-host.invalid:80");
      EXPECT_TRUE(done.send(c ? std::string("connected")
                              : c.error().to_string() +
                                    (c.error().is_canceled() ? "" : " (not canceled)")));
    });
    ASSERT_TRUE(weft::test::eventually([] { return slow_lookup_entered.load(); }));
    made.cancel();
    // Returns while getaddrinfo is still blocked.
    EXPECT_EQ(*done.recv(), "dial tcp: lookup weft-test-host.invalid: operation was canceled");
    EXPECT_FALSE(slow_lookup_returned.load());
    slow_lookup_release = true;
    EXPECT_TRUE(weft::test::eventually([] { return slow_lookup_returned.load(); }));
    weft::net::detail::set_getaddrinfo_for_tests(nullptr);
    // Let the abandoned lookup's fiber deliver into its channel and end.
    for (int i = 0; i < 100; ++i) weft::yield();
  });
}

// A cancellation reaches only the operation bound to its context. Two
// accepts on one listener: B queues behind A (parked) on the direction's
// lock; cancelling B's context neither wakes nor fails A. B, like Go's
// fdMutex waiter, fails as soon as it takes the lock.
TEST_P(NetContextTest, CancelReachesOnlyItsOwnQueuedAccept) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    auto a = weft::with_cancel(weft::background());
    auto b = weft::with_cancel(weft::background());
    weft::Channel<std::string> a_done(1), b_done(1);
    auto outcome = [](const weft::net::Result<Conn>& c) {
      return c ? std::string("conn") : c.error().to_string();
    };
    weft::go([&, ctx = a.ctx] { EXPECT_TRUE(a_done.send(outcome(ln->accept(ctx)))); });
    ASSERT_TRUE(wait_parked());
    weft::go([&, ctx = b.ctx] { EXPECT_TRUE(b_done.send(outcome(ln->accept(ctx)))); });
    ASSERT_TRUE(weft::test::eventually([&] {  // B queues on the direction's lock
      return weft::net::SocketAccess::fd(*ln)->queued_on_lock(weft::detail::PollMode::read);
    }));
    b.cancel();
    weft::sleep_for(20ms);
    std::optional<std::string> early = a_done.try_recv();
    EXPECT_FALSE(early) << "A woke, though ctx_a was never cancelled: " << *early;
    auto c = weft::net::dial("tcp", ln->addr().to_string());
    ASSERT_TRUE(c);
    EXPECT_EQ(early ? *early : *a_done.recv(), "conn");
    const std::string berr = *b_done.recv();
    EXPECT_EQ(berr, "accept tcp " + ln->addr().to_string() + ": context canceled");
  });
}

// A context-bound read and a plain read of one byte each on one
// connection, each in a fiber of its own; both results are always received
// before this goes out of scope.
struct TwoReads {
  weft::net::Conn& conn;
  weft::Context ctx;
  weft::Channel<IoResult> ctx_done{1}, plain_done{1};
  char ctx_byte = 0, plain_byte = 0;
  void start_ctx() {
    weft::go([this] { EXPECT_TRUE(ctx_done.send(conn.read(ctx, &ctx_byte, 1))); });
  }
  void start_plain() {
    weft::go([this] { EXPECT_TRUE(plain_done.send(conn.read(&plain_byte, 1))); });
  }
};

// The same for reads, in both orders: the context-bound read parked with a
// plain one queued, and the plain read parked with the context-bound one
// queued. Only the context-bound read fails; the plain one gets the data.
TEST_P(NetContextTest, CancelReachesOnlyItsOwnRead) {
  run([] {
    auto p = tcp_pair();
    for (int order = 0; order < 2; ++order) {
      auto made = weft::with_cancel(weft::background());
      TwoReads reads{p.client, made.ctx};
      if (order == 0) {
        reads.start_ctx();
        ASSERT_TRUE(wait_parked());
        reads.start_plain();
      } else {
        reads.start_plain();
        ASSERT_TRUE(wait_parked());
        reads.start_ctx();
      }
      ASSERT_TRUE(weft::test::eventually([&] {  // the second read queues on the lock
        return weft::net::SocketAccess::fd(p.client)->queued_on_lock(weft::detail::PollMode::read);
      }));
      made.cancel();
      if (order == 0) {  // parked: the cancel wakes it at once
        IoResult r = *reads.ctx_done.recv();
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().err, errc::canceled) << r.error().to_string();
      }
      weft::sleep_for(20ms);
      std::optional<IoResult> early = reads.plain_done.try_recv();
      ASSERT_FALSE(early) << "the plain read ended, order " << order << ": "
                          << early->error().to_string();
      ASSERT_TRUE(p.server.write("x"));
      IoResult plain = *reads.plain_done.recv();
      ASSERT_TRUE(plain) << plain.error().to_string();
      EXPECT_EQ(reads.plain_byte, 'x');
      if (order == 1) {  // queued: fails once it takes the lock, reading nothing
        IoResult r = *reads.ctx_done.recv();
        ASSERT_FALSE(r);
        EXPECT_EQ(r.error().err, errc::canceled) << r.error().to_string();
      }
    }
  });
}

// A plain read beside a context-bound read that is cancelled, over and over
// in both orders: the plain read never fails and always gets a byte.
TEST_P(NetContextTest, APlainReadBesideCancelledContextReadsNeverFails) {
  run([] {
    auto p = tcp_pair();
    const int n = weft::test::stress_iterations(10000);
    for (int i = 0; i < n; ++i) {
      auto made = weft::with_cancel(weft::background());
      TwoReads reads{p.client, made.ctx};
      if (i % 2) {
        reads.start_ctx();
        reads.start_plain();
      } else {
        reads.start_plain();
        reads.start_ctx();
      }
      for (int y = 0; y < i % 4; ++y) weft::yield();
      made.cancel();
      ASSERT_TRUE(p.server.write("x"));
      // The context-bound read ends first: cancelled, or (with 2 workers)
      // past its check and into the syscall as the cancel came, with the byte.
      IoResult r = *reads.ctx_done.recv();
      if (r) {
        ASSERT_TRUE(p.server.write("x"));  // then the plain read needs another
      }
      IoResult plain = *reads.plain_done.recv();
      ASSERT_TRUE(plain) << "iteration " << i << ": " << plain.error().to_string();
      ASSERT_EQ(reads.plain_byte, 'x');
      if (!r) {
        ASSERT_EQ(r.error().err, errc::canceled) << r.error().to_string();
      }
    }
  });
}

// set_read_deadline racing the cancel of a context-bound read (parked or
// not yet): the user's deadline always survives, exactly as set. Odd
// iterations set one already past (a plain read afterwards then times out
// though a byte is waiting); even ones a future one, which the cancelled
// read must not wait for.
TEST_P(NetContextTest, SetDeadlineRacingACancelledReadSurvives) {
  run([] {
    auto p = tcp_pair();
    weft::detail::PollDesc* pd = weft::net::SocketAccess::fd(p.client)->pd();
    const int n = weft::test::stress_iterations(10000);
    for (int i = 0; i < n; ++i) {
      ASSERT_TRUE(p.client.set_read_deadline(std::chrono::steady_clock::time_point{}));
      const bool past = i % 2;
      const auto when = past ? weft::test::in(-1ms) : weft::test::in(3s);
      auto made = weft::with_cancel(weft::background());
      weft::Channel<IoResult> ctx_done(1);
      weft::WaitGroup setter;
      char cb = 0;
      const auto start = std::chrono::steady_clock::now();
      weft::go([&, ctx = made.ctx] { EXPECT_TRUE(ctx_done.send(p.client.read(ctx, &cb, 1))); });
      if (i % 4 < 2) {
        ASSERT_TRUE(wait_parked());
      }
      setter.add(1);
      weft::go([&] {
        if (i % 3 == 0) weft::yield();
        EXPECT_TRUE(p.client.set_read_deadline(when));
        setter.done();
      });
      if (i % 5 == 0) weft::yield();
      made.cancel();
      IoResult r = *ctx_done.recv();
      setter.wait();
      ASSERT_LT(std::chrono::steady_clock::now() - start, 2s)
          << "iteration " << i << ": the cancelled read waited for the user's deadline";
      ASSERT_FALSE(r);
      ASSERT_TRUE(r.error().err == errc::canceled || (past && r.error().err == errc::timeout))
          << r.error().to_string();
      ASSERT_EQ(weft::detail::poll_deadline(pd, weft::detail::PollMode::read),
                past ? -1 : weft::net::detail::to_poll_ns(when))
          << "iteration " << i << ": the user's deadline was lost";
      if (past) {
        ASSERT_TRUE(p.server.write("x"));
        char b = 0;
        IoResult later = p.client.read(&b, 1);
        ASSERT_FALSE(later) << "iteration " << i << ": the user's expired deadline was lost";
        ASSERT_EQ(later.error().err, errc::timeout) << later.error().to_string();
        ASSERT_TRUE(p.client.set_read_deadline(std::chrono::steady_clock::time_point{}));
        ASSERT_TRUE(p.client.read(&b, 1));  // drain it
      }
    }
  });
}

WEFT_NET_INSTANTIATE(NetContextTest);

}  // namespace
