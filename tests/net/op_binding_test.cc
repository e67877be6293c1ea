// A socket direction stays linked to the context its last context-bound
// operation ran under (net/src/op_binding.h): operations on one context
// link it once, a new context or a close lets the old one go, and a cancel
// reaches only an operation bound to the context cancelled, never a later
// one bound elsewhere, nor a plain one.
#include <gtest/gtest.h>

#include <memory>
#include <optional>
#include <thread>

#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;
using weft::errc;
using weft::net::IoResult;
using weft::test::NetBackendTest;
using weft::test::tcp_pair;
using weft::test::wait_parked;

class OpBindingTest : public NetBackendTest {};

// One byte from the server to the client, read bound to ctx (or plain).
IoResult ping(weft::test::TcpPair& p, const weft::Context* ctx) {
  EXPECT_TRUE(p.server.write("x"));
  char b = 0;
  return ctx ? p.client.read(*ctx, &b, 1) : p.client.read(&b, 1);
}

// Whether the read started in `done` is still waiting after a moment: a
// cancel that must not reach it has had its chance.
bool still_waiting(weft::Channel<IoResult>& done) {
  weft::sleep_for(20ms);
  return !done.try_recv();
}

TEST_P(OpBindingTest, OpsOnOneContextLinkItOnceAndCloseLetsItGo) {
  run([] {
    auto p = tcp_pair();
    auto made = weft::with_cancel(weft::background());
    for (int i = 0; i < 100; ++i) {
      ASSERT_TRUE(ping(p, &made.ctx));
      ASSERT_TRUE(p.client.write(made.ctx, "y", 1));
      char b = 0;
      ASSERT_TRUE(p.server.read(&b, 1));
    }
    // One link per direction, however many operations ran.
    EXPECT_EQ(weft::detail::child_count(made.ctx), 2u);
    ASSERT_TRUE(p.client.close());
    EXPECT_EQ(weft::detail::child_count(made.ctx), 0u);
  });
}

TEST_P(OpBindingTest, ANewContextLetsTheOldOneGo) {
  static const weft::ContextKey<std::shared_ptr<int>> kKey("op-binding-test");
  run([] {
    auto p = tcp_pair();
    auto payload = std::make_shared<int>(7);
    const std::weak_ptr<int> watch = payload;
    {
      auto a = weft::with_cancel(weft::with_value(weft::background(), kKey, std::move(payload)));
      ASSERT_TRUE(ping(p, &a.ctx));
      EXPECT_EQ(weft::detail::child_count(a.ctx), 1u);
      auto b = weft::with_cancel(weft::background());
      ASSERT_TRUE(ping(p, &b.ctx));
      EXPECT_EQ(weft::detail::child_count(a.ctx), 0u);
      EXPECT_EQ(weft::detail::child_count(b.ctx), 1u);
    }
    EXPECT_TRUE(watch.expired()) << "the read direction kept a context it moved away from";
    // And a context that was bound last is let go with the socket.
    auto payload2 = std::make_shared<int>(8);
    const std::weak_ptr<int> watch2 = payload2;
    {
      auto c = weft::with_cancel(weft::with_value(weft::background(), kKey, std::move(payload2)));
      ASSERT_TRUE(ping(p, &c.ctx));
    }
    ASSERT_TRUE(p.client.close());
    EXPECT_TRUE(watch2.expired()) << "a closed socket kept the context it was bound to";
  });
}

// A cancel that comes between operations marks the binding; the next
// operation on another context must not inherit it.
TEST_P(OpBindingTest, ACancelBetweenOpsReachesNoOpOfAnotherContext) {
  run([] {
    auto p = tcp_pair();
    auto a = weft::with_cancel(weft::background());
    auto b = weft::with_cancel(weft::background());
    ASSERT_TRUE(ping(p, &a.ctx));
    a.cancel();  // nothing runs on the socket now
    IoResult rb = ping(p, &b.ctx);
    ASSERT_TRUE(rb) << rb.error().to_string();
    char byte = 0;
    IoResult ra = p.client.read(a.ctx, &byte, 1);
    ASSERT_FALSE(ra);
    EXPECT_EQ(ra.error().err, errc::canceled);
    rb = ping(p, &b.ctx);
    ASSERT_TRUE(rb) << rb.error().to_string();
    IoResult plain = ping(p, nullptr);
    ASSERT_TRUE(plain) << plain.error().to_string();
  });
}

