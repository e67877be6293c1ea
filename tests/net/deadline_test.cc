// Per-socket deadlines, rule by rule (SEMANTICS 1.C, L-4).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using weft::test::in;
using weft::test::NetBackendTest;
using weft::test::tcp_pair;

class NetDeadlineTest : public NetBackendTest {};

struct Timed {
  weft::net::IoResult result;
  Clock::duration took{};
};

// Starts a read of up to 16 bytes on `c` in a fiber; the result arrives on
// the returned channel.
weft::Channel<Timed> start_read(weft::net::Conn& c) {
  weft::Channel<Timed> ch(1);
  weft::go([&c, ch]() mutable {
    char buf[16];
    const auto t0 = Clock::now();
    auto r = c.read(buf, sizeof buf);
    EXPECT_TRUE(ch.send(Timed{std::move(r), Clock::now() - t0}));
  });
  return ch;
}

TEST_P(NetDeadlineTest, ReadDeadlineFiresNoEarlierThanSet) {
  run([] {
    auto p = tcp_pair();
    const auto t0 = Clock::now();
    ASSERT_TRUE(p.client.set_read_deadline(t0 + 50ms));
    char buf[8];
    auto r = p.client.read(buf, sizeof buf);
    const auto took = Clock::now() - t0;
    ASSERT_FALSE(r);
    EXPECT_EQ(r.count(), 0u);
    EXPECT_TRUE(r.error().is_timeout());
    EXPECT_TRUE(r.error() == weft::errc::timeout);
    EXPECT_GE(took, 50ms);
    EXPECT_EQ(r.error().to_string(), "read tcp " + p.client.local_addr().to_string() + "->" +
                                         p.client.remote_addr().to_string() + ": i/o timeout");
  });
}

TEST_P(NetDeadlineTest, DeadlineSetWhileParkedApplies) {
  run([] {
    auto p = tcp_pair();
    auto done = start_read(p.client);
    ASSERT_TRUE(weft::test::wait_parked());
    const auto t0 = Clock::now();
    ASSERT_TRUE(p.client.set_read_deadline(t0 + 30ms));
    auto t = *done.recv();
    EXPECT_TRUE(t.result.error().is_timeout());
    EXPECT_GE(Clock::now() - t0, 30ms);
  });
}

TEST_P(NetDeadlineTest, PastDeadlineWakesParkedReadAtOnce) {
  run([] {
    auto p = tcp_pair();
    auto done = start_read(p.client);
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(p.client.set_read_deadline(Clock::now() - 1s));
    auto t = *done.recv();
    ASSERT_FALSE(t.result);
    EXPECT_TRUE(t.result.error().is_timeout());
  });
}

TEST_P(NetDeadlineTest, MovingDeadlineLaterWhileParkedKeepsWaiting) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.set_read_deadline(in(50ms)));
    auto done = start_read(p.client);
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(p.client.set_read_deadline(in(60s)));
    weft::sleep_for(150ms);  // well past the first deadline: it must not fire
    ASSERT_TRUE(done.try_recv() == std::nullopt);
    ASSERT_TRUE(p.server.write("late"));
    auto t = *done.recv();
    ASSERT_TRUE(t.result) << t.result.error().to_string();
    EXPECT_EQ(*t.result, 4u);
  });
}

TEST_P(NetDeadlineTest, ClearingDeadlineWhileParkedKeepsWaiting) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.set_read_deadline(in(50ms)));
    auto done = start_read(p.client);
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(p.client.set_read_deadline(Clock::time_point{}));
    weft::sleep_for(150ms);
    ASSERT_TRUE(done.try_recv() == std::nullopt);
    ASSERT_TRUE(p.server.write("x"));
    auto t = *done.recv();
    ASSERT_TRUE(t.result) << t.result.error().to_string();
  });
}

