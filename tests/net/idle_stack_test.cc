// Idle stacks (runtime/src/idle_stack.h): a fiber spawned with
// SpawnOptions::swap_idle_stack that waits on a socket gives its stack's
// pages back, and finds its stack as it left it when it runs again, whoever
// wakes it (input, a deadline, a context's cancel, close) and whenever
// (before, during or after the give-back).
#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "idle_stack.h"
#include "net_test_util.h"
#include "registry.h"
#include "weft/context.h"
#include "weft/debug.h"
#include "weft/net.h"
#include "weft/runtime.h"
#include "weft/sync.h"

namespace {

using weft::detail::give_back_idle_stacks;
using weft::detail::idle_stack_stats;
using weft::test::NetBackendTest;

class IdleStackTest : public NetBackendTest {
 protected:
  void SetUp() override {
    NetBackendTest::SetUp();
    weft::detail::set_idle_stack_after_ms(0);  // any parked one's
  }
  void TearDown() override {
    weft::detail::set_idle_stack_after_ms(1000);
    NetBackendTest::TearDown();
  }
};

constexpr weft::SpawnOptions kSwaps{.swap_idle_stack = true};

bool resident(const void* p) {
  const auto page = static_cast<std::uintptr_t>(sysconf(_SC_PAGESIZE));
  unsigned char in = 0;
  void* at = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(p) & ~(page - 1));
  return mincore(at, 1, &in) == 0 && (in & 1) != 0;
}

// What a reader saw: its stack's pattern after the wait, and the wait's end.
struct Seen {
  // Read by the test while the reader waits: after wait_parked, which
  // orders nothing.
  std::atomic<const void*> pattern_at{nullptr};
  bool pattern_intact = false;
  bool got_byte = false;
  std::string error;
};

// Fills a pattern on its own stack, waits for one byte (bound to ctx if
// given), and checks the pattern after.
void read_with_pattern(weft::net::Conn& conn, const weft::Context* ctx, std::uint64_t seed,
                       Seen& seen) {
  volatile std::uint64_t pattern[64];
  for (int i = 0; i < 64; ++i) pattern[i] = seed * 0x9E3779B97F4A7C15ULL + static_cast<unsigned>(i);
  seen.pattern_at.store(const_cast<const std::uint64_t*>(pattern), std::memory_order_release);
  char byte = 0;
  auto r = ctx ? conn.read(*ctx, &byte, 1) : conn.read(&byte, 1);
  bool intact = true;
  for (int i = 0; i < 64; ++i) {
    intact = intact && pattern[i] == seed * 0x9E3779B97F4A7C15ULL + static_cast<unsigned>(i);
  }
  seen.pattern_intact = intact;
  seen.got_byte = r && r.count() == 1;
  if (!r) seen.error = r.error().to_string();
}

std::vector<weft::test::TcpPair> unix_pairs(int n) {
  std::vector<weft::test::TcpPair> pairs;
  for (int i = 0; i < n; ++i) pairs.push_back(weft::test::unix_pair());
  return pairs;
}

std::size_t sweep_all() {
  return give_back_idle_stacks(weft::detail::coarse_now_ms(), 1'000'000);
}

// Sweeps until `n` stacks have gone back since `before`: a reader that
// wait_parked counts may not have published itself on its slot yet.
bool give_back(std::uint64_t n, const weft::detail::IdleStackStats& before) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (idle_stack_stats().given_back - before.given_back < n) {
    if (std::chrono::steady_clock::now() > until) return false;
    sweep_all();
    weft::yield();
  }
  return true;
}

TEST_P(IdleStackTest, AParkedReadersPagesGoBackAndItsStackComesBackWhole) {
  constexpr int kReaders = 32;
  const auto before = idle_stack_stats();
  std::vector<Seen> seen(kReaders);
  std::vector<bool> gone(kReaders);
  run([&] {
    std::vector<weft::test::TcpPair> pairs = unix_pairs(kReaders);
    auto ctx = weft::with_cancel(weft::background());
    weft::WaitGroup wg;
    for (int i = 0; i < kReaders; ++i) {
      wg.add(1);
      // Half bound to a context: its hook must not be on the given-back stack.
      const weft::Context* bound = i % 2 ? &ctx.ctx : nullptr;
      weft::go(
          [&, i, bound] {
            read_with_pattern(pairs[static_cast<std::size_t>(i)].server, bound,
                              static_cast<std::uint64_t>(i), seen[static_cast<std::size_t>(i)]);
            wg.done();
          },
          kSwaps);
    }
    ASSERT_TRUE(weft::test::wait_parked(kReaders));
    // Sysmon's sweep may give some back too: each goes once.
    ASSERT_TRUE(give_back(kReaders, before));
    sweep_all();
    EXPECT_EQ(idle_stack_stats().given_back - before.given_back, std::uint64_t{kReaders});
    for (int i = 0; i < kReaders; ++i) gone[i] = !resident(seen[i].pattern_at);
    for (auto& p : pairs) ASSERT_TRUE(p.client.write("x", 1));
    wg.wait();
  });
  const auto after = idle_stack_stats();
  EXPECT_EQ(after.taken_back - before.taken_back, std::uint64_t{kReaders});
  EXPECT_EQ(after.saved_bytes, before.saved_bytes);
  for (int i = 0; i < kReaders; ++i) {
    EXPECT_TRUE(gone[i]) << "reader " << i << ": its stack's page stayed resident";
    EXPECT_TRUE(seen[i].pattern_intact) << "reader " << i;
    EXPECT_TRUE(seen[i].got_byte) << "reader " << i << ": " << seen[i].error;
  }
}

