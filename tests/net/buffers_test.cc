// Conn::write_buffers, Go's net.Buffers.WriteTo: every buffer, in order,
// through writev, with the byte count on failure.
#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using weft::net::IoResult;
using weft::test::NetBackendTest;
using weft::test::tcp_pair;

class NetBuffersTest : public NetBackendTest {};

// Sizes from 0 to ~4 KiB, more buffers than IOV_MAX, more bytes than a
// loopback socket's buffer: writev writes part of them, the rest waits.
std::vector<std::string> varied_buffers(int count) {
  std::vector<std::string> out;
  for (int i = 0; i < count; ++i) {
    const std::size_t size = (static_cast<std::size_t>(i) * 7919) % 4099;
    out.emplace_back(size, static_cast<char>('a' + i % 26));
  }
  return out;
}

std::vector<std::string_view> views(const std::vector<std::string>& buffers) {
  return {buffers.begin(), buffers.end()};
}

// Made before weft::run: building megabytes in the main fiber would hold a
// worker long enough for the watchdog to say so.
TEST_P(NetBuffersTest, WritesEveryBufferInOrder) {
  const auto buffers = varied_buffers(3000);
  run([&] {
    auto p = tcp_pair();
    std::string want;
    for (const auto& b : buffers) want += b;
    weft::Channel<std::string> got(1);
    weft::go([&] {
      std::string all(want.size(), '\0');
      auto r = p.server.read_full(all.data(), all.size());
      (void)got.send(r ? all : r.error().to_string());
    });
    const auto v = views(buffers);
    IoResult w = p.client.write_buffers(v);
    ASSERT_TRUE(w) << w.error().to_string();
    EXPECT_EQ(*w, want.size());
    const std::string received = *got.recv();
    ASSERT_EQ(received.size(), want.size()) << received.substr(0, 200);
    EXPECT_TRUE(received == want) << "the bytes arrived out of order or changed";
    // Nothing, and only empty buffers, write nothing and succeed.
    EXPECT_EQ(*p.client.write_buffers({}), 0u);
    EXPECT_EQ(*p.client.write_buffers({"", ""}), 0u);
  });
}

TEST_P(NetBuffersTest, AFailureReportsWhatWasWritten) {
  const auto buffers = varied_buffers(8000);  // ~16 MB: far more than fits
  run([&] {
    auto p = tcp_pair();
    ASSERT_TRUE(p.server.set_linger(0));
    std::size_t total = 0;
    for (const auto& b : buffers) total += b.size();
    weft::WaitGroup resetter;
    resetter.add(1);
    weft::go([&] {
      char chunk[4096];
      (void)p.server.read(chunk, sizeof chunk);  // some bytes, then reset
      (void)p.server.close();
      resetter.done();
    });
    const auto v = views(buffers);
    IoResult w = p.client.write_buffers(v);
    resetter.wait();
    ASSERT_FALSE(w);
    EXPECT_GT(*w, 0u);
    EXPECT_LT(*w, total);
    EXPECT_TRUE(w.error().err == std::errc::connection_reset ||
                w.error().err == std::errc::broken_pipe)
        << w.error().to_string();
    EXPECT_NE(w.error().to_string().find(": writev: "), std::string::npos) << w.error().to_string();
  });
}

TEST_P(NetBuffersTest, ACanceledContextEndsABlockedWrite) {
  const auto buffers = varied_buffers(8000);
  run([&] {
    auto p = tcp_pair();
    auto made = weft::with_cancel(weft::background());
    weft::Channel<IoResult> done(1);
    weft::go([&] {
      const auto v = views(buffers);
      (void)done.send(p.client.write_buffers(made.ctx, v));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    made.cancel();
    IoResult w = *done.recv();
    ASSERT_FALSE(w);
    EXPECT_EQ(w.error().err, weft::errc::canceled) << w.error().to_string();
    EXPECT_GT(*w, 0u);
    // The cancel belonged to that write: the connection still writes.
    ASSERT_TRUE(p.client.set_write_deadline(weft::test::in(10s)));
    weft::WaitGroup drained;
    drained.add(1);
    weft::go([&] {
      std::vector<char> sink(1 << 16);
      while (p.server.read(sink.data(), sink.size())) {
      }
      drained.done();
    });
    IoResult more = p.client.write_buffers({"still", " usable"});
    EXPECT_TRUE(more) << more.error().to_string();
    (void)p.client.close();
    drained.wait();
  });
}

TEST_P(NetBuffersTest, OnUdpEachBufferIsADatagram) {
  run([] {
    auto srv = weft::net::listen_packet("udp", "127.0.0.1:0");
    ASSERT_TRUE(srv) << srv.error().to_string();
    auto cli = weft::net::dial("udp", srv->local_addr().to_string());
    ASSERT_TRUE(cli) << cli.error().to_string();
    IoResult w = cli->write_buffers({"one", "two", "three"});
    ASSERT_TRUE(w) << w.error().to_string();
    EXPECT_EQ(*w, 11u);
    for (std::string_view want : {"one", "two", "three"}) {
      char buf[16];
      auto d = srv->read_from(buf, sizeof buf);
      ASSERT_TRUE(d) << d.error().to_string();
      EXPECT_EQ(std::string_view(buf, d->n), want);
    }
  });
}

WEFT_NET_INSTANTIATE(NetBuffersTest);

}  // namespace
