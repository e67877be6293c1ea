// Two numbers Google Benchmark cannot express: resident memory with 100k
// parked fibers, and the CPU an idle runtime burns. One JSON line each.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "weft/weft.h"

namespace {

double rss_mib() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kib = -1;
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) kib = std::strtol(line + 6, nullptr, 10);
  }
  std::fclose(f);
  return static_cast<double>(kib) / 1024.0;
}

double cpu_seconds() {
  rusage r{};
  getrusage(RUSAGE_SELF, &r);
  return static_cast<double>(r.ru_utime.tv_sec + r.ru_stime.tv_sec) +
         static_cast<double>(r.ru_utime.tv_usec + r.ru_stime.tv_usec) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  const int parked = argc > 1 ? std::atoi(argv[1]) : 100'000;
  const double idle_seconds = argc > 2 ? std::atof(argv[2]) : 5.0;
  weft::run(
      [&] {
        const double before = rss_mib();
        weft::Channel<int> never;
        // `started` releases main once every fiber has run (its stack page is
        // touched) and is about to park; `done` proves they all woke at close.
        weft::WaitGroup started, done;
        started.add(parked);
        done.add(parked);
        for (int i = 0; i < parked; ++i) {
          weft::go([&] {
            started.done();
            never.recv();
            done.done();
          });
        }
        started.wait();
        const double with_parked = rss_mib();
        never.close();
        done.wait();
        std::printf(
            "{\"name\": \"rss_parked_fibers\", \"fibers\": %d, \"mib\": %.1f, "
            "\"kib_per_fiber\": %.2f, \"total_mib\": %.1f}\n",
            parked, with_parked - before, (with_parked - before) * 1024.0 / parked, with_parked);
      },
      weft::RunOptions{.workers = 2});
  weft::run(
      [&] {
        weft::sleep_for(std::chrono::milliseconds(200));  // settle: spinners stop
        const double cpu0 = cpu_seconds();
        const auto t0 = std::chrono::steady_clock::now();
        weft::sleep_for(std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::chrono::duration<double>(idle_seconds)));
        const double wall =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        std::printf("{\"name\": \"idle_cpu\", \"seconds\": %.1f, \"percent_of_a_core\": %.3f}\n",
                    wall, 100.0 * (cpu_seconds() - cpu0) / wall);
      },
      weft::RunOptions{.workers = 2});
  return 0;
}
