// go_when_readable: a connection that waits for input without a fiber stack
// (issue 19's opt-in idle connection). Each way a parked read ends must end
// the wait exactly once, and input that came before the wait must never be
// left waiting for an edge that already went by.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <string>

#include "net_test_util.h"
#include "stack.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using weft::net::Conn;
using weft::test::NetBackendTest;

class NetReadableWaitTest : public NetBackendTest {};

// What the first read of a woken handler got: the bytes, or the error.
struct FirstRead {
  std::string data;
  std::error_code err;
};

FirstRead read_once(Conn& c, const weft::Context& ctx = weft::background()) {
  char buf[4096];
  auto r = c.read(ctx, buf, sizeof buf);
  if (!r) return {{}, r.error().code()};
  return {std::string(buf, r.count()), {}};
}

std::size_t live_stacks() {
  const auto st = weft::detail::stack_stats();
  return st.mapped_live + st.slab_live;
}

TEST_P(NetReadableWaitTest, WaitsWithoutAStackAndRunsOnInput) {
  run([] {
    constexpr int kConns = 64;
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    std::vector<Conn> clients;
    weft::Channel<FirstRead> got(kConns);
    std::atomic<int> started{0};
    const std::size_t stacks_before = live_stacks();
    for (int i = 0; i < kConns; ++i) {
      auto p = weft::test::tcp_pair(*ln);
      clients.push_back(std::move(p.client));
      weft::net::go_when_readable(std::move(p.server), weft::background(), [&](Conn c) {
        started.fetch_add(1);
        EXPECT_TRUE(got.send(read_once(c)));
      });
    }
    ASSERT_TRUE(weft::test::wait_parked(kConns));
    EXPECT_EQ(started.load(), 0);
    // A fiber parked in read would hold kConns stacks here.
    EXPECT_LE(live_stacks(), stacks_before + 2);
    for (auto& c : clients) ASSERT_TRUE(c.write("hello"));
    for (int i = 0; i < kConns; ++i) {
      const FirstRead r = *got.recv();
      EXPECT_EQ(r.data, "hello") << r.err.message();
    }
  });
}

TEST_P(NetReadableWaitTest, InputThatCameBeforeTheWaitRunsItAtOnce) {
  run([] {
    auto p = weft::test::tcp_pair();
    ASSERT_TRUE(p.client.write("early"));
    // Readable before the wait begins: the poller's edge may have gone by.
    ASSERT_TRUE(p.server.set_read_deadline(weft::net::Clock::now() + 10s));
    weft::Channel<FirstRead> got(1);
    weft::net::go_when_readable(std::move(p.server), weft::background(),
                                [&](Conn c) { EXPECT_TRUE(got.send(read_once(c))); });
    EXPECT_EQ(got.recv()->data, "early");
  });
}

// A handler that read part of what came and waits again must be run again
// at once: the edge that announced the rest was consumed by its first read,
// and an edge-triggered poller reports none for the bytes still buffered.
TEST_P(NetReadableWaitTest, InputLeftUnreadByTheLastReadRunsItAtOnce) {
  run([] {
    auto p = weft::test::tcp_pair();
    weft::Channel<FirstRead> got(1);
    weft::go([&] {
      // Parked first, so that the poller's edge for the input is what
      // wakes this read (consumed), and it takes only part of the input.
      char part[1000];
      ASSERT_TRUE(p.server.read(part, sizeof part));
      // The backstop: a lost wake-up shows as a timeout, not a hang.
      ASSERT_TRUE(p.server.set_read_deadline(weft::net::Clock::now() + 5s));
      weft::net::go_when_readable(std::move(p.server), weft::background(),
                                  [&](Conn c) { EXPECT_TRUE(got.send(read_once(c))); });
    });
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(p.client.write(std::string(3000, 'x')));
    const FirstRead r = *got.recv();
    EXPECT_FALSE(r.err) << r.err.message();
    EXPECT_FALSE(r.data.empty());
  });
}

