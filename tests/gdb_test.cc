// The gdb extension (tools/gdb/weft_gdb.py) against a live process and a
// core file: gdb runs tests/gdb_target.cc, which parks four named fibers and
// stops itself with SIGTRAP; there `weft fibers`, `weft bt` and `weft frame`
// must show every fiber with its wait reason and the function it parked in.
// gdb then writes a core with `gcore` (so the test needs no core_pattern
// and no ulimit), and a second gdb must show the same from the core.
//
// gdb launches the target itself, so no ptrace attach permission is needed
// (Yama's ptrace_scope restricts attaching, not tracing one's own child).
// Skipped where gdb is missing or cannot trace (a container without ptrace),
// and in sanitizer builds: the extension reads the runtime's memory the same
// way in every build, and a sanitizer's shadow memory would make the core
// huge.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <regex>
#include <string>
#include <vector>

#include "sanitizer.h"

#ifndef WEFT_GDB_TARGET
#error "tests/meson.build defines WEFT_GDB_TARGET and WEFT_GDB_SCRIPT"
#endif

namespace {

struct Ran {
  int status = -1;
  std::string out;  // stdout and stderr together
};

Ran run_shell(const std::string& command) {
  Ran r;
  std::FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (!p) return r;
  char buf[4096];
  std::size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// The gdb command line: the extension sourced, then each command with a
// marker echoed before it, so that section() can find its output. No
// gdbinit, no debuginfod (it would go to the network for libc's symbols).
std::string gdb_command(const std::vector<std::string>& commands, const std::string& tail) {
  std::string cmd = "timeout -k 5 60 gdb -nx -batch -iex 'set debuginfod enabled off'";
  cmd += " -ex " + quote(std::string("source ") + WEFT_GDB_SCRIPT);
  for (const std::string& c : commands) {
    if (c != "run") cmd += " -ex " + quote("echo @@@ " + c + "\\n");
    cmd += " -ex " + quote(c);
  }
  return cmd + " " + tail;
}

// What gdb printed for one command: from its marker to the next.
std::string section(const std::string& out, const std::string& command) {
  const std::string marker = "@@@ " + command + "\n";
  const auto at = out.find(marker);
  if (at == std::string::npos) return "";
  const auto from = at + marker.size();
  const auto end = out.find("@@@ ", from);
  return out.substr(from, end == std::string::npos ? std::string::npos : end - from);
}

bool has(const std::string& text, const std::string& pattern) {
  return std::regex_search(text, std::regex(pattern));
}

// What both the live process and the core must show. `fd` is the socket
// the reader waits on.
void expect_fibers_and_stacks(const std::string& out, const std::string& fd, const char* where) {
  SCOPED_TRACE(where);
  const std::string fibers = section(out, "weft fibers");
  EXPECT_TRUE(has(fibers, "weft: 6 fibers: 1 running, 1 runnable, 4 parked")) << out;
  EXPECT_TRUE(has(fibers, R"(\d+ +chan-receiver +chan receive[ ,].*gdb_target\.cc:\d+)")) << out;
  EXPECT_TRUE(has(fibers, R"(\d+ +mutex-waiter +Mutex\.lock[ ,])")) << out;
  EXPECT_TRUE(has(fibers, R"(\d+ +sleeper +sleep[ ,])")) << out;
  EXPECT_TRUE(has(fibers, R"(\d+ +socket-reader +IO wait \(read\), fd )" + fd + "[ ,]")) << out;
  EXPECT_TRUE(has(fibers, R"(running on worker 0 \(thread \d+, LWP \d+\))")) << out;
  EXPECT_TRUE(has(fibers, R"(\d+ +not-started +runnable \(not started\))")) << out;
  EXPECT_TRUE(has(section(out, "weft bt not-started"), "has not started: it has no stack yet"))
      << out;

  const std::string chan = section(out, "weft bt chan-receiver");
  EXPECT_TRUE(has(chan, R"(fiber \d+ "chan-receiver" \[chan receive\])")) << out;
  EXPECT_TRUE(has(chan, R"(#\d+ .*park_in_channel_receive)")) << out;
  EXPECT_TRUE(has(chan, R"(#\d+ .*weft::detail::park)")) << out;
  EXPECT_FALSE(has(chan, R"((^|\n)#0 )")) << "the thread's own frame #0 shows:\n" << out;
  EXPECT_FALSE(has(chan, "corrupt stack")) << out;
  EXPECT_TRUE(has(section(out, "weft bt mutex-waiter"), R"(#\d+ .*park_in_mutex_lock)")) << out;
  EXPECT_TRUE(has(section(out, "weft bt sleeper"), R"(#\d+ .*park_in_sleep)")) << out;
  EXPECT_TRUE(has(section(out, "weft bt socket-reader"), R"(#\d+ .*park_in_socket_read)")) << out;

  // A running fiber's backtrace is its worker thread's.
  EXPECT_TRUE(has(fibers, R"(\n +1 +running on worker 0)")) << out;
  const std::string running = section(out, "weft bt 1");
  EXPECT_TRUE(has(running, R"(fiber 1 \[running on worker 0\]: on thread \d+)")) << out;
  EXPECT_TRUE(has(running, R"(#\d+ .*stop_for_gdb)")) << out;

  // `weft frame` selects the function that waits, and gdb's own commands
  // then walk the fiber's stack from there.
  EXPECT_TRUE(has(section(out, "weft frame sleeper"), R"(#\d+ .*park_in_sleep)")) << out;
  EXPECT_TRUE(has(section(out, "down"), R"(#\d+ .*weft::sleep_until)")) << out;
  const std::string viewed = section(out, "bt");
  EXPECT_TRUE(has(viewed, R"(#\d+ .*park_in_sleep)")) << out;
  EXPECT_FALSE(has(viewed, R"((^|\n)#0 )")) << out;
  EXPECT_TRUE(has(section(out, "weft frame off"), R"(#0 )")) << out;
  // And then the thread's own stack is as it was.
  EXPECT_TRUE(has(section(out, "bt 3"), R"(#0 )")) << out;
  EXPECT_FALSE(has(section(out, "bt 3"), "park_in_")) << out;
}

// Fiber 1 is the main fiber: the first spawned by the process's only
// runtime.
const std::vector<std::string> kInspect = {
    "weft fibers",
    "weft bt chan-receiver",
    "weft bt mutex-waiter",
    "weft bt sleeper",
    "weft bt socket-reader",
    "weft bt 1",
    "weft frame sleeper",
    "down",
    "bt",
    "weft frame off",
    "bt 3",
    "weft bt not-started",
};

TEST(GdbExtensionTest, LiveProcessAndCoreFile) {
#if defined(WEFT_ASAN) || defined(WEFT_TSAN)
  GTEST_SKIP() << "not in sanitizer builds (a sanitized process's core holds its shadow memory)";
#endif
#if !defined(__x86_64__)
  GTEST_SKIP() << "the gdb extension walks parked stacks on x86-64 only";
#endif
  if (run_shell("command -v gdb").status != 0) {
    GTEST_SKIP() << "gdb is not installed (./weft test installs it): the gdb extension is untested";
  }
  namespace fs = std::filesystem;
  std::string dir_template = (fs::temp_directory_path() / "weft-gdb-XXXXXX").string();
  ASSERT_NE(mkdtemp(dir_template.data()), nullptr);
  const fs::path dir(dir_template);
  const std::string core = (dir / "core").string();

  std::vector<std::string> live = {"run"};
  live.insert(live.end(), kInspect.begin(), kInspect.end());
  live.push_back("gcore " + core);
  live.push_back("kill");
  const Ran first = run_shell(gdb_command(live, std::string("--args ") + WEFT_GDB_TARGET));
  std::smatch m;
  if (!std::regex_search(first.out, m,
                         std::regex(R"(gdb-target: 4 fibers parked, socket fd (\d+))"))) {
    fs::remove_all(dir);
    if (has(first.out, "ptrace|Operation not permitted|Could not trace|Couldn't get registers")) {
      GTEST_SKIP() << "gdb cannot trace a process here:\n" << first.out;
    }
    FAIL() << "the target never stopped under gdb:\n" << first.out;
  }
  const std::string fd = m[1];
  EXPECT_TRUE(has(first.out, "SIGTRAP")) << first.out;
  expect_fibers_and_stacks(first.out, fd, "live process");

  ASSERT_TRUE(fs::exists(core)) << "gcore wrote no " << core << ":\n" << first.out;
  const Ran second = run_shell(gdb_command(kInspect, quote(WEFT_GDB_TARGET) + " " + quote(core)));
  expect_fibers_and_stacks(second.out, fd, "core file");
  fs::remove_all(dir);
}

}  // namespace
