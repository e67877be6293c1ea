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
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <thread>
#include <vector>

#include "net_test_util.h"
#include "scheduler.h"
#include "weft/context.h"
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

// `n` connections (socket pairs), each served by serve_bytes; returns the
// client ends (fewer after an error, on which the test then fails).
std::vector<int> serve_pairs(int n, weft::WaitGroup& served) {
  std::vector<int> client_fds;
  for (int i = 0; i < n; ++i) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
      ADD_FAILURE() << "socketpair: " << std::strerror(errno);
      continue;
    }
    auto conn = weft::net::adopt_conn(sv[1], "unix");
    if (!conn) {
      ADD_FAILURE() << conn.error().to_string();
      ::close(sv[0]);
      continue;
    }
    client_fds.push_back(sv[0]);
    serve_bytes(std::move(*conn), served);
  }
  return client_fds;
}

// One round: `clients` threads, 16 connections each, `requests` in all.
// Returns the sleeps refused during the round; adds the answers to
// `answered`.
std::uint64_t round_of_load(int clients, std::uint64_t requests, std::uint64_t& answered) {
  constexpr int kConnectionsPerClient = 16;
  std::vector<std::vector<int>> client_fds(static_cast<std::size_t>(clients));
  weft::WaitGroup served;
  const std::vector<int> fds = serve_pairs(clients * kConnectionsPerClient, served);
  for (std::size_t i = 0; i < fds.size(); ++i) {
    client_fds[i % client_fds.size()].push_back(fds[i]);
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

// The keep-up rule (idle.h, invariant 7): a poller whose poll readied fewer
// fibers than it can run before another worker would arrive runs them
// itself, and watches the timers and the poller in the role's place while
// it does, instead of waking a sleeping worker to take the role. Under one
// client thread (redis-benchmark's shape, here with two connections, so
// that a poll returns one or two) the second worker then sleeps:
// before, nearly every poll that returned anything woke it, to take the
// role or half the batch, and server and client then answered one or two
// requests per epoll_wait instead of runs of them (RESP PING, 2 cores:
// 1.14x the requests a second with the rule).
TEST_P(IdleUnderLoadTest, AShortPollBatchWakesNoOtherWorker) {
  if (workers() != 2) GTEST_SKIP() << "needs a second worker to leave asleep";
  // Not fewer under the sanitizers: the bound is a share, and a short run's
  // start (the second worker's spin and naps) weighs more in it.
  constexpr std::uint64_t requests = 20'000;
  std::uint64_t answered = 0, wakeups = 0, steals = 0;
  run([&] {
    weft::WaitGroup served;
    const std::vector<int> client_fds = serve_pairs(2, served);
    const weft::Metrics before = weft::metrics();
    std::thread client([&] { answered = drive(client_fds, requests); });
    weft::blocking([&] { client.join(); });
    const weft::Metrics after = weft::metrics();
    wakeups = after.worker_wakeups - before.worker_wakeups;
    steals = after.steals - before.steals;
    for (int fd : client_fds) ::close(fd);
    served.wait();
  });
  EXPECT_EQ(answered, requests);
  std::printf("[   INFO   ] %llu worker wake-ups and %llu steals over %llu requests\n",
              static_cast<unsigned long long>(wakeups), static_cast<unsigned long long>(steals),
              static_cast<unsigned long long>(requests));
  // With the rule 1-2 wake-ups and 0-35 steals in 20,000 requests (every
  // backend, 5 runs; once 399 steals); without it 98-2,946 wake-ups and
  // 2,892-6,904 steals (6 runs).
  EXPECT_LE(wakeups + steals, requests / 20)
      << wakeups << " worker wake-ups and " << steals << " steals over " << answered << " requests";
}

// Timers armed on the workers while one of them keeps short poll batches and
// watches in the timer role's place (timer_added() then wakes nobody): every
// one fires, and none needs sysmon's rescue of an overdue timer whose role
// was lost, but for a worker the OS held off its CPU.
TEST_P(IdleUnderLoadTest, TimersArmedBesideAKeptBatchAllFire) {
  const auto requests = static_cast<std::uint64_t>(weft::test::stress_iterations(20'000));
  const int sleeps = weft::test::stress_iterations(500);
  constexpr int kSleepers = 4;
  std::uint64_t answered = 0, rescues = 0;
  std::atomic<int> slept{0};
  run([&] {
    weft::WaitGroup served, sleepers;
    const std::vector<int> client_fds = serve_pairs(2, served);
    const std::uint64_t rescues_before = weft::detail::scheduler_stats().timer_rescues;
    for (int i = 0; i < kSleepers; ++i) {
      sleepers.add(1);
      weft::go([&, i] {
        for (int n = 0; n < sleeps; ++n) {
          weft::sleep_for(std::chrono::microseconds(50 + 50 * ((n + i) % 4)));
          slept.fetch_add(1);
        }
        sleepers.done();
      });
    }
    std::thread client([&] { answered = drive(client_fds, requests); });
    weft::blocking([&] { client.join(); });
    sleepers.wait();
    rescues = weft::detail::scheduler_stats().timer_rescues - rescues_before;
    for (int fd : client_fds) ::close(fd);
    served.wait();
  });
  EXPECT_EQ(answered, requests);
  EXPECT_EQ(slept.load(), kSleepers * sleeps);
  EXPECT_LE(rescues, 10u) << "overdue timers sysmon had to wake a worker for";
}

// One round of the keep-up rule's other side: a fiber readied by a
// one-event poll (so its worker keeps it, and watches in the timer role's
// place) holds its worker until a 10 ms timer fires and a socket it did not
// poll for becomes readable, while the other worker sleeps. Fails the test
// if either is lost (20 s). `*watched`: whether weft::metrics(), taken by
// that fiber before it holds on, showed its worker watching.
void hold_a_watcher_until_a_timer_and_a_read(bool* watched) {
  *watched = false;
  int trigger[2], late[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, trigger), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, late), 0);
  auto trigger_conn = weft::net::adopt_conn(trigger[1], "unix");
  auto late_conn = weft::net::adopt_conn(late[1], "unix");
  ASSERT_TRUE(trigger_conn && late_conn);
  std::atomic<bool> read_late{false}, timer_fired{false}, holding{false};
  weft::WaitGroup done;
  done.add(3);
  weft::go([&] {
    char byte;
    EXPECT_TRUE(late_conn->read(&byte, 1));
    read_late.store(true);
    done.done();
  });
  weft::go([&] {
    char byte;
    EXPECT_TRUE(trigger_conn->read(&byte, 1));
    *watched = weft::metrics().workers_watching == 1;
    holding.store(true);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!(read_late.load() && timer_fired.load()) &&
           std::chrono::steady_clock::now() < give_up) {
    }
    EXPECT_TRUE(read_late.load()) << "the late socket's readiness was lost";
    EXPECT_TRUE(timer_fired.load()) << "the timer was lost";
    done.done();
  });
  ASSERT_TRUE(weft::test::wait_parked(2));
  // Until the other worker sleeps (its naps end 2 ms after it last found
  // work). Yielding, not sleeping: a sleep's end would hand the timer role
  // on, which wakes it again.
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  for (;;) {
    const weft::detail::SchedulerStats st = weft::detail::scheduler_stats();
    if (st.idle_workers >= 1 && st.spinning_workers == 0) break;
    ASSERT_LT(std::chrono::steady_clock::now(), give_up) << "the other worker never slept";
    weft::yield();
  }
  weft::go([&] {
    weft::sleep_for(std::chrono::milliseconds(10));
    timer_fired.store(true);
    done.done();
  });
  std::thread client([&] {
    EXPECT_EQ(::write(trigger[0], "t", 1), 1);
    while (!holding.load()) std::this_thread::yield();
    EXPECT_EQ(::write(late[0], "l", 1), 1);
  });
  done.wait();
  weft::blocking([&] { client.join(); });
  ::close(trigger[0]);
  ::close(late[0]);
}

// A watcher held by one fiber: sysmon relieves it, and the idle worker it
// wakes takes the role.
TEST_P(IdleUnderLoadTest, AWatcherHeldByOneFiberLosesNoTimerNorReadiness) {
  if (workers() != 2) GTEST_SKIP() << "needs a worker that stays idle";
  // Rounds until the case at issue has come up a few times (not every round
  // brings it: the trigger may be caught by a worker still spinning), and
  // at least a few; not scaled down under the sanitizers, where it comes up
  // less often (CI's TSan run: not once in 2 rounds).
  constexpr int kMinRounds = 5, kMaxRounds = 200;
  constexpr std::uint64_t kWanted = 3;
  std::uint64_t relieved = 0;
  int rounds = 0, watched = 0;
  run([&] {
    const std::uint64_t relieved_before = weft::metrics().watchers_relieved;
    for (; rounds < kMinRounds || (rounds < kMaxRounds && relieved < kWanted); ++rounds) {
      bool seen = false;
      hold_a_watcher_until_a_timer_and_a_read(&seen);
      if (seen) ++watched;
      relieved = weft::metrics().watchers_relieved - relieved_before;
    }
  });
  std::printf("[   INFO   ] %llu stuck watchers relieved in %d rounds; %d watchers seen\n",
              static_cast<unsigned long long>(relieved), rounds, watched);
  EXPECT_GE(relieved, kWanted);  // the case at issue happened
  // weft::metrics() shows the watcher (workers.watching) and sysmon's
  // reliefs (workers.watchers_relieved): a relieved watcher was one.
  EXPECT_GE(static_cast<std::uint64_t>(watched), relieved);
}

// A fiber pinned to each of two workers, spawned from outside the runtime
// until each worker has kept one. arm(k) puts a timer on each worker's
// heap: 20 ms on worker k's, an hour on the other's (disarm() cancels it).
// The one that fires must not be on the heap of the worker that watches:
// its expiry would wake the other worker (a ready wakes an idle worker),
// which then runs its own heap.
class TimerOnEachHeap {
 public:
  TimerOnEachHeap() {
    std::thread placer([this] {
      for (int tries = 0; tries < 1000 && placed_.load() < 2; ++tries) {
        const int reported = reported_.load();
        weft::go([this] { anchor(); }, weft::SpawnOptions{.pinned = true});
        while (reported_.load() == reported) std::this_thread::yield();
      }
      placing_over_.store(true);
    });
    weft::blocking([&] { placer.join(); });
  }
  ~TimerOnEachHeap() {
    for (auto& arm : arms_) arm.close();
    exited_.wait();
  }
  bool placed() const { return placed_.load() == 2; }
  // Returns once both timers are queued.
  void arm(int soon_on) {
    fired_.store(false);
    armed_.add(2);
    busy_.add(2);
    for (int k = 0; k < 2; ++k) {
      EXPECT_TRUE(arms_[k].send(k == soon_on ? std::chrono::milliseconds(20)
                                             : std::chrono::milliseconds(3'600'000)));
    }
    armed_.wait();
  }
  bool fired() const { return fired_.load(); }
  // After arm() returned: its wait on armed_ orders the anchors' stores of
  // cancels_ before these calls.
  void disarm() {
    for (auto& cancel : cancels_) cancel();
    busy_.wait();
  }

 private:
  void anchor() {
    const int me = weft::worker_index();
    bool free = false;
    if (me < 0 || me > 1 || !claimed_[me].compare_exchange_strong(free, true)) {
      reported_.fetch_add(1);
      return;
    }
    exited_.add(1);
    placed_.fetch_add(1);
    reported_.fetch_add(1);
    // Held until the other worker has kept one: else this worker, woken
    // for every spawn, may be the one that takes them all.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (placed_.load() < 2 && !placing_over_.load() &&
           std::chrono::steady_clock::now() < give_up) {
    }
    while (auto d = arms_[me].recv()) {
      auto [ctx, cancel] = weft::with_timeout(weft::background(), *d);  // on this heap
      cancels_[me] = std::move(cancel);
      armed_.done();
      ctx.done().wait();
      if (ctx.err() == weft::errc::deadline_exceeded) fired_.store(true);
      busy_.done();
    }
    exited_.done();
  }

  weft::Channel<std::chrono::milliseconds> arms_[2]{weft::Channel<std::chrono::milliseconds>(1),
                                                    weft::Channel<std::chrono::milliseconds>(1)};
  weft::CancelFunc cancels_[2];
  std::atomic<bool> claimed_[2]{}, placing_over_{false}, fired_{false};
  std::atomic<int> placed_{0}, reported_{0};
  weft::WaitGroup armed_, busy_, exited_;
};

