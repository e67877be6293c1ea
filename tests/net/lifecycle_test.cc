// Sockets that outlive weft::run: closing one whose operation was left
// parked when main returned must not wait for that abandoned operation, nor
// crash; other operations fail saying that no runtime runs.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <thread>

#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/debug.h"
#include "weft/net.h"

namespace {

class NetLifecycle : public weft::test::NetBackendTest {};

// In a runtime: listens into `ln` and leaves a fiber parked in its accept,
// to be abandoned when the runtime ends. False (with the reason reported)
// if it could not.
bool leave_an_accept_parked(std::optional<weft::net::Listener>& ln) {
  auto l = weft::net::listen("tcp", "127.0.0.1:0");
  if (!l) {
    ADD_FAILURE() << l.error().to_string();
    return false;
  }
  ln.emplace(std::move(*l));
  weft::go([&ln] { (void)ln->accept(); });
  return weft::test::wait_parked();
}

TEST_P(NetLifecycle, ListenerWithAParkedAcceptClosesAfterRun) {
  const int waiters_before = weft::detail::netpoll_waiters();
  std::optional<weft::net::Listener> ln;
  run([&] { ASSERT_TRUE(leave_an_accept_parked(ln)); });
  // The accept is abandoned: close() must neither wait for it nor crash.
  auto again = ln->accept();
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().err, weft::errc::no_runtime) << again.error().to_string();
  auto closed = ln->close();
  EXPECT_TRUE(closed) << closed.error().to_string();
  ln.reset();
  // The abandoned accept is no longer counted as parked: later runtimes
  // would keep polling for it (and wait_parked() would count it).
  EXPECT_EQ(weft::detail::netpoll_waiters(), waiters_before);
}

TEST_P(NetLifecycle, ConnOutlivingRunFailsItsOpsAndIsDestroyedSafely) {
  std::optional<weft::net::Conn> client, server;
  run([&] {
    auto l = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(l);
    auto c = weft::net::dial("tcp", l->addr().to_string());
    ASSERT_TRUE(c);
    auto s = l->accept();
    ASSERT_TRUE(s);
    client.emplace(std::move(*c));
    server.emplace(std::move(*s));
    // A reader left parked: destroying the socket later must not wait for it.
    weft::go([&] {
      char b;
      (void)server->read(&b, 1);
    });
    ASSERT_TRUE(weft::test::wait_parked());
  });
  char buf[4] = {};
  auto w = client->write("ping", 4);
  ASSERT_FALSE(w);
  EXPECT_EQ(w.error().err, weft::errc::no_runtime) << w.error().to_string();
  auto r = client->read(buf, sizeof buf);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().err, weft::errc::no_runtime) << r.error().to_string();
  server.reset();  // its destructor closes it, with the abandoned read inside
  client.reset();
}

// A socket from one runtime used in the next: the new poller does not know
// it, so its operations fail instead of parking forever.
TEST_P(NetLifecycle, SocketFromAnEarlierRuntimeFailsInTheNext) {
  std::optional<weft::net::Listener> ln;
  run([&] {
    auto l = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(l);
    ln.emplace(std::move(*l));
  });
  run([&] {
    auto c = ln->accept();
    ASSERT_FALSE(c);
    EXPECT_EQ(c.error().err, weft::errc::no_runtime) << c.error().to_string();
    EXPECT_TRUE(ln->close());
  });
}

// A waiter abandoned with its runtime is not counted by the next one, which
// would otherwise poll for it for good and never see a deadlock; nor does
// a late close of its socket, from a plain thread, take a waiter of the
// next runtime out of that count.
TEST_P(NetLifecycle, AnAbandonedWaiterIsNotCountedByTheNextRuntime) {
  std::optional<weft::net::Listener> abandoned;
  run([&] { ASSERT_TRUE(leave_an_accept_parked(abandoned)); });
  run([&] {
    EXPECT_EQ(weft::detail::netpoll_waiters(), 0);
    EXPECT_EQ(weft::metrics().io_waiters, 0u);
    auto l = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(l) << l.error().to_string();
    weft::Channel<bool> accepted(1);
    weft::go([&] { EXPECT_TRUE(accepted.send(static_cast<bool>(l->accept()))); });
    ASSERT_TRUE(weft::test::wait_parked());
    EXPECT_EQ(weft::detail::netpoll_waiters(), 1);
    std::thread([&] { abandoned.reset(); }).join();
    EXPECT_EQ(weft::detail::netpoll_waiters(), 1);
    auto c = weft::net::dial("tcp", l->addr().to_string());
    ASSERT_TRUE(c) << c.error().to_string();
    EXPECT_TRUE(*accepted.recv());
    EXPECT_EQ(weft::detail::netpoll_waiters(), 0);
  });
}

WEFT_NET_INSTANTIATE(NetLifecycle);

// Go's deadlock report, in a runtime after one that left a fiber parked in
// accept: that fiber is no socket this runtime waits on.
TEST(NetLifecycleDeathTest, ADeadlockAfterAnAbandonedWaiterIsReported) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        std::optional<weft::net::Listener> abandoned;
        weft::run([&] {
          if (!leave_an_accept_parked(abandoned)) std::_Exit(3);
        });
        alarm(30);  // unreported, the deadlock would hang: SIGALRM fails the test instead
        weft::run([] {
          weft::Channel<int> never;
          (void)never.recv();
        });
      },
      // Not anchored: a chaos run's warning comes first.
      ::testing::ExitedWithCode(2), "weft: all fibers are asleep - deadlock!");
}

}  // namespace
