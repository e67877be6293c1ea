// The idle protocol: whoever sleeps, no timer and no runnable fiber is
// forgotten. These cases reproduce schedules in which a worker gave up the
// timer role (or never woke a sleeper) while work was pending elsewhere.
#include <gtest/gtest.h>

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

#include "chaos.h"
#include "net/net_test_util.h"
#include "scheduler.h"
#include "test_util.h"
#include "weft/channel.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/time.h"

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

// The bound is liberal on purpose: a lost timer is late by as long as the
// ping-pong below runs (capped at kPingPongCap), a loaded machine by a few ms.
// Under schedule perturbation (WEFT_CHAOS) threads give their CPU away at
// random, so there only a ping-pong that ran to its cap counts as a loss.
constexpr auto kSleep = 5ms;
constexpr auto kLateBound = 20ms;
constexpr auto kPingPongCap = 2s;

struct Trial {
  Clock::duration late{};
  bool ping_pong_hit_its_cap = false;
};

// One trial of the schedule from the issue: fiber Z sleeps on one worker's
// heap while the worker that owned the timer role wakes for an earlier timer
// (P's), gives the role up and runs a ping-pong whose every ready lands in an
// empty runnext. Nobody may forget Z's timer meanwhile. Returns how late Z
// woke past its due time.
Trial sleeper_beside_a_ping_pong() {
  weft::Channel<int> ping, pong;
  std::atomic<bool> sleeper_woke{false};
  Trial trial;
  weft::WaitGroup wg;
  wg.add(3);
  // Q parks in recv first, so that P's send readies it (no spawn, no wakep).
  weft::go([&] {
    while (auto v = ping.recv()) {
      if (*v < 0) break;
      EXPECT_TRUE(pong.send(*v));
    }
    wg.done();
  });
  weft::go([&] {
    const auto due = Clock::now() + kSleep;
    weft::sleep_until(due);
    trial.late = Clock::now() - due;
    sleeper_woke.store(true);
    wg.done();
  });
  weft::go([&] {
    weft::sleep_for(1ms);
    const auto cap = Clock::now() + kPingPongCap;
    int i = 0;
    while (!sleeper_woke.load(std::memory_order_relaxed)) {
      if (Clock::now() >= cap) {
        trial.ping_pong_hit_its_cap = true;
        break;
      }
      EXPECT_TRUE(ping.send(i++));
      pong.recv();
    }
    EXPECT_TRUE(ping.send(-1));
    wg.done();
  });
  wg.wait();
  return trial;
}

class IdleProtocol : public ::testing::TestWithParam<int> {};

TEST_P(IdleProtocol, TimerFiresWhileTheRoleHolderRunsAPingPong) {
  const int trials = weft::test::stress_iterations(1000);
  int late_trials = 0, lost_trials = 0;
  Clock::duration worst{};
  std::uint64_t rescues = 0;
  weft::run(
      [&] {
        const std::uint64_t rescues_before = weft::detail::scheduler_stats().timer_rescues;
        for (int i = 0; i < trials; ++i) {
          const Trial t = sleeper_beside_a_ping_pong();
          worst = std::max(worst, t.late);
          if (t.late > kLateBound) ++late_trials;
          if (t.ping_pong_hit_its_cap) ++lost_trials;
        }
        rescues = weft::detail::scheduler_stats().timer_rescues - rescues_before;
      },
      weft::RunOptions{.workers = GetParam()});
  const auto worst_ms = std::chrono::duration_cast<std::chrono::milliseconds>(worst).count();
  EXPECT_EQ(lost_trials, 0) << "worst: " << worst_ms << " ms late over " << trials << " trials";
  if (weft::detail::chaos::seed() != 0) return;
  // A shared 2-core machine keeps a thread off the CPU for tens of ms now
  // and then (seen with 1 worker, where no role is involved: 2% of trials
  // beside two builds), and a role being handed on can wait as long for a
  // CPU: 5% may be late or rescued. Before the fix every sixth trial was
  // late (by up to 300 ms), and a third needed sysmon.
  const int allowed = trials / 20 + 2;
  EXPECT_LE(late_trials, allowed) << "worst: " << worst_ms << " ms late over " << trials
                                  << " trials";
  // sysmon's backstop would hide a lost timer role within a few ms: the role
  // itself must have done the work.
  EXPECT_LE(rescues, static_cast<std::uint64_t>(allowed));
}