// What one round of the watcher's look saw.
struct LookRound {
  int soon_on = -1;      // the worker whose heap has the timer due soon
  bool watched = false;  // the first reader's worker watched as it ran
  bool fired_before = false;
  int reader_worker = -1, partner_worker = -1;
  std::uint64_t rescues = 0;  // overdue timers sysmon woke a worker for
  // Two fibers that one poll readied kept switching on the watcher.
  bool at_issue() const { return watched && !fired_before && reader_worker == partner_worker; }
  // ... while the other worker slept with the timer due soon on its heap.
  bool timer_elsewhere() const { return reader_worker != soon_on; }
};

// One round of the keep-up rule's watcher at work: a timer on each
// worker's heap, both workers idle, and one poll readies two fibers (the
// client writes both sockets at once), which its worker keeps and watches
// for. The two then yield to each other, never leaving their worker idle,
// until the timer due soon fires (20 s at most). When that timer is on the
// sleeping worker's heap, only the watcher's look at every
// kTimerCheckTicks-th switch runs it; without the look, sysmon's backstop
// wakes a worker for it once overdue.
void ping_pong_on_a_watcher_until_a_timer_fires(TimerOnEachHeap& timers, int soon_on,
                                                LookRound* round) {
  *round = {};
  round->soon_on = soon_on;
  int first[2], second[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, first), 0);
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, second), 0);
  auto first_conn = weft::net::adopt_conn(first[1], "unix");
  auto second_conn = weft::net::adopt_conn(second[1], "unix");
  ASSERT_TRUE(first_conn && second_conn);
  const std::uint64_t rescues_before = weft::detail::scheduler_stats().timer_rescues;
  weft::WaitGroup done;
  done.add(2);
  auto yield_until_the_timer = [&] {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!timers.fired() && std::chrono::steady_clock::now() < give_up) weft::yield();
    EXPECT_TRUE(timers.fired()) << "the timer was lost";
  };
  weft::go([&] {
    char byte;
    EXPECT_TRUE(first_conn->read(&byte, 1));
    round->fired_before = timers.fired();
    round->reader_worker = weft::worker_index();
    // Not weft::metrics(): it stops the world, which wakes the other worker.
    round->watched = weft::detail::scheduler_stats().watcher == round->reader_worker;
    yield_until_the_timer();
    done.done();
  });
  weft::go([&] {
    char byte;
    EXPECT_TRUE(second_conn->read(&byte, 1));
    round->partner_worker = weft::worker_index();
    yield_until_the_timer();
    done.done();
  });
  ASSERT_TRUE(weft::test::wait_parked(2));
  timers.arm(soon_on);
  // Both workers asleep before the writes, so that one poll sees both.
  std::thread client([&] {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      const weft::detail::SchedulerStats st = weft::detail::scheduler_stats();
      if (st.idle_workers == 2 && st.spinning_workers == 0) break;
      if (std::chrono::steady_clock::now() > give_up) break;  // the round is not at issue
      std::this_thread::yield();
    }
    EXPECT_EQ(::write(first[0], "a", 1), 1);
    EXPECT_EQ(::write(second[0], "b", 1), 1);
  });
  done.wait();
  round->rescues = weft::detail::scheduler_stats().timer_rescues - rescues_before;
  timers.disarm();
  weft::blocking([&] { client.join(); });
  ::close(first[0]);
  ::close(second[0]);
}

