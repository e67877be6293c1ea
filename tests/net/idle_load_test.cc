// Workers that run out of work under a request/response load. A worker may
// spin only while fewer than half the busy ones do (Go's bound), and a
// worker counted as spinning may hold fibers in its own run queue: one that
// was woken (or left the idle list to ready what its poll returned) and has not yet
// run them, most often because another thread has its CPU. A worker denied
// the spin must still take work it can see. Before, it went to sleep, its
// last look saw that queue, and it went round again without stealing: under
// redis-benchmark on two cores, 2.3 such rounds per request (each a poll and
// two takes of the idle list's lock), while the fibers it saw waited for
// their worker to get a CPU back.
#include <gtest/gtest.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "net_test_util.h"
#include "weft/debug.h"
#include "weft/net.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace {

using weft::test::NetBackendTest;

class IdleUnderLoadTest : public NetBackendTest {};

// A plain thread drives its connections at once, as redis-benchmark does:
// each answer is followed by the next request on its connection.
std::uint64_t drive(const std::vector<int>& fds, std::uint64_t requests) {
  const int ep = ::epoll_create1(EPOLL_CLOEXEC);
  for (int fd : fds) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0 || ::write(fd, "q", 1) != 1) {
      ::close(ep);
      return 0;  // the test fails on the count
    }
  }
  std::uint64_t sent = fds.size(), answered = 0;
  epoll_event events[64];
  while (answered < sent) {
    const int n = ::epoll_wait(ep, events, 64, 10'000);
    if (n <= 0) break;  // the server stopped answering: the test fails on the count
    for (int i = 0; i < n; ++i) {
      char byte;
      if (::read(events[i].data.fd, &byte, 1) != 1) continue;
      ++answered;
      if (sent < requests && ::write(events[i].data.fd, "q", 1) == 1) ++sent;
    }
  }
  ::close(ep);
  return answered;
}

// The server's side of a connection: each byte back, until the client
// closes; `served` counts the connection until then.
void serve_bytes(weft::net::Conn conn, weft::WaitGroup& served) {
  served.add(1);
  weft::go([&served, c = std::move(conn)]() mutable {
    char byte;
    while (c.read(&byte, 1) && c.write(&byte, 1)) {
    }
    served.done();
  });
}

// One round: `clients` threads, 16 connections each, `requests` in all.
// Returns the sleeps refused during the round; adds the answers to
// `answered`.
std::uint64_t round_of_load(int clients, std::uint64_t requests, std::uint64_t& answered) {
  constexpr int kConnectionsPerClient = 16;
  std::vector<std::vector<int>> client_fds(static_cast<std::size_t>(clients));
  weft::WaitGroup served;
  for (int i = 0; i < clients * kConnectionsPerClient; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      ADD_FAILURE() << "socketpair: " << std::strerror(errno);
      continue;  // fewer connections: the test fails on the count
    }
    auto conn = weft::net::adopt_conn(sv[1], "unix");
    if (!conn) {
      ADD_FAILURE() << conn.error().to_string();
      ::close(sv[0]);
      continue;
    }
    client_fds[static_cast<std::size_t>(i % clients)].push_back(sv[0]);
    serve_bytes(std::move(*conn), served);
  }
  const std::uint64_t refused_before = weft::metrics().sleeps_refused;
  std::vector<std::uint64_t> answers(client_fds.size());
  std::vector<std::thread> threads;
  for (std::size_t c = 0; c < client_fds.size(); ++c) {
    threads.emplace_back(
        [&, c] { answers[c] = drive(client_fds[c], requests / client_fds.size()); });
  }
  weft::blocking([&] {
    for (auto& t : threads) t.join();
  });
  const std::uint64_t refused = weft::metrics().sleeps_refused - refused_before;
  for (const auto& fds : client_fds) {
    for (int fd : fds) ::close(fd);
  }
  for (std::uint64_t a : answers) answered += a;
  served.wait();
  return refused;
}

TEST_P(IdleUnderLoadTest, AWorkerDeniedTheSpinTakesTheWorkItSees) {
  // One client thread (redis-benchmark's shape) and two, in turns: which one
  // keeps a worker off its CPU more often varies with the backend and the
  // machine, and the bug showed only then.
  constexpr int kRounds = 6;
  const auto per_round = static_cast<std::uint64_t>(weft::test::stress_iterations(20'000));
  std::uint64_t answered = 0, refused = 0;
  run([&] {
    for (int r = 0; r < kRounds; ++r) refused += round_of_load(1 + r % 2, per_round, answered);
  });
  const std::uint64_t requests = per_round * kRounds;
  EXPECT_EQ(answered, requests);
  std::printf("[   INFO   ] %llu sleeps refused over %llu requests\n",
              static_cast<unsigned long long>(refused), static_cast<unsigned long long>(requests));
  // A last look that finds work is a race that the protocol allows now and
  // then: with the fix, at most 32 in 120,000 requests over 16 runs here,
  // but 204 to 296 on io_uring with 2 workers (4 runs, CI's among them; the
  // bound below is 480 there), 0 to 11 in 30,000 under TSan (18 runs), and
  // once 44 in CI's TSan run;
  // without it, 705 to 28,629 in 7 of 8 runs, and 139 to 55,401 in 4 later
  // runs (3 over the bound below); the rounds before (1 or 2 clients alone)
  // showed it in fewer. The bound sits between the two, with a floor for
  // the sanitizers' shorter runs, where the race is wider.
  const std::uint64_t bound = std::max<std::uint64_t>(requests / 250, 200);
  EXPECT_LE(refused, bound) << "sleeps refused for work seen, over " << answered << " requests";
}

// The role's holder, its poll having returned readiness, readies what it
// found and runs it. Before, it was still on the idle list while it readied
// the batch, the batch's wakep() found it there and woke it: a futex wake of
// its own word, for nobody, counted as a worker woken. With one worker that
// was every poll that returned anything (24,000 futex calls for 200,000
// requests under redis-benchmark), though no other worker exists to wake.
TEST_P(IdleUnderLoadTest, APollerThatFindsWorkDoesNotWakeItself) {
  if (workers() != 1) GTEST_SKIP() << "with one worker only, every wake-up is of itself";
  // One connection, one request at a time, from a plain thread: the worker
  // runs out of work after every answer and sleeps in the poller until the
  // next request arrives.
  const auto round_trips = static_cast<std::uint64_t>(weft::test::stress_iterations(5'000));
  std::uint64_t answered = 0, wakeups = 0;
  run([&] {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0) << std::strerror(errno);
    auto conn = weft::net::adopt_conn(sv[1], "unix");
    ASSERT_TRUE(conn) << conn.error().to_string();
    weft::WaitGroup served;
    serve_bytes(std::move(*conn), served);
    const std::uint64_t before = weft::metrics().worker_wakeups;
    std::thread client([&] {
      char byte = 'q';
      while (answered < round_trips && ::write(sv[0], &byte, 1) == 1 &&
             ::read(sv[0], &byte, 1) == 1) {
        ++answered;
      }
      ::shutdown(sv[0], SHUT_WR);
    });
    weft::blocking([&] { client.join(); });
    wakeups = weft::metrics().worker_wakeups - before;
    served.wait();
    ::close(sv[0]);
  });
  EXPECT_EQ(answered, round_trips);
  // The blocking job that joins the client readies its fiber from another
  // thread, which does wake the worker: a handful, not one per request.
  EXPECT_LE(wakeups, 20u) << "worker wake-ups over " << answered << " requests, with one worker";
}

WEFT_NET_INSTANTIATE(IdleUnderLoadTest);

}  // namespace