// A fiber readied into an empty runnext while another worker sleeps must
// wake that worker: the readier may keep its own worker for a long time, and
// the readied fiber must not wait for sysmon to notice (2 ms and more).
TEST(IdleProtocolTwoWorkers, ReadyWakesASleepingWorker) {
  const int trials = weft::test::stress_iterations(300);
  int stuck = 0;
  std::uint64_t sysmon_before = 0, sysmon_after = 0;
  weft::run(
      [&] {
        sysmon_before = weft::detail::scheduler_stats().sysmon_wakeups;
        for (int i = 0; i < trials; ++i) {
          weft::Channel<int> ch;
          std::atomic<bool> ran{false};
          weft::go([&] {
            ch.recv();
            ran.store(true);
          });
          // Q parks in recv (we yield to it), and then the other worker runs
          // out of work and sleeps: the state under test.
          weft::yield();
          while (weft::detail::scheduler_stats().idle_workers < 1) weft::yield();
          EXPECT_TRUE(ch.send(1));  // readies Q into this worker's empty runnext
          // Hold this worker without yielding: Q can only run elsewhere.
          const auto give_up = Clock::now() + 10s;
          while (!ran.load() && Clock::now() < give_up) {
          }
          if (!ran.load()) ++stuck;
          while (!ran.load()) weft::yield();
        }
        sysmon_after = weft::detail::scheduler_stats().sysmon_wakeups;
      },
      weft::RunOptions{.workers = 2});
  EXPECT_EQ(stuck, 0);
  if (weft::detail::chaos::seed() != 0) return;
  // Only sysmon rescued it before the fix: 299 of 300 trials cost a sysmon
  // wake-up. A loaded machine (a TSan build, two builds beside it) can keep
  // the woken worker off the CPU long enough for sysmon to act in a few.
  EXPECT_LE(sysmon_after - sysmon_before, static_cast<std::uint64_t>(trials / 20 + 2));
}

// A spinner that naps while another worker runs fibers (Idle::nap) is
// counted as spinning, so a ready wakes nobody else: work that any worker
// may take must then poke it, or it waits out the nap. The nap is made 10 s
// long here, so that only a poke can get the work run in time.
TEST(IdleProtocolTwoWorkers, StealableWorkWakesANappingSpinner) {
  const int trials = weft::test::stress_iterations(20);
  weft::detail::set_spin_nap(10s);
  int napped = 0, stuck = 0;
  weft::run(
      [&] {
        for (int i = 0; i < trials; ++i) {
          // This fiber keeps its worker busy; the other one, woken by a
          // spawn (a yield wakes nobody), runs out of work, spins, and naps.
          const auto give_up = Clock::now() + 5s;
          while (weft::detail::scheduler_stats().napping_workers == 0 && Clock::now() < give_up) {
            weft::go([] {});
            weft::yield();
          }
          if (weft::detail::scheduler_stats().napping_workers == 0) continue;
          ++napped;
          std::atomic<bool> first{false}, second{false};
          weft::go([&] { first.store(true); });   // into our runnext: no poke
          weft::go([&] { second.store(true); });  // into our run queue: stealable
          // Hold this worker without yielding: the second fiber can only run
          // on the napping worker.
          const auto deadline = Clock::now() + 5s;
          while (!second.load() && Clock::now() < deadline) {
          }
          if (!second.load()) ++stuck;
          while (!first.load() || !second.load()) weft::yield();
        }
      },
      weft::RunOptions{.workers = 2});
  weft::detail::set_spin_nap(0ns);
  EXPECT_EQ(stuck, 0) << "of " << napped << " trials with a napping spinner";
  EXPECT_GT(napped, 0);
}

