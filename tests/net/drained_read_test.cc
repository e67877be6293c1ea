// A stream read that came back short emptied the socket, so the next read
// waits for readiness before its syscall instead of first asking the kernel
// for an EAGAIN (NetFD::read). It may skip that read(2) only because every
// arrival after the drain sets the desc's slot: these cases race arrivals,
// the peer's close, deadlines and other readers of the same socket against
// that claim, on every backend with 1 and 2 workers, and count the syscalls
// it saves.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>

#include "net_test_util.h"
#include "weft/channel.h"
#include "weft/context.h"
#include "weft/sync.h"

namespace {

using namespace std::chrono_literals;
using weft::net::Conn;
using weft::test::NetBackendTest;

class NetDrainedReadTest : public NetBackendTest {};

// read(2) calls made by the calling thread so far (/proc's syscr).
long thread_read_calls() {
  FILE* f = std::fopen("/proc/thread-self/io", "r");
  if (!f) return -1;
  long n = -1;
  char line[128];
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "syscr: %ld", &n) == 1) break;
  }
  std::fclose(f);
  return n;
}

// Chunks of random sizes, written with random pauses, read into a buffer
// larger than any chunk (so most reads come back short and the next one
// waits first): every byte arrives, in order, and no read waits for an
// edge that already went by (the deadline turns that into a failure).
TEST_P(NetDrainedReadTest, EveryByteWrittenAfterAShortReadArrives) {
  run([] {
    const int rounds = weft::test::stress_iterations(40);
    std::mt19937 rng(7);
    for (int round = 0; round < rounds; ++round) {
      auto p = round % 2 ? weft::test::unix_pair() : weft::test::tcp_pair();
      ASSERT_TRUE(p.client.valid() && p.server.valid());
      ASSERT_TRUE(p.server.set_read_deadline(weft::net::Clock::now() + 10s));
      const int chunks = 100;
      const unsigned seed = rng();
      weft::go([&p, seed] {
        std::mt19937 w(seed);
        std::string chunk;
        unsigned char next = 0;
        for (int i = 0; i < chunks; ++i) {
          chunk.resize(1 + w() % 300);
          for (char& c : chunk) c = static_cast<char>(next++);
          ASSERT_TRUE(p.client.write(chunk));
          switch (w() % 4) {
            case 0:
              weft::yield();
              break;
            case 1:
              weft::sleep_for(std::chrono::microseconds(w() % 50));
              break;
            default:
              break;  // back to back: arrives while the reader is between reads
          }
        }
        ASSERT_TRUE(p.client.close_write());
      });
      unsigned char expect = 0;
      char buf[512];
      for (;;) {
        auto r = p.server.read(buf, sizeof buf);
        if (!r) {
          ASSERT_TRUE(r.is_eof()) << r.error().to_string() << " in round " << round;
          break;
        }
        for (std::size_t i = 0; i < r.count(); ++i) {
          ASSERT_EQ(static_cast<unsigned char>(buf[i]), expect++) << "round " << round;
        }
      }
    }
  });
}