// A worker that watches in the timer role's place runs every heap's due
// timers between its fibers (idle.h, invariant 7), and any busy worker its
// own heap's, every kTimerCheckTicks switches: a timer is not left to
// sysmon's backstop, which wakes a worker for it once 1 ms overdue on two
// of its rounds. Before, the look was made on a tick count that a yield
// advanced by two per switch, so that fibers switching by yields on
// worker with an even count skipped it forever: half the rounds here ended
// in a rescue, 3 to 4.7 ms late, whichever heap the timer was on. Without
// the watcher's look, every round with the timer on the other heap did.
TEST_P(IdleUnderLoadTest, AWatcherThatKeepsSwitchingRunsDueTimersOnEveryHeap) {
  if (workers() != 2) GTEST_SKIP() << "needs a worker that stays idle";
  constexpr int kMaxRounds = 600;
  constexpr int kWanted = 16, kWantedElsewhere = 6;
  int rounds = 0, at_issue = 0, elsewhere = 0;
  std::uint64_t rescued = 0, rescued_elsewhere = 0;
  run([&] {
    TimerOnEachHeap timers;
    ASSERT_TRUE(timers.placed()) << "no fiber kept by each worker";
    for (; rounds < kMaxRounds && (at_issue < kWanted || elsewhere < kWantedElsewhere); ++rounds) {
      LookRound round;
      ping_pong_on_a_watcher_until_a_timer_fires(timers, rounds % 2, &round);
      if (!round.at_issue()) continue;
      ++at_issue;
      rescued += round.rescues;
      if (round.timer_elsewhere()) {
        ++elsewhere;
        rescued_elsewhere += round.rescues;
      }
    }
  });
  std::printf(
      "[   INFO   ] %d rounds at issue in %d, %d with the timer elsewhere; sysmon rescued %llu "
      "timers, %llu of them elsewhere\n",
      at_issue, rounds, elsewhere, static_cast<unsigned long long>(rescued),
      static_cast<unsigned long long>(rescued_elsewhere));
  EXPECT_GE(at_issue, kWanted);  // the cases at issue happened
  EXPECT_GE(elsewhere, kWantedElsewhere);
  // A worker the VM preempts for over 2 ms may keep its look from running
  // once in a while.
  EXPECT_LE(rescued * 8, static_cast<std::uint64_t>(at_issue));
  EXPECT_LE(rescued_elsewhere * 4, static_cast<std::uint64_t>(elsewhere));
}

WEFT_NET_INSTANTIATE(IdleUnderLoadTest);

}  // namespace