TEST_P(NetDeadlineTest, MovingDeadlineEarlierWhileParkedFiresSooner) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.set_read_deadline(in(60s)));
    auto done = start_read(p.client);
    ASSERT_TRUE(weft::test::wait_parked());
    const auto t0 = Clock::now();
    ASSERT_TRUE(p.client.set_read_deadline(t0 + 20ms));
    auto t = *done.recv();
    EXPECT_TRUE(t.result.error().is_timeout());
    EXPECT_GE(Clock::now() - t0, 20ms);
  });
}

TEST_P(NetDeadlineTest, ExpiredDirectionFailsBeforeTheSyscallEvenWithDataReady) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.server.write("data"));
    // Make sure the data has arrived.
    ASSERT_TRUE(p.client.set_read_deadline(in(10s)));
    char one;
    ASSERT_TRUE(p.client.read(&one, 1));
    ASSERT_TRUE(p.client.set_read_deadline(Clock::now() - 5s));
    char buf[8];
    for (int i = 0; i < 2; ++i) {
      auto r = p.client.read(buf, sizeof buf);
      ASSERT_FALSE(r);
      EXPECT_EQ(r.count(), 0u);
      EXPECT_TRUE(r.error().is_timeout());
    }
    // No poisoning: reset, and the data is all still there.
    ASSERT_TRUE(p.client.set_read_deadline(Clock::time_point{}));
    auto r = p.client.read(buf, sizeof buf);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(std::string(buf, *r), "ata");

    ASSERT_TRUE(p.client.set_write_deadline(Clock::now() - 5s));
    for (int i = 0; i < 2; ++i) {
      auto w = p.client.write("x");
      ASSERT_FALSE(w);
      EXPECT_EQ(w.count(), 0u);
      EXPECT_TRUE(w.error().is_timeout());
      EXPECT_EQ(w.error().op, "write");
    }
    ASSERT_TRUE(p.client.set_write_deadline(in(10s)));
    ASSERT_TRUE(p.client.write("y"));
    ASSERT_TRUE(p.server.read(buf, 1));
    EXPECT_EQ(buf[0], 'y');
  });
}

TEST_P(NetDeadlineTest, ReadAndWriteDeadlinesAreIndependent) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.set_read_deadline(Clock::now() - 1s));
    ASSERT_TRUE(p.client.write("ping"));  // the expired read side is irrelevant
    char buf[8];
    ASSERT_TRUE(p.server.read_full(buf, 4));
    ASSERT_TRUE(p.client.set_read_deadline(Clock::time_point{}));
    ASSERT_TRUE(p.client.set_write_deadline(Clock::now() - 1s));
    ASSERT_TRUE(p.server.write("pong"));
    auto r = p.client.read_full(buf, 4);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(std::string(buf, 4), "pong");
    EXPECT_FALSE(p.client.write("z"));
    // set_deadline sets both.
    ASSERT_TRUE(p.client.set_deadline(Clock::now() - 1s));
    EXPECT_TRUE(p.client.read(buf, 1).error().is_timeout());
    ASSERT_TRUE(p.client.set_deadline(Clock::time_point{}));
    EXPECT_TRUE(p.client.write("ok"));
  });
}

TEST_P(NetDeadlineTest, TimeoutNeverPoisonsTheConnection) {
  run([] {
    auto p = tcp_pair();
    for (int i = 0; i < 3; ++i) {
      ASSERT_TRUE(p.client.set_read_deadline(in(5ms)));
      char buf[8];
      auto r = p.client.read(buf, sizeof buf);
      ASSERT_FALSE(r);
      EXPECT_TRUE(r.error().is_timeout());
      ASSERT_TRUE(p.client.set_read_deadline(in(10s)));
      ASSERT_TRUE(p.server.write("ok"));
      auto ok = p.client.read_full(buf, 2);
      ASSERT_TRUE(ok) << ok.error().to_string();
    }
  });
}