// Only fibers that opted in: another's locals may be in use by others while
// it waits, and its stack stays as it is.
TEST_P(IdleStackTest, AFiberThatDidNotOptInKeepsItsStack) {
  Seen seen;
  bool stayed = false;
  const auto before = idle_stack_stats();
  run([&] {
    auto pair = weft::test::unix_pair();
    weft::WaitGroup wg;
    wg.add(1);
    weft::go([&] {
      read_with_pattern(pair.server, nullptr, 3, seen);
      wg.done();
    });
    ASSERT_TRUE(weft::test::wait_parked(1));
    sweep_all();
    stayed = resident(seen.pattern_at);
    ASSERT_TRUE(pair.client.write("x", 1));
    wg.wait();
  });
  EXPECT_TRUE(stayed);
  EXPECT_TRUE(seen.pattern_intact);
  EXPECT_EQ(idle_stack_stats().given_back, before.given_back);
}

// A fiber still parked when the runtime ends is abandoned with its stack
// as it left it: what it points to stays reachable (LeakSanitizer roots).
TEST_P(IdleStackTest, AnAbandonedFiberGetsItsStackBack) {
  const auto before = idle_stack_stats();
  weft::test::TcpPair pair;  // outlives the runtime, as the reader does
  std::uint64_t given = 0;
  run([&] {
    pair = weft::test::unix_pair();
    weft::go(
        [&] {
          char byte;
          (void)pair.server.read(&byte, 1);
        },
        kSwaps);
    ASSERT_TRUE(weft::test::wait_parked(1));
    ASSERT_TRUE(give_back(1, before));
    given = idle_stack_stats().given_back - before.given_back;
  });
  const auto after = idle_stack_stats();
  EXPECT_EQ(given, 1u);
  EXPECT_EQ(after.taken_back - before.taken_back, 1u);
  EXPECT_EQ(after.saved_bytes, before.saved_bytes);
  EXPECT_EQ(after.fibers, before.fibers);
}

// The cancel walks the hooks of every reader bound to the context: with a
// hook on a given-back stack it read zeros there (and a neighbour's detach
// wrote into it, lost when the stack came back).
TEST_P(IdleStackTest, ACancelReachesReadersWhoseStacksWentBack) {
  constexpr int kReaders = 64;
  const auto before = idle_stack_stats();
  std::vector<Seen> seen(kReaders);
  run([&] {
    std::vector<weft::test::TcpPair> pairs = unix_pairs(kReaders);
    auto ctx = weft::with_cancel(weft::background());
    weft::WaitGroup evens, odds;
    for (int i = 0; i < kReaders; ++i) {
      weft::WaitGroup& wg = i % 2 ? odds : evens;
      wg.add(1);
      weft::go(
          [&, i] {
            read_with_pattern(pairs[static_cast<std::size_t>(i)].server, &ctx.ctx,
                              static_cast<std::uint64_t>(i) + 1000,
                              seen[static_cast<std::size_t>(i)]);
            wg.done();
          },
          kSwaps);
    }
    ASSERT_TRUE(weft::test::wait_parked(kReaders));
    ASSERT_TRUE(give_back(kReaders, before));
    // Half of them end first: their detaches unlink them from among the
    // given-back ones.
    for (int i = 0; i < kReaders; i += 2) ASSERT_TRUE(pairs[i].client.write("x", 1));
    evens.wait();
    ctx.cancel();
    odds.wait();
  });
  for (int i = 0; i < kReaders; ++i) {
    EXPECT_TRUE(seen[i].pattern_intact) << "reader " << i;
    if (i % 2 == 0) {
      EXPECT_TRUE(seen[i].got_byte) << "reader " << i << ": " << seen[i].error;
    } else {
      EXPECT_FALSE(seen[i].got_byte) << "reader " << i;
      EXPECT_NE(seen[i].error.find("canceled"), std::string::npos) << seen[i].error;
    }
  }
}

