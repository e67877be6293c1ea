// Two numbers Google Benchmark cannot express: resident memory with 100k
// parked fibers, and the CPU an idle runtime burns. One JSON line each.
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>

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
        std::atomic<int> started{0};
        weft::WaitGroup done;
        for (int i = 0; i < parked; ++i) {
          done.add(1);
          weft::go([&] {
            started.fetch_add(1, std::memory_order_relaxed);
            never.recv();
            done.done();
          });
        }
        while (started.load() < parked) weft::sleep_for(std::chrono::milliseconds(1));
        weft::sleep_for(std::chrono::milliseconds(50));  // the last ones reach recv()
        const double with_parked = rss_mib();
        never.close();
        done.wait();
        std::printf("{\"name\": \"rss_parked_fibers\", \"fibers\": %d, \"mib\": %.1f}\n", parked,
                    with_parked - before);
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
