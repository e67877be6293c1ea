// The environment variables: an empty value is unset, words are matched in
// any case, an unknown value is rejected on stderr whatever WEFT_LOG says,
// naming what is accepted, and the default is used. Each case is a death
// test, so that its settings are read fresh (the logger reads WEFT_LOG once
// per process) and never leak into the rest of the suite.
#include <gtest/gtest.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

#include "log.h"
#include "scheduler.h"
#include "weft/channel.h"
#include "weft/poller.h"
#include "weft/runtime.h"
#include "weft/select.h"
#include "weft/time.h"

namespace {

using weft::detail::log;

int cpu_count() {
  cpu_set_t set;
  return sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
}

std::string starting_line(int workers, const std::string& poller) {
  return "starting: " + std::to_string(workers) + (workers == 1 ? " worker" : " workers") +
         ", poller " + poller;
}

TEST(EnvDeathTest, LogLevelIsCaseInsensitive) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // spdlog's own parser read "WARN" as "off": no warning was ever printed.
  setenv("WEFT_LOG", "WARN", 1);
  EXPECT_EXIT(
      {
        log().warn("a warning that WEFT_LOG=WARN shows");
        _exit(log().level() == spdlog::level::warn ? 0 : 1);
      },
      ::testing::ExitedWithCode(0), "a warning that WEFT_LOG=WARN shows");
  setenv("WEFT_LOG", "Debug", 1);
  EXPECT_EXIT(_exit(log().level() == spdlog::level::debug ? 0 : 1), ::testing::ExitedWithCode(0),
              "");
  unsetenv("WEFT_LOG");
}

TEST(EnvDeathTest, UnknownLogLevelIsRejectedAndWarnUsed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  setenv("WEFT_LOG", "bogus", 1);
  EXPECT_EXIT(_exit(log().level() == spdlog::level::warn ? 0 : 1), ::testing::ExitedWithCode(0),
              "weft: WEFT_LOG='bogus' rejected \\(expected one of trace, debug, info, warn, error, "
              "critical, off, in any case\\); using warn");
  // Empty is unset: the default, and nothing to reject.
  setenv("WEFT_LOG", "", 1);
  EXPECT_EXIT(_exit(log().level() == spdlog::level::warn ? 0 : 1), ::testing::ExitedWithCode(0),
              "");
  unsetenv("WEFT_LOG");
}

TEST(EnvDeathTest, UncaughtExceptionIsReportedWithLoggingOff) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  for (const char* level : {"off", "OFF", "WARN"}) {
    setenv("WEFT_LOG", level, 1);
    EXPECT_EXIT(weft::run(
                    [] {
                      weft::go([] { throw std::runtime_error("fiber boom"); });
                      weft::sleep_for(std::chrono::nanoseconds::max());
                    },
                    weft::RunOptions{.workers = 1}),
                ::testing::KilledBySignal(SIGABRT),
                "weft: fiber [0-9]+: uncaught exception std::runtime_error: fiber boom")
        << "WEFT_LOG=" << level;
  }
  unsetenv("WEFT_LOG");
}

TEST(EnvDeathTest, WorkerCountAndPollerAreLoggedAtInfo) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  setenv("WEFT_LOG", "info", 1);
  setenv("WEFT_PROCS", "3", 1);
  EXPECT_EXIT(weft::run([] { _exit(weft::num_workers() == 3 ? 0 : 1); }),
              ::testing::ExitedWithCode(0), starting_line(3, "[a-z_]+"));
  unsetenv("WEFT_PROCS");
  unsetenv("WEFT_LOG");
}

TEST(EnvDeathTest, BadWorkerCountIsRejectedWhateverTheLogLevel) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  setenv("WEFT_LOG", "off", 1);
  for (const char* bad : {"abc", "0", "1025", "-2", " 4", "4x"}) {
    setenv("WEFT_PROCS", bad, 1);
    EXPECT_EXIT(weft::run([] { _exit(weft::num_workers() == cpu_count() ? 0 : 1); }),
                ::testing::ExitedWithCode(0),
                "weft: WEFT_PROCS='" + std::string(bad) +
                    "' rejected \\(expected a worker count from 1 to 1024\\); using the CPU count")
        << "WEFT_PROCS=" << bad;
  }
  unsetenv("WEFT_PROCS");
  unsetenv("WEFT_LOG");
}

// WEFT_COOP_BUDGET: 0 turns the budget off (no fiber ever yields for it), a
// small one makes polling loops yield at that pace, and a bad value is
// rejected in favour of 128.
int coop_yields_after_polling(int selects) {
  int yields = -1;
  weft::run(
      [&] {
        weft::Channel<int> never;
        const std::uint64_t before = weft::detail::scheduler_stats().coop_yields;
        for (int i = 0; i < selects; ++i) {
          weft::select(weft::on_recv(never, [](std::optional<int>) {}), weft::on_default([] {}));
        }
        yields = static_cast<int>(weft::detail::scheduler_stats().coop_yields - before);
      },
      weft::RunOptions{.workers = 1});
  return yields;
}

