// io::copy (Go's io.Copy) between connections: splice between stream
// sockets, every byte in order, success at EOF, errors with the count, a
// context that ends only the copy, and no SIGPIPE from a reset peer.
#include <gtest/gtest.h>
#include <signal.h>

#include <string>

#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/io.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using weft::net::IoResult;
using weft::test::NetBackendTest;
using weft::test::tcp_pair;

class NetCopyTest : public NetBackendTest {};

std::string pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 7) & 0xff);
  return s;
}

// in.client -> [in.server == copy ==> out.client] -> out.server
TEST_P(NetCopyTest, CopiesEveryByteInOrderAndSucceedsAtEOF) {
  const std::string data = pattern(6 << 20);  // more than a pipe or socket buffer holds
  run([&] {
    auto in = tcp_pair();
    auto out = tcp_pair();
    weft::WaitGroup wg;
    wg.add(2);
    weft::go([&] {
      EXPECT_TRUE(in.client.write(data));
      EXPECT_TRUE(in.client.close_write());  // EOF for the copy
      wg.done();
    });
    std::string got(data.size(), '\0');
    bool read_all = false;
    weft::go([&] {
      read_all = static_cast<bool>(out.server.read_full(got.data(), got.size()));
      wg.done();
    });
    IoResult r = weft::io::copy(out.client, in.server);
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(*r, data.size());
    wg.wait();
    ASSERT_TRUE(read_all);
    EXPECT_TRUE(got == data) << "bytes changed or reordered on the way";
  });
}

TEST_P(NetCopyTest, ACanceledContextEndsOnlyTheCopy) {
  run([] {
    auto in = tcp_pair();
    auto out = tcp_pair();
    auto made = weft::with_cancel(weft::background());
    weft::Channel<IoResult> done(1);
    weft::go([&] { (void)done.send(weft::io::copy(made.ctx, out.client, in.server)); });
    ASSERT_TRUE(weft::test::wait_parked());
    made.cancel();
    IoResult r = *done.recv();
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().err, weft::errc::canceled) << r.error().to_string();
    EXPECT_EQ(*r, 0u);
    // Both connections still work: the cancel was the copy's alone.
    ASSERT_TRUE(in.client.write("after"));
    char buf[5];
    ASSERT_TRUE(in.server.read_full(buf, sizeof buf));
    ASSERT_TRUE(out.client.write("still"));
    ASSERT_TRUE(out.server.read_full(buf, sizeof buf));
  });
}

// splice into a socket has no MSG_NOSIGNAL; with SIGPIPE at its default
// action, a SIGPIPE would end the test binary here.
TEST_P(NetCopyTest, AResetDestinationIsAnErrorNotSIGPIPE) {
  struct sigaction old {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGPIPE, &dfl, &old);
  const std::string data = pattern(1 << 20);
  run([&] {
    auto in = tcp_pair();
    auto out = tcp_pair();
    ASSERT_TRUE(out.server.set_linger(0));
    ASSERT_TRUE(out.server.close());  // RST to whatever the copy writes
    weft::WaitGroup feeder;
    feeder.add(1);
    weft::go([&] {
      for (int i = 0; i < 64; ++i) {
        if (!in.client.write(data)) break;  // the copy stopped reading
      }
      feeder.done();
    });
    IoResult r = weft::io::copy(out.client, in.server);
    ASSERT_FALSE(r);
    EXPECT_TRUE(r.error().err == std::errc::broken_pipe ||
                r.error().err == std::errc::connection_reset)
        << r.error().to_string();
    (void)in.server.close();  // ends the feeder's writes
    feeder.wait();
  });
  sigaction(SIGPIPE, &old, nullptr);
}

TEST_P(NetCopyTest, AResetSourceIsTheReadError) {
  run([] {
    auto in = tcp_pair();
    auto out = tcp_pair();
    ASSERT_TRUE(in.client.write("some bytes first"));
    ASSERT_TRUE(in.client.set_linger(0));
    weft::Channel<IoResult> done(1);
    weft::go([&] { (void)done.send(weft::io::copy(out.client, in.server)); });
    char buf[16];
    ASSERT_TRUE(out.server.read_full(buf, sizeof buf));  // the copy is running
    ASSERT_TRUE(in.client.close());                      // RST
    IoResult r = *done.recv();
    ASSERT_FALSE(r);
    EXPECT_EQ(*r, 16u);
    EXPECT_EQ(r.error().err, std::errc::connection_reset) << r.error().to_string();
  });
}

WEFT_NET_INSTANTIATE(NetCopyTest);

}  // namespace