// The direction last ran under `a`; now a read under `b`, or a plain one,
// is parked. Cancelling `a` must leave it parked.
TEST_P(OpBindingTest, ACancelAfterTheDirectionMovedOnReachesNothing) {
  run([] {
    auto p = tcp_pair();
    for (const bool plain : {false, true}) {
      auto a = weft::with_cancel(weft::background());
      auto b = weft::with_cancel(weft::background());
      ASSERT_TRUE(ping(p, &a.ctx));
      weft::Channel<IoResult> done(1);
      char byte = 0;
      weft::go([&] {
        EXPECT_TRUE(done.send(plain ? p.client.read(&byte, 1) : p.client.read(b.ctx, &byte, 1)));
      });
      ASSERT_TRUE(wait_parked());
      a.cancel();
      ASSERT_TRUE(still_waiting(done))
          << (plain ? "plain" : "b-bound") << " read ended by another context's cancel";
      ASSERT_TRUE(p.server.write("z"));
      IoResult r = *done.recv();
      ASSERT_TRUE(r) << r.error().to_string();
      EXPECT_EQ(byte, 'z');
    }
  });
}

// Reads bound to a long-lived context, to one cancelled as the read runs,
// or plain, in a random-looking order, while a racer cancels the context
// of the iteration before (which the direction may still be bound to, or
// has just moved away from). A read fails only when the context it is
// bound to was cancelled, and then the byte is still there.
TEST_P(OpBindingTest, CancelsReachOnlyTheirOwnOpsAcrossRebindsStress) {
  run([] {
    auto p = tcp_pair();
    auto long_lived = weft::with_cancel(weft::background());
    std::optional<weft::WithCancelResult<weft::CancelFunc>> prev;
    const int n = weft::test::stress_iterations(6000);
    int canceled = 0;
    for (int i = 0; i < n; ++i) {
      auto cur = weft::with_cancel(weft::background());
      const int kind = (i * 7 + i / 3) % 3;  // 0: long-lived, 1: cur, 2: plain
      const bool cancel_cur = kind == 1 && i % 2;
      weft::WaitGroup racer;
      racer.add(1);
      weft::go([&] {
        for (int y = 0; y < i % 4; ++y) weft::yield();
        if (prev) prev->cancel();
        if (cancel_cur) cur.cancel();
        EXPECT_TRUE(p.server.write("x"));
        racer.done();
      });
      if (i % 5 == 0) weft::yield();
      const weft::Context* ctx = kind == 0 ? &long_lived.ctx : kind == 1 ? &cur.ctx : nullptr;
      char b = 0;
      IoResult r = ctx ? p.client.read(*ctx, &b, 1) : p.client.read(&b, 1);
      if (!r) {
        ASSERT_TRUE(cancel_cur) << "iteration " << i << " (kind " << kind
                                << "): a read failed by a cancel not its own: "
                                << r.error().to_string();
        ASSERT_EQ(r.error().err, errc::canceled) << r.error().to_string();
        ++canceled;
        r = p.client.read(&b, 1);
        ASSERT_TRUE(r) << r.error().to_string();
      }
      ASSERT_EQ(b, 'x');
      racer.wait();
      prev.emplace(std::move(cur));
    }
    RecordProperty("canceled", canceled);
  });
}

// Closing a socket while the context its direction is bound to is
// cancelled on another thread, the read parked or not: the cancel never
// touches a socket that is gone (ASan, TSan), and nothing is left linked.
TEST_P(OpBindingTest, CloseRacingACancelOfTheBoundContextStress) {
  run([] {
    const int n = weft::test::stress_iterations(1500);
    for (int i = 0; i < n; ++i) {
      auto p = tcp_pair();
      auto a = weft::with_cancel(weft::background());
      ASSERT_TRUE(ping(p, &a.ctx));
      weft::WaitGroup reader;
      const bool parked = i % 2;
      if (parked) {
        reader.add(1);
        weft::go([&] {
          char b = 0;
          IoResult r = p.client.read(a.ctx, &b, 1);
          EXPECT_FALSE(r);
          if (!r) {
            EXPECT_TRUE(r.error().err == errc::canceled || r.error().err == errc::closed)
                << r.error().to_string();
          }
          reader.done();
        });
        ASSERT_TRUE(wait_parked());
      }
      std::thread canceller([&] {
        if (i % 3 == 0) std::this_thread::yield();
        a.cancel();
      });
      if (i % 4 < 2) weft::yield();
      EXPECT_TRUE(p.client.close());
      reader.wait();
      canceller.join();
      ASSERT_EQ(weft::detail::child_count(a.ctx), 0u);
    }
  });
}

WEFT_NET_INSTANTIATE(OpBindingTest);

}  // namespace