// A spinner shares its CPU with the threads it waits for: a server's client
// on the same cores, or here a plain thread that answers a fiber. With every
// thread of the process on one CPU, the answer can come only while the
// spinner is off that CPU. A spinner that kept it for its whole spin (50 us)
// made the answer wait for the spin's end (unless the thread preempted it
// as it woke), and its worker went to sleep first and was woken for the
// answer: 383 to 571 wake-ups in 2,000 rounds, against 27 to 137 once the
// spinner offers its CPU (the test build, every backend, 6 runs each).
// Two workers only: with one there is no spinner.
class SpinnerOnOneCpu : public weft::test::NetBackendTest {};

TEST_P(SpinnerOnOneCpu, GivesItsCpuToTheThreadItWaitsFor) {
  cpu_set_t allowed;
  ASSERT_EQ(sched_getaffinity(0, sizeof allowed, &allowed), 0);
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &allowed)) {
      CPU_SET(cpu, &one);
      break;
    }
  }
  // Threads inherit their creator's mask: the workers, sysmon and the
  // answering thread all run on this one CPU.
  ASSERT_EQ(sched_setaffinity(0, sizeof one, &one), 0);
  const int rounds = weft::test::stress_iterations(2000);
  const auto bound = static_cast<std::uint64_t>(rounds / 6);
  // A few tries: a noisy machine now and then takes the CPU from the
  // answerer at the wrong moments for a whole run (CI once: 529 wake-ups,
  // where 27 to 305 is usual), and a spinner that kept its CPU fails every
  // try (383 to 571).
  constexpr int kTries = 3;
  std::uint64_t wakeups = 0;
  for (int attempt = 1; attempt <= kTries; ++attempt) {
    int answered = 0;
    run([&] {
      weft::Channel<int> ask, answer;
      std::thread answerer([&] {
        while (auto v = ask.recv()) {
          if (!answer.send(*v + 1)) break;
        }
      });
      const auto round_trip = [&](int i) {
        if (!ask.send(i)) return false;
        const auto v = answer.recv();
        return v && *v == i + 1;
      };
      // Both workers have run and settled before the count starts.
      for (int i = 0; i < 10; ++i) round_trip(i);
      const std::uint64_t start = weft::detail::scheduler_stats().worker_wakeups;
      while (answered < rounds && round_trip(answered)) ++answered;
      wakeups = weft::detail::scheduler_stats().worker_wakeups - start;
      ask.close();
      answerer.join();
    });
    EXPECT_EQ(answered, rounds);
    std::printf("[ INFO     ] %llu worker wake-ups over %d rounds (try %d)\n",
                static_cast<unsigned long long>(wakeups), rounds, attempt);
    if (weft::detail::chaos::seed() != 0) break;  // perturbed threads give their CPU away anyway
    if (wakeups <= bound) break;
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof allowed, &allowed), 0);
  if (weft::detail::chaos::seed() != 0) return;
  EXPECT_LE(wakeups, bound) << "in each of " << kTries << " tries";
}

std::vector<weft::test::NetParam> two_worker_params() {
  std::vector<weft::test::NetParam> params = weft::test::net_params();
  std::erase_if(params, [](const weft::test::NetParam& p) { return p.workers != 2; });
  return params;
}

INSTANTIATE_TEST_SUITE_P(Backends, SpinnerOnOneCpu, ::testing::ValuesIn(two_worker_params()),
                         weft::test::backend_name);

INSTANTIATE_TEST_SUITE_P(Workers, IdleProtocol, ::testing::Values(1, 2), weft::test::workers_name);

}  // namespace