TEST(EnvDeathTest, CoopBudgetIsReadAndBadValuesRejected) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  setenv("WEFT_COOP_BUDGET", "0", 1);
  EXPECT_EXIT(_exit(coop_yields_after_polling(10000) == 0 ? 0 : 1), ::testing::ExitedWithCode(0),
              "");
  setenv("WEFT_COOP_BUDGET", "2", 1);
  EXPECT_EXIT(_exit(coop_yields_after_polling(10000) >= 4000 ? 0 : 1), ::testing::ExitedWithCode(0),
              "");
  setenv("WEFT_LOG", "off", 1);
  setenv("WEFT_COOP_BUDGET", "lots", 1);
  EXPECT_EXIT(_exit(coop_yields_after_polling(128 * 100) >= 50 ? 0 : 1),
              ::testing::ExitedWithCode(0),
              "weft: WEFT_COOP_BUDGET='lots' rejected \\(expected a budget from 1 to 1000000 "
              "units, or 0 for none\\); using 128");
  unsetenv("WEFT_COOP_BUDGET");
  unsetenv("WEFT_LOG");
}

// The backends built in, as the rejection lists them, and the one a
// rejected WEFT_POLLER falls back to (the first this kernel allows).
std::pair<std::string, std::string> built_and_fallback() {
  std::string built, fallback;
  for (const char* const* n = weft::poll::available_backends(); *n; ++n) {
    built += (built.empty() ? "" : ", ") + std::string(*n);
    if (fallback.empty() && weft::poll::make_poller(*n, nullptr)) fallback = *n;
  }
  return {built, fallback};
}

TEST(EnvDeathTest, UnknownPollerIsRejectedWhateverTheLogLevel) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto [built, fallback] = built_and_fallback();
  setenv("WEFT_LOG", "off", 1);
  setenv("WEFT_POLLER", "nope", 1);
  EXPECT_EXIT(
      weft::run([] { _exit(0); }, weft::RunOptions{.workers = 1}), ::testing::ExitedWithCode(0),
      "weft: WEFT_POLLER='nope' rejected \\(no poller backend is named 'nope'; built: " + built +
          "\\); using " + fallback);
  unsetenv("WEFT_POLLER");
  unsetenv("WEFT_LOG");
}

// A backend weft has but this build does not (kqueue without libkqueue on
// Linux, io_uring without liburing) is named as such, with what is used.
TEST(EnvDeathTest, APollerNotBuiltInSaysSoAndNamesTheOneUsed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const auto [built, fallback] = built_and_fallback();
  std::string missing;
  for (const char* name : {"kqueue", "io_uring", "epoll"}) {
    if (!weft::poll::make_poller(name, nullptr) &&
        (", " + built + ", ").find(std::string(", ") + name + ", ") == std::string::npos) {
      missing = name;
      break;
    }
  }
  if (missing.empty()) GTEST_SKIP() << "this build has every backend";
  setenv("WEFT_LOG", "off", 1);
  setenv("WEFT_POLLER", missing.c_str(), 1);
  EXPECT_EXIT(weft::run([] { _exit(0); }, weft::RunOptions{.workers = 1}),
              ::testing::ExitedWithCode(0),
              "weft: WEFT_POLLER='" + missing + "' rejected \\(" + missing +
                  " is not built into this weft; built: " + built + "\\); using " + fallback);
  unsetenv("WEFT_POLLER");
  unsetenv("WEFT_LOG");
}

// Refuses io_uring_setup with EPERM from now on, in this process, as a
// container's seccomp policy does.
bool refuse_io_uring_setup() {
#if defined(__x86_64__)
  constexpr std::uint32_t arch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
  constexpr std::uint32_t arch = AUDIT_ARCH_AARCH64;
#else
  return false;
#endif
  sock_filter filter[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, arch, 1, 0),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr)),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
      BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
  };
  sock_fprog prog{static_cast<unsigned short>(sizeof filter / sizeof filter[0]), filter};
  return prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0 &&
         prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) == 0;
}

// A WEFT_POLLER the kernel refuses says why, whatever the log level, and
// names the backend used instead.
TEST(EnvDeathTest, APollerTheKernelRefusesSaysWhyAndNamesTheOneUsed) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  if (!weft::poll::make_poller("io_uring", nullptr)) {
    GTEST_SKIP() << "io_uring is not built in, or refused here already";
  }
  const auto [built, fallback] = built_and_fallback();
  ASSERT_NE(fallback, "io_uring");
  setenv("WEFT_LOG", "off", 1);
  setenv("WEFT_POLLER", "io_uring", 1);
  EXPECT_EXIT(
      {
        if (!refuse_io_uring_setup()) _exit(3);
        weft::run([] { _exit(0); }, weft::RunOptions{.workers = 1});
      },
      ::testing::ExitedWithCode(0),
      "weft: WEFT_POLLER='io_uring' rejected \\(io_uring_queue_init: Operation not permitted\\); "
      "using " +
          fallback);
  unsetenv("WEFT_POLLER");
  unsetenv("WEFT_LOG");
}

// Each backend this kernel allows is chosen by its name in capitals. (For
// the default backend this proves little; io_uring, where allowed, is the
// case that fell back to epoll before.)
TEST(EnvDeathTest, PollerNameIsCaseInsensitive) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  setenv("WEFT_LOG", "info", 1);
  for (const char* const* n = weft::poll::available_backends(); *n; ++n) {
    if (!weft::poll::make_poller(*n, nullptr)) continue;  // refused by this kernel
    std::string upper = *n;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    setenv("WEFT_POLLER", upper.c_str(), 1);
    EXPECT_EXIT(weft::run([] { _exit(0); }, weft::RunOptions{.workers = 1}),
                ::testing::ExitedWithCode(0), starting_line(1, *n))
        << "WEFT_POLLER=" << upper;
  }
  unsetenv("WEFT_POLLER");
  unsetenv("WEFT_LOG");
}

}  // namespace