// A dump walks a given-back stack where its fiber left it: the stack comes
// back first, and the walk shows the reader's frames.
TEST_P(IdleStackTest, ADumpWalksAGivenBackStack) {
  Seen seen;
  std::string dump;
  const auto before = idle_stack_stats();
  run([&] {
    auto pair = weft::test::unix_pair();
    weft::WaitGroup wg;
    wg.add(1);
    weft::go(
        [&] {
          read_with_pattern(pair.server, nullptr, 7, seen);
          wg.done();
        },
        kSwaps);
    ASSERT_TRUE(weft::test::wait_parked(1));
    ASSERT_TRUE(give_back(1, before));
    ASSERT_FALSE(resident(seen.pattern_at));
    char* text = nullptr;
    std::size_t size = 0;
    std::FILE* out = open_memstream(&text, &size);
    weft::dump_fibers(out);
    std::fclose(out);
    dump.assign(text, size);
    std::free(text);
    ASSERT_TRUE(pair.client.write("x", 1));
    wg.wait();
  });
  EXPECT_TRUE(seen.pattern_intact);
  EXPECT_TRUE(seen.got_byte) << seen.error;
  EXPECT_NE(dump.find("read_with_pattern"), std::string::npos) << dump;
  EXPECT_EQ(dump.find("could not be walked"), std::string::npos) << dump;
  // Taken back by the dump, not again by the wake-up.
  EXPECT_EQ(idle_stack_stats().taken_back - before.taken_back, 1u);
}

// Give-backs racing every kind of wake-up: input (a ping-pong), deadlines
// that expire, and a cancel at the end. A sweeper thread gives back
// whatever is parked, as fast as it can, with random pauses; every reader
// checks its stack's pattern after every wait.
TEST_P(IdleStackTest, GiveBacksRacingWakeUpsStress) {
  constexpr int kReaders = 8;
  const int rounds = weft::test::stress_iterations(1000);  // per reader
  std::atomic<bool> stop{false};
  std::atomic<int> broken{0}, answered{0}, timeouts{0};
  const auto before = idle_stack_stats();
  std::thread sweeper([&] {
    std::minstd_rand rng(42);
    while (!stop.load(std::memory_order_relaxed)) {
      sweep_all();
      if (rng() % 4 == 0) std::this_thread::sleep_for(std::chrono::microseconds(rng() % 50));
    }
  });
  run([&] {
    std::vector<weft::test::TcpPair> pairs = unix_pairs(kReaders);
    auto ctx = weft::with_cancel(weft::background());
    weft::WaitGroup wg;
    for (int i = 0; i < kReaders; ++i) {
      wg.add(2);
      weft::net::Conn& server = pairs[static_cast<std::size_t>(i)].server;
      weft::net::Conn& client = pairs[static_cast<std::size_t>(i)].client;
      // The server echoes; every third read has a deadline already close.
      weft::go(
          [&, i] {
            for (int round = 0;; ++round) {
              Seen seen;
              if (round % 3 == 0) {
                (void)server.set_read_deadline(weft::Clock::now() +
                                               std::chrono::microseconds(20 + 37 * i));
              } else {
                (void)server.set_read_deadline(weft::Clock::time_point{});
              }
              read_with_pattern(server, i % 2 ? &ctx.ctx : nullptr,
                                static_cast<std::uint64_t>(round), seen);
              if (!seen.pattern_intact) broken.fetch_add(1);
              if (seen.got_byte) {
                if (!server.write("y", 1)) break;
              } else if (seen.error.find("timeout") != std::string::npos) {
                timeouts.fetch_add(1);
              } else {
                break;  // closed or cancelled: the end
              }
            }
            wg.done();
          },
          kSwaps);
      weft::go(
          [&] {
            char byte;
            for (int round = 0; round < rounds; ++round) {
              if (!client.write("x", 1) || !client.read(&byte, 1)) break;
              answered.fetch_add(1);
              if (round % 16 == 0) weft::sleep_for(std::chrono::microseconds(200));
            }
            (void)client.close();
            wg.done();
          },
          kSwaps);
    }
    wg.wait();
    ctx.cancel();
  });
  stop = true;
  sweeper.join();
  const auto after = idle_stack_stats();
  EXPECT_EQ(broken.load(), 0);
  EXPECT_EQ(answered.load(), kReaders * rounds);
  EXPECT_GT(after.given_back - before.given_back, 0u);
  EXPECT_EQ(after.saved_bytes, before.saved_bytes);
  std::printf("given back %llu times, %d deadlines expired\n",
              static_cast<unsigned long long>(after.given_back - before.given_back),
              timeouts.load());
}

WEFT_NET_INSTANTIATE(IdleStackTest);

}  // namespace
