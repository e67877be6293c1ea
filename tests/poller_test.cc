// Backend conformance: every poller backend built runs the same cases.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"
#include "weft/poller.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

struct Pipe {
  int r = -1, w = -1;
  Pipe() {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0);
    r = fds[0];
    w = fds[1];
  }
  ~Pipe() {
    if (r >= 0) close(r);
    if (w >= 0) close(w);
  }
};

class PollerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::string why;
    poller = weft::poll::make_poller(GetParam(), &why);
    ASSERT_TRUE(poller) << why;
  }
  // Waits until an event arrives (bounded so a broken backend fails, not hangs).
  std::vector<weft::poll::Event> wait_events(std::int64_t timeout_ns = 5'000'000'000) {
    weft::poll::Event evs[64];
    const int n = poller->wait(evs, 64, timeout_ns);
    return {evs, evs + n};
  }
  std::unique_ptr<weft::poll::Poller> poller;
};

TEST_P(PollerTest, ReportsReadabilityWithTheToken) {
  Pipe p;
  ASSERT_FALSE(poller->add(p.r, 42));
  EXPECT_TRUE(wait_events(0).empty());
  ASSERT_EQ(write(p.w, "x", 1), 1);
  auto evs = wait_events();
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].token, 42u);
  EXPECT_TRUE(evs[0].ready & weft::poll::kReadable);
}

TEST_P(PollerTest, EdgeTriggeredOncePerChange) {
  Pipe p;
  ASSERT_FALSE(poller->add(p.r, 7));
  ASSERT_EQ(write(p.w, "x", 1), 1);
  EXPECT_EQ(wait_events().size(), 1u);
  // Data still unread, but no new edge: nothing more to report.
  EXPECT_TRUE(wait_events(0).empty());
  ASSERT_EQ(write(p.w, "y", 1), 1);
  EXPECT_EQ(wait_events().size(), 1u);
}

TEST_P(PollerTest, BothDirectionsFromOneRegistration) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_FALSE(poller->add(sv[0], 5));
  auto evs = wait_events();  // a fresh socket is writable
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_TRUE(evs[0].ready & weft::poll::kWritable);
  EXPECT_FALSE(evs[0].ready & weft::poll::kReadable);
  ASSERT_EQ(write(sv[1], "z", 1), 1);
  evs = wait_events();
  // kqueue reports each direction as its own event, and libkqueue's write
  // filter may report an edge again beside the read (a spurious edge costs
  // a retried syscall); the read must be among them.
  ASSERT_GE(evs.size(), 1u);
  std::uint32_t ready = 0;
  for (const auto& e : evs) ready |= e.ready;
  EXPECT_TRUE(ready & weft::poll::kReadable);
  // Peer hang-up readies the reader (EOF) too.
  close(sv[1]);
  char buf[4];
  ASSERT_EQ(read(sv[0], buf, sizeof buf), 1);
  evs = wait_events();
  ASSERT_FALSE(evs.empty());
  EXPECT_TRUE(evs[0].ready & weft::poll::kReadable);
  close(sv[0]);
}

TEST_P(PollerTest, RemoveStopsReports) {
  Pipe p;
  ASSERT_FALSE(poller->add(p.r, 9));
  ASSERT_FALSE(poller->remove(p.r, 9));
  ASSERT_EQ(write(p.w, "x", 1), 1);
  EXPECT_TRUE(wait_events(1'000'000).empty());
  EXPECT_TRUE(poller->remove(p.r, 9));  // not registered any more: an error, not a crash
}

TEST_P(PollerTest, BadFdIsAnError) {
  EXPECT_TRUE(poller->add(-1, 1));
}

TEST_P(PollerTest, ManyFds) {
  std::vector<std::unique_ptr<Pipe>> pipes;
  for (int i = 0; i < 200; ++i) {
    pipes.push_back(std::make_unique<Pipe>());
    ASSERT_FALSE(poller->add(pipes.back()->r, 1000 + static_cast<std::uint64_t>(i)));
  }
  for (int i = 0; i < 200; i += 2)
    ASSERT_EQ(write(pipes[static_cast<std::size_t>(i)]->w, "x", 1), 1);
  std::vector<bool> seen(200, false);
  int got = 0;
  while (got < 100) {
    auto evs = wait_events();
    ASSERT_FALSE(evs.empty());
    for (auto& e : evs) {
      const auto i = static_cast<std::size_t>(e.token - 1000);
      ASSERT_EQ(i % 2, 0u);
      ASSERT_FALSE(seen[i]);
      seen[i] = true;
      ++got;
    }
  }
  EXPECT_TRUE(wait_events(0).empty());
}

TEST_P(PollerTest, WakeUnblocksAWaitFromAnotherThread) {
  for (int i = 0; i < 200; ++i) {
    std::atomic<bool> returned{false};
    std::thread waiter([&] {
      wait_events(-1);
      returned.store(true);
    });
    poller->wake();
    waiter.join();  // hangs (test timeout) if the wake-up is lost
    EXPECT_TRUE(returned.load());
  }
}

TEST_P(PollerTest, PollDoesNotConsumeAWakeMeantForTheBlockedWaiter) {
  poller->wake();
  EXPECT_TRUE(wait_events(0).empty());  // a busy worker's poll
  wait_events(-1);                      // still returns: the wake-up is pending
}

TEST_P(PollerTest, SubMillisecondTimeoutsAreNotRoundedUp) {
  // A backend that rounded 200 us up to 1 ms (epoll_wait does) would take
  // >= 1 ms every time; a loaded machine may make some waits slow, not all.
  // (A wait may also return early, on a signal: callers recompute.)
  int under_a_millisecond = 0;
  for (int i = 0; i < 20; ++i) {
    const auto start = Clock::now();
    EXPECT_TRUE(wait_events(200'000).empty());
    if (Clock::now() - start < 1ms) ++under_a_millisecond;
  }
  EXPECT_GT(under_a_millisecond, 0);
}

// More events than a completion ring holds, and nobody ever blocks in the
// poller (every worker busy, polling without waiting): the readiness that
// came after them must still reach a non-blocking wait. io_uring keeps what
// overflowed its ring in the kernel until someone enters it; a busy worker
// streaming over UDP sockets (a POLLOUT completion per datagram) once
// starved every reader that way.
TEST_P(PollerTest, ReadinessAfterAFloodReachesNonBlockingWaits) {
  std::vector<Pipe> flood(300);  // more than the io_uring backend's 256 completions
  for (std::size_t i = 0; i < flood.size(); ++i) {
    // A pipe's write end is writable at once: one event each.
    ASSERT_FALSE(poller->add(flood[i].w, 1000 + i));
  }
  Pipe target;
  ASSERT_FALSE(poller->add(target.r, 7));
  ASSERT_EQ(write(target.w, "x", 1), 1);
  bool seen = false;
  for (int round = 0; round < 1000 && !seen; ++round) {
    for (const weft::poll::Event& e : wait_events(0)) seen = seen || e.token == 7;
  }
  EXPECT_TRUE(seen);
}

INSTANTIATE_TEST_SUITE_P(Backends, PollerTest, ::testing::ValuesIn(weft::test::poller_backends()),
                         [](const auto& info) { return info.param; });

}  // namespace
