// Worker counts the benchmarks run with: 1 and 2 (the CI machine's cores),
// or the list in WEFT_BENCH_WORKERS (e.g. "1,2,4,8,16" on a bigger machine,
// to see how the scheduler scales).
#pragma once

#include <benchmark/benchmark.h>

#include <cstdlib>
#include <vector>

namespace weft::bench {

inline std::vector<long> worker_counts() {
  const char* env = std::getenv("WEFT_BENCH_WORKERS");
  if (!env || !*env) return {1, 2};
  std::vector<long> counts;
  for (const char* p = env; *p;) {
    char* end = nullptr;
    const long n = std::strtol(p, &end, 10);
    if (end == p) break;  // not a number: stop at what parsed
    if (n > 0) counts.push_back(n);
    p = *end == ',' ? end + 1 : end;
  }
  return counts;
}

// ->Apply(each_worker_count): one run per worker count (the last argument).
inline void each_worker_count(benchmark::internal::Benchmark* b) {
  for (long w : worker_counts()) b->Arg(w);
}

}  // namespace weft::bench
