// A small tour of the scheduler: fibers spread over the workers, a channel
// pipeline, and blocking work that does not stall a worker.
#include <weft/weft.h>

#include <atomic>
#include <cstdio>

int main() {
  return weft::run([] {
    std::printf("weft: %d workers\n", weft::num_workers());
    std::atomic<int> done{0};
    const int n = 10000;
    for (int i = 0; i < n; ++i) weft::go([&done] { done.fetch_add(1); });
    while (done.load() < n) weft::yield();
    std::printf("spawned and ran %d fibers\n", n);
  });
}