TEST_P(NetReadableWaitTest, ReadDeadlineRunsIt) {
  run([] {
    auto p = weft::test::tcp_pair();
    ASSERT_TRUE(p.server.set_read_deadline(weft::net::Clock::now() + 20ms));
    weft::Channel<FirstRead> got(1);
    weft::net::go_when_readable(std::move(p.server), weft::background(),
                                [&](Conn c) { EXPECT_TRUE(got.send(read_once(c))); });
    EXPECT_EQ(got.recv()->err, weft::errc::timeout);
  });
}

TEST_P(NetReadableWaitTest, PeerCloseRunsIt) {
  run([] {
    auto p = weft::test::tcp_pair();
    weft::Channel<FirstRead> got(1);
    weft::net::go_when_readable(std::move(p.server), weft::background(),
                                [&](Conn c) { EXPECT_TRUE(got.send(read_once(c))); });
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(p.client.close());
    EXPECT_EQ(got.recv()->err, weft::errc::eof);
  });
}

// The cancel ends the wait and nothing after it: the handler's reads under
// another context, and its deadline, are the connection's as before.
TEST_P(NetReadableWaitTest, ContextCancelRunsItAndStaysWithTheWait) {
  run([] {
    auto p = weft::test::tcp_pair();
    auto made = weft::with_cancel(weft::background());
    weft::Channel<FirstRead> canceled(1), later(1);
    weft::net::go_when_readable(std::move(p.server), made.ctx, [&](Conn c) {
      EXPECT_TRUE(canceled.send(read_once(c, made.ctx)));
      EXPECT_TRUE(c.set_read_deadline(weft::net::Clock::now() + 10s));
      EXPECT_TRUE(later.send(read_once(c)));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    made.cancel();
    EXPECT_EQ(canceled.recv()->err, weft::errc::canceled);
    ASSERT_TRUE(p.client.write("after"));
    EXPECT_EQ(later.recv()->data, "after");
  });
}

TEST_P(NetReadableWaitTest, DoneContextOrClosedConnRunsItAtOnce) {
  run([] {
    auto p = weft::test::tcp_pair();
    auto made = weft::with_cancel(weft::background());
    made.cancel();
    weft::Channel<FirstRead> got(2);
    weft::net::go_when_readable(std::move(p.server), made.ctx,
                                [&](Conn c) { EXPECT_TRUE(got.send(read_once(c, made.ctx))); });
    EXPECT_EQ(got.recv()->err, weft::errc::canceled);
    ASSERT_TRUE(p.client.close());
    weft::net::go_when_readable(std::move(p.client), weft::background(),
                                [&](Conn c) { EXPECT_TRUE(got.send(read_once(c))); });
    EXPECT_EQ(got.recv()->err, weft::errc::closed);
    weft::net::go_when_readable(Conn(), weft::background(),
                                [&](Conn c) { EXPECT_TRUE(got.send(read_once(c))); });
    EXPECT_EQ(got.recv()->err, weft::errc::closed);  // a moved-from socket
  });
}

// The wait keeps its own copy of the context: the caller's may be gone.
TEST_P(NetReadableWaitTest, TheCallersContextObjectMayEndFirst) {
  run([] {
    auto p = weft::test::tcp_pair();
    auto parent = weft::with_cancel(weft::background());
    weft::Channel<FirstRead> got(1);
    {
      const weft::Context copy = parent.ctx;
      weft::net::go_when_readable(std::move(p.server), copy,
                                  [&](Conn c) { EXPECT_TRUE(got.send(read_once(c, parent.ctx))); });
    }
    ASSERT_TRUE(weft::test::wait_parked());
    parent.cancel();
    EXPECT_EQ(got.recv()->err, weft::errc::canceled);
  });
}

// The opt-in's shape: a handler that answers what came and waits again
// without a stack, a thousand round trips on one connection.
TEST_P(NetReadableWaitTest, AHandlerThatWaitsAgainServesEveryRequest) {
  run([] {
    auto p = weft::test::tcp_pair();
    struct Echo {
      weft::Channel<int>* ended;
      void operator()(Conn c) const {
        char buf[64];
        auto r = c.read(buf, sizeof buf);
        if (!r || !c.write(std::string_view(buf, r.count()))) {
          EXPECT_TRUE(ended->send(1));
          return;
        }
        weft::net::go_when_readable(std::move(c), weft::background(), *this);
      }
    };
    weft::Channel<int> ended(1);
    weft::net::go_when_readable(std::move(p.server), weft::background(), Echo{&ended});
    const int rounds = weft::test::stress_iterations(1000);
    char buf[8];
    for (int i = 0; i < rounds; ++i) {
      ASSERT_TRUE(p.client.write("ping"));
      auto r = p.client.read_full(buf, 4);
      ASSERT_TRUE(r) << r.error().to_string();
      ASSERT_EQ(std::string_view(buf, 4), "ping");
    }
    ASSERT_TRUE(p.client.close());
    EXPECT_EQ(*ended.recv(), 1);
  });
}

// Input, a cancel, a deadline and the peer's close race a wait that is
// being published, thousands of times: the handler runs exactly once each
// time, and never waits for an event that already came.
TEST_P(NetReadableWaitTest, EveryEndingRacingThePublishRunsItOnce) {
  run([] {
    const int iterations = weft::test::stress_iterations(2000);
    std::mt19937 rng(19);
    for (int i = 0; i < iterations; ++i) {
      auto pair = weft::test::unix_pair();
      ASSERT_TRUE(pair.client.valid() && pair.server.valid());
      weft::net::Conn* a = &pair.client;
      weft::net::Conn* b = &pair.server;
      // A lost wake-up ends here as a timeout instead of a hang.
      ASSERT_TRUE(a->set_read_deadline(weft::net::Clock::now() + 10s));
      auto made = weft::with_cancel(weft::background());
      std::atomic<int> runs{0};
      weft::Channel<std::error_code> got(2);
      const unsigned how = rng() % 5;
      const bool yield_first = rng() % 2;
      // A deadline is set before the handover (the wait owns the socket
      // after it), to pass while the wait is being published or after.
      if (how == 2) {
        ASSERT_TRUE(
            a->set_read_deadline(weft::net::Clock::now() + std::chrono::microseconds(rng() % 50)));
      }
      weft::Channel<int> racer_done(1);
      weft::go([&] {  // the racer, on whichever worker takes it
        if (yield_first) weft::yield();
        switch (how) {
          case 0:
            (void)b->write("x");
            break;
          case 1:
            made.cancel();
            break;
          case 3:
            (void)b->close();
            break;
          case 4:
            (void)b->write("x"), made.cancel();
            break;
          default:
            break;
        }
        EXPECT_TRUE(racer_done.send(1));
      });
      weft::net::go_when_readable(std::move(*a), made.ctx, [&](Conn c) {
        runs.fetch_add(1);
        char buf[8];
        auto r = c.read(made.ctx, buf, sizeof buf);
        EXPECT_TRUE(got.send(r ? std::error_code() : r.error().code()));
      });
      const std::error_code err = *got.recv();
      if (how != 2) {
        ASSERT_NE(err, weft::errc::timeout) << "iteration " << i << ", ending " << how;
      }
      switch (how) {
        case 0:
          EXPECT_FALSE(err) << err.message();
          break;
        case 1:
          EXPECT_EQ(err, weft::errc::canceled);
          break;
        case 2:
          EXPECT_EQ(err, weft::errc::timeout);
          break;
        case 3:
          EXPECT_EQ(err, weft::errc::eof);
          break;
        default:
          break;  // data or the cancel, whichever it saw first
      }
      (void)racer_done.recv();
      EXPECT_EQ(runs.load(), 1);
    }
  });
}

// A wait the runtime's end abandons (as Go abandons goroutines) is left
// alone: nothing runs it, and the peer's input later touches nothing freed.
TEST_P(NetReadableWaitTest, AWaitAbandonedByTheRuntimesEndStaysSafe) {
  std::atomic<bool> ran{false};
  int peer = -1;
  run([&] {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    auto a = weft::net::adopt_conn(sv[0], "unix");
    ASSERT_TRUE(a);
    peer = sv[1];
    weft::net::go_when_readable(std::move(*a), weft::background(), [&](Conn) { ran.store(true); });
    ASSERT_TRUE(weft::test::wait_parked());
  });
  ASSERT_EQ(::write(peer, "x", 1), 1);
  ::close(peer);
  EXPECT_FALSE(ran.load());
}

WEFT_NET_INSTANTIATE(NetReadableWaitTest);

}  // namespace