// What ends a read at once still ends one that waits first: a deadline
// that passed, the peer's close, a reset, a close by another fiber.
TEST_P(NetDrainedReadTest, AWaitFirstReadEndsAsAPlainReadWould) {
  // libkqueue, the kqueue emulation on Linux, reads SO_ERROR when epoll
  // reports an error (src/linux/read.c), which clears the socket's pending
  // error. The backend hands it to the desc (poll_take_error), but a read
  // that runs after the poller took it and before dispatch stored it finds
  // a plain end of stream (ARCHITECTURE, "The poller": the emulation's
  // limit; BSD's kqueue leaves so_error alone). Seen once in CI under TSan
  // (kqueue, 2 workers); not in 500 runs here.
  bool reset_may_read_as_eof = false;
#if defined(__linux__)
  reset_may_read_as_eof = GetParam().backend == "kqueue";
#endif
  run([reset_may_read_as_eof] {
    char buf[64];
    weft::Channel<int> closer_done(1);
    for (int how = 0; how < 4; ++how) {
      auto p = weft::test::tcp_pair();
      ASSERT_TRUE(p.client.write("abc"));
      auto first = p.server.read(buf, sizeof buf);  // short: the socket is empty now
      ASSERT_TRUE(first);
      ASSERT_EQ(first.count(), 3u);
      std::error_code want;
      switch (how) {
        case 0:
          ASSERT_TRUE(p.server.set_read_deadline(weft::net::Clock::now() - 1s));
          want = weft::errc::timeout;
          break;
        case 1:
          ASSERT_TRUE(p.client.close());
          want = weft::errc::eof;
          break;
        case 2: {
          // SO_LINGER 0: the close sends a reset.
          const linger lg{1, 0};
          ASSERT_EQ(::setsockopt(p.client.native_handle(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg),
                    0);
          ASSERT_TRUE(p.client.close());
          want = std::error_code(ECONNRESET, std::system_category());
          break;
        }
        case 3:
          weft::go([&] {
            EXPECT_TRUE(weft::test::wait_parked());
            EXPECT_TRUE(p.server.close());
            EXPECT_TRUE(closer_done.send(1));
          });
          want = weft::errc::closed;
          break;
      }
      ASSERT_TRUE(p.server.set_write_deadline(weft::net::Clock::now() + 10s));
      auto r = p.server.read(buf, sizeof buf);
      // The read ends while close() still runs: the pair outlives it.
      if (how == 3) {
        EXPECT_TRUE(closer_done.recv());
      }
      ASSERT_FALSE(r) << "case " << how;
      if (how == 2 && reset_may_read_as_eof && r.is_eof()) continue;
      EXPECT_EQ(r.error().code(), want) << "case " << how << ": " << r.error().to_string();
    }
  });
}

// A go_when_readable wait after a short read, woken by input that came
// after it: its handler reads what woke it, and a later read gets the rest
// that handler left, which no edge announces again. (The wait's start
// dropping the short read's claim is what the next case tests: here the
// wake leaves the slot ready, so the handler would read without it.)
TEST_P(NetDrainedReadTest, AWaitAfterAShortReadHandsOnWhatWokeIt) {
  run([] {
    auto p = weft::test::tcp_pair();
    char buf[64];
    ASSERT_TRUE(p.client.write("one"));
    ASSERT_TRUE(p.server.read(buf, sizeof buf));  // short
    // A go_when_readable wait runs on input and consumes its edge.
    weft::Channel<std::string> got(1);
    weft::Channel<Conn> back(1);
    weft::net::go_when_readable(std::move(p.server), weft::background(), [&](Conn c) {
      char part[2];
      auto r = c.read(part, sizeof part);  // full, not short: the claim is not renewed
      EXPECT_TRUE(got.send(r ? std::string(part, r.count()) : r.error().to_string()));
      EXPECT_TRUE(back.send(std::move(c)));
    });
    ASSERT_TRUE(weft::test::wait_parked());
    ASSERT_TRUE(p.client.write("two"));
    EXPECT_EQ(*got.recv(), "tw");
    Conn server = std::move(*back.recv());
    ASSERT_TRUE(server.set_read_deadline(weft::net::Clock::now() + 10s));
    auto r = server.read(buf, sizeof buf);  // "o" is buffered, with no edge to come
    ASSERT_TRUE(r) << r.error().to_string();
    EXPECT_EQ(std::string(buf, r.count()), "o");
  });
}

// Input that came between a short read and a go_when_readable wait: the
// wait's start consumes the edge it latched (and runs the handler at once,
// since the input is there), so the handler's read must not wait for that
// edge again. A pipelining client does this to an echo server's handler.
// The yields and naps give the poller time to latch the edge first, which
// is what the case needs to find anything; how long does not matter for
// the answer, which is always "b".
TEST_P(NetDrainedReadTest, InputBetweenAShortReadAndAWaitIsReadAtOnce) {
  run([] {
    const int rounds = weft::test::stress_iterations(300);
    std::mt19937 rng(3);
    auto p = weft::test::tcp_pair();
    Conn server = std::move(p.server);
    for (int i = 0; i < rounds; ++i) {
      char buf[64];
      ASSERT_TRUE(p.client.write("a"));
      auto r = server.read(buf, sizeof buf);  // short: the socket is empty now
      ASSERT_TRUE(r);
      ASSERT_EQ(std::string(buf, r.count()), "a");
      ASSERT_TRUE(p.client.write("b"));
      if (i % 2) {
        for (int y = static_cast<int>(rng() % 200); y > 0; --y) weft::yield();
      } else {
        weft::sleep_for(std::chrono::microseconds(rng() % 50));  // the worker idles and polls
      }
      ASSERT_TRUE(server.set_read_deadline(weft::net::Clock::now() + 10s));
      weft::Channel<std::string> got(1);
      weft::Channel<Conn> back(1);
      weft::net::go_when_readable(std::move(server), weft::background(), [&](Conn c) {
        char in[64];
        auto rr = c.read(in, sizeof in);
        EXPECT_TRUE(got.send(rr ? std::string(in, rr.count()) : rr.error().to_string()));
        EXPECT_TRUE(back.send(std::move(c)));
      });
      ASSERT_EQ(*got.recv(), "b") << "round " << i;
      server = std::move(*back.recv());
    }
  });
}

// A request and its answer, one at a time: with the wait first, each
// request costs the server one read(2), not an EAGAIN and then the read.
// The server fiber is pinned, so every syscall it makes is its worker
// thread's; the client is a plain thread, whose calls are not counted.
TEST_P(NetDrainedReadTest, ARequestResponseLoopMakesOneReadPerRequest) {
  run([] {
    auto p = weft::test::tcp_pair();
    const int requests = weft::test::stress_iterations(2000);
    std::thread client([&] {
      const int fd = p.client.native_handle();
      const int flags = ::fcntl(fd, F_GETFL);
      ASSERT_EQ(::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK), 0);
      char b[8];
      for (int i = 0; i < requests; ++i) {
        ASSERT_EQ(::send(fd, "ping", 4, MSG_NOSIGNAL), 4);
        std::size_t got = 0;
        while (got < 4) {
          const ssize_t r = ::recv(fd, b + got, 4 - got, 0);
          ASSERT_GT(r, 0);
          got += static_cast<std::size_t>(r);
        }
      }
    });
    long reads = 0;
    {
      weft::PinToWorker pin;
      ASSERT_TRUE(p.server.set_read_deadline(weft::net::Clock::now() + 30s));
      char buf[64];
      const long before = thread_read_calls();
      ASSERT_GE(before, 0);
      for (int served = 0; served < requests;) {
        auto r = p.server.read(buf, sizeof buf);
        ASSERT_TRUE(r) << r.error().to_string();
        ASSERT_EQ(r.count() % 4, 0u);  // whole pings: the client sends the next after the answer
        ASSERT_TRUE(p.server.write(std::string_view(buf, r.count())));
        served += static_cast<int>(r.count() / 4);
      }
      reads = thread_read_calls() - before;
    }
    client.join();
    // One per request, and a few for this count's own reads of /proc and
    // an occasional wake-up's eventfd; an EAGAIN first would make it two.
    // libkqueue's emulation does not report every arrival, so reads there
    // ask first, as before (KqueuePoller::reports_every_arrival).
#if defined(__linux__)
    const bool waits_first = GetParam().backend != "kqueue";
#else
    const bool waits_first = true;
#endif
    EXPECT_LT(reads, requests * (waits_first ? 3 : 5) / 2)
        << reads << " read(2) calls for " << requests << " requests";
  });
}

WEFT_NET_INSTANTIATE(NetDrainedReadTest);

}  // namespace
