// The cooperative budget (weft/detail/coop.h) on the I/O paths: fibers whose
// socket operations never wait must not keep a fiber that waits on the
// poller from running. Without it, a reader parked for its peer's reply was
// seen only by sysmon's poll, queued behind the streams, and ran when they
// ended (issue 12: 55-80 ms p50 beside four echo streams, seconds at p99).
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "net_test_util.h"
#include "scheduler.h"
#include "weft/net.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using weft::test::NetBackendTest;

class NetFairnessTest : public NetBackendTest {};

// One streaming fiber per worker, each sending datagrams to a socket that
// nobody reads (a UDP send never waits: past the receiver's buffer the kernel
// drops them), beside a fiber making round trips with an echo thread. The
// streams stop when the round trips are done, or after 10 s at most; that
// cap, not the round trips, ended them before the budget.
TEST_P(NetFairnessTest, StreamsThatNeverWaitDoNotStarveARoundTrip) {
  run([this] {
    auto sink = weft::net::listen_packet("udp", "127.0.0.1:0");
    ASSERT_TRUE(sink) << sink.error().to_string();
    const weft::net::Addr to = sink->local_addr();
    std::atomic<bool> stop{false};
    std::atomic<int> capped{0};
    weft::WaitGroup streams;
    for (int i = 0; i < workers(); ++i) {
      streams.add(1);
      weft::go([&] {
        auto pc = weft::net::listen_packet("udp", "127.0.0.1:0");
        ASSERT_TRUE(pc) << pc.error().to_string();
        const char datagram[64] = {};
        const auto cap = std::chrono::steady_clock::now() + 10s;
        for (std::uint64_t n = 1; !stop.load(std::memory_order_relaxed); ++n) {
          ASSERT_TRUE(pc->write_to(datagram, sizeof datagram, to));
          if (n % 1024 == 0 && std::chrono::steady_clock::now() > cap) {
            capped.fetch_add(1);
            break;
          }
        }
        streams.done();
      });
    }

    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    std::thread echo([fd = sv[1]] {
      char buf[64];
      for (;;) {
        const ssize_t r = ::read(fd, buf, sizeof buf);
        if (r <= 0 || ::write(fd, buf, static_cast<std::size_t>(r)) != r) break;
      }
      ::close(fd);
    });
    auto conn = weft::net::adopt_conn(sv[0], "unix");
    ASSERT_TRUE(conn) << conn.error().to_string();
    auto slowest = std::chrono::steady_clock::duration::zero();
    for (int i = 0; i < 50; ++i) {
      const auto start = std::chrono::steady_clock::now();
      char byte = static_cast<char>(i);
      ASSERT_TRUE(conn->write(&byte, 1));
      char back = 0;
      auto r = conn->read_full(&back, 1);
      ASSERT_TRUE(r) << r.error().to_string();
      EXPECT_EQ(back, byte);
      slowest = std::max(slowest, std::chrono::steady_clock::now() - start);
    }
    stop.store(true);
    streams.wait();
    ASSERT_TRUE(conn->close());
    echo.join();
    EXPECT_EQ(capped.load(), 0) << "the round trips finished only after the streams' 10 s cap";
    // Liberal: a budget's worth of sends is well under a millisecond here.
    EXPECT_LT(slowest, 2s);
    EXPECT_GT(weft::detail::scheduler_stats().coop_yields, 0u);
  });
}

WEFT_NET_INSTANTIATE(NetFairnessTest);

}  // namespace
