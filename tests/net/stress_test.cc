// Races and resource exhaustion: close racing a parked read, accept on
// EMFILE.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <random>
#include <vector>

#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using weft::test::NetBackendTest;

class NetStressTest : public NetBackendTest {};

TEST_P(NetStressTest, CloseRacingParkedReadStress) {
  run([] {
    const int iterations = weft::test::stress_iterations(2000);
    std::mt19937 rng(42);
    int closed = 0, data = 0;
    for (int i = 0; i < iterations; ++i) {
      int sv[2];
      ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
      auto a = weft::net::adopt_conn(sv[0], "unix");
      auto b = weft::net::adopt_conn(sv[1], "unix");
      ASSERT_TRUE(a && b);
      weft::Channel<int> done(1);
      weft::go([&] {
        char buf[8];
        auto r = a->read(buf, sizeof buf);
        done.send(r ? 1 : (r.error() == weft::errc::closed ? 0 : -1));
      });
      const unsigned how = rng() % 4;
      if (how == 0) weft::yield();
      if (how == 1) (void)weft::test::wait_parked();
      if (how == 2) (void)b->write("x");  // data racing the close
      ASSERT_TRUE(a->close());
      const int got = *done.recv();
      ASSERT_NE(got, -1);
      (got == 1 ? data : closed)++;
    }
    EXPECT_GT(closed, 0);
  });
}

TEST_P(NetStressTest, ConcurrentReadersAndWritersQueue) {
  run([] {
    auto p = weft::test::tcp_pair();
    constexpr int kWriters = 8, kEach = 200;
    weft::WaitGroup wg;
    wg.add(kWriters);
    for (int w = 0; w < kWriters; ++w) {
      weft::go([&, w] {
        // Each write is one record that must arrive whole (writes never interleave).
        std::string rec(1000, static_cast<char>('a' + w));
        for (int i = 0; i < kEach; ++i) ASSERT_TRUE(p.client.write(rec));
        wg.done();
      });
    }
    std::vector<char> buf(1000);
    for (int i = 0; i < kWriters * kEach; ++i) {
      ASSERT_TRUE(p.server.read_full(buf.data(), buf.size()));
      for (char ch : buf) ASSERT_EQ(ch, buf[0]);
    }
    wg.wait();
  });
}

// The EMFILE scenario, in a child process: returns 0 if all went well.
int emfile_scenario() {
  return weft::run(
      [] {
        auto ln = weft::net::listen("tcp", "127.0.0.1:0");
        if (!ln) return 10;
        // Connections waiting in the backlog, made while fds are still free.
        std::vector<weft::net::Conn> clients;
        for (int i = 0; i < 3; ++i) {
          auto c = weft::net::dial("tcp", ln->addr().to_string());
          if (!c) return 11;
          clients.push_back(std::move(*c));
        }
        // Fill the descriptor table.
        rlimit rl{};
        getrlimit(RLIMIT_NOFILE, &rl);
        int highest = 0;
        for (int fd = 0; fd < 4096; ++fd) {
          if (fcntl(fd, F_GETFD) >= 0) highest = fd;
        }
        rl.rlim_cur = static_cast<rlim_t>(highest + 8);
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) return 12;
        std::vector<int> fillers;
        for (;;) {
          const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
          if (fd < 0) break;
          fillers.push_back(fd);
        }
        if (fillers.empty()) return 13;

        // 1. accept backs off and retries; it succeeds once an fd is free.
        const auto base = weft::net::detail::accept_backoffs();
        std::vector<weft::net::Conn> accepted;  // kept open: each holds a slot
        weft::Channel<int> done(1);
        weft::go([&] {
          auto c = ln->accept();
          if (c) accepted.push_back(std::move(*c));
          done.send(c ? 1 : 0);
        });
        if (!weft::test::eventually(
                [&] { return weft::net::detail::accept_backoffs() >= base + 3; })) {
          return 14;
        }
        ::close(fillers.back());
        fillers.pop_back();
        if (*done.recv() != 1) return 15;
        // Backing off (5, 10, 20, 40 ms ...), not spinning.
        if (weft::net::detail::accept_backoffs() - base > 12) return 16;

        // 2. A deadline set while backing off ends the accept.
        const auto base2 = weft::net::detail::accept_backoffs();
        weft::Channel<int> done2(1);
        weft::go([&] {
          auto c = ln->accept();
          if (c) accepted.push_back(std::move(*c));
          done2.send(c ? 1 : c.error().is_timeout() ? 2 : 0);
        });
        if (!weft::test::eventually(
                [&] { return weft::net::detail::accept_backoffs() >= base2 + 5; })) {
          return 17;
        }
        (void)ln->set_deadline(Clock::now() - 1s);
        if (*done2.recv() != 2) return 18;
        (void)ln->set_deadline(Clock::time_point{});

        // 3. Close while backing off ends the accept with `closed`.
        const auto base3 = weft::net::detail::accept_backoffs();
        weft::Channel<int> done3(1);
        weft::go([&] {
          auto c = ln->accept();
          if (c) accepted.push_back(std::move(*c));
          done3.send(c ? 1 : c.error() == weft::errc::closed ? 2 : 0);
        });
        if (!weft::test::eventually(
                [&] { return weft::net::detail::accept_backoffs() >= base3 + 5; })) {
          return 19;
        }
        const auto t0 = Clock::now();
        (void)ln->close();
        if (*done3.recv() != 2) return 20;
        if (Clock::now() - t0 > 5s) return 21;
        for (int fd : fillers) ::close(fd);
        return 0;
      },
      weft::RunOptions{.workers = 2});
}

TEST_P(NetStressTest, AcceptBacksOffOnEMFILEAndSurvives) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(_exit(emfile_scenario()), ::testing::ExitedWithCode(0), "");
}

WEFT_NET_INSTANTIATE(NetStressTest);

}  // namespace