TEST_P(NetDeadlineTest, WriteDeadlineStopsABlockedWriteWithPartialCount) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.set_write_buffer(4096));
    std::vector<char> big(std::size_t{32} << 20, 'w');
    const auto t0 = Clock::now();
    ASSERT_TRUE(p.client.set_write_deadline(t0 + 50ms));
    auto w = p.client.write(big.data(), big.size());
    ASSERT_FALSE(w);
    EXPECT_TRUE(w.error().is_timeout());
    EXPECT_GT(w.count(), 0u);
    EXPECT_LT(w.count(), big.size());
    EXPECT_GE(Clock::now() - t0, 50ms);
  });
}

TEST_P(NetDeadlineTest, WallClockDeadlinesAreConverted) {
  run([] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.client.set_read_deadline(std::chrono::system_clock::now() - 1s));
    char buf[4];
    EXPECT_TRUE(p.client.read(buf, 4).error().is_timeout());
    ASSERT_TRUE(p.client.set_read_deadline(std::chrono::system_clock::time_point{}));
    ASSERT_TRUE(p.client.set_read_deadline(std::chrono::system_clock::now() + 20ms));
    EXPECT_TRUE(p.client.read(buf, 4).error().is_timeout());
  });
}

TEST_P(NetDeadlineTest, TinyDeadlinesAlwaysTimeOutAndHugeOnesNever) {
  run([] {
    auto p = tcp_pair();
    for (std::chrono::nanoseconds d :
         {std::chrono::nanoseconds(1ns), std::chrono::nanoseconds(1us),
          std::chrono::nanoseconds(10us), std::chrono::nanoseconds(100us),
          std::chrono::nanoseconds(1ms)}) {
      ASSERT_TRUE(p.client.set_read_deadline(in(d)));
      char buf[4];
      auto r = p.client.read(buf, 4);
      ASSERT_FALSE(r);
      EXPECT_TRUE(r.error().is_timeout()) << d.count();
    }
    ASSERT_TRUE(p.client.set_read_deadline(Clock::time_point::max()));
    ASSERT_TRUE(p.server.write("m"));
    char buf[4];
    auto r = p.client.read(buf, 4);
    ASSERT_TRUE(r) << r.error().to_string();
  });
}

TEST_P(NetDeadlineTest, AcceptDeadline) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    const auto t0 = Clock::now();
    ASSERT_TRUE(ln->set_deadline(t0 + 50ms));
    auto a = ln->accept();
    ASSERT_FALSE(a);
    EXPECT_GE(Clock::now() - t0, 50ms);
    EXPECT_EQ(a.error().to_string(), "accept tcp " + ln->addr().to_string() + ": i/o timeout");
    // A past deadline fails even with a connection pending, twice.
    auto c = weft::net::dial("tcp", ln->addr().to_string());
    ASSERT_TRUE(c);
    ASSERT_TRUE(ln->set_deadline(Clock::now() - 1s));
    EXPECT_TRUE(ln->accept().error().is_timeout());
    EXPECT_TRUE(ln->accept().error().is_timeout());
    ASSERT_TRUE(ln->set_deadline(Clock::time_point{}));
    auto s = ln->accept();
    ASSERT_TRUE(s) << s.error().to_string();
    // The accepted conn does not inherit the listener's deadline.
    ASSERT_TRUE(ln->set_deadline(Clock::now() - 1s));
    ASSERT_TRUE(c->write("q"));
    char buf[1];
    EXPECT_TRUE(s->read(buf, 1));
  });
}

TEST_P(NetDeadlineTest, PastDeadlineWakesParkedAccept) {
  run([] {
    auto ln = weft::net::listen("tcp", "127.0.0.1:0");
    ASSERT_TRUE(ln);
    weft::Channel<bool> timed_out(1);
    weft::go([&] {
      auto a = ln->accept();
      EXPECT_TRUE(timed_out.send(!a && a.error().is_timeout()));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(ln->set_deadline(Clock::now() - 1s));
    EXPECT_TRUE(*timed_out.recv());
  });
}

WEFT_NET_INSTANTIATE(NetDeadlineTest);

}  // namespace
