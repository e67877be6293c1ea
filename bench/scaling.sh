#!/usr/bin/env bash
# Scheduler scaling on a machine with more cores than CI's two: builds a
# release tree, runs the test suite once with every core, then the scheduler
# and context benchmarks at 1, 2, 4, 8 and 16 workers. Results go to $OUT
# (default /tmp/weft-scaling): tests.log, bench.txt, scaling.json.
set -uo pipefail
out=${OUT:-/tmp/weft-scaling}
mkdir -p "$out"
{ nproc; uname -r; g++ --version | head -1; } > "$out/machine.txt"
meson setup build/scaling -Dbuildtype=release -Dwerror=false > "$out/build.log" 2>&1 &&
  ninja -C build/scaling >> "$out/build.log" 2>&1 || { echo "build failed"; tail -30 "$out/build.log"; exit 1; }
WEFT_BENCH_WORKERS=${WEFT_BENCH_WORKERS:-1,2,4,8,16} timeout "${BENCH_SECONDS:-240}" \
  build/scaling/bench/weft-bench \
  --benchmark_filter='^BM_(ChannelPingPong|Yield|SpawnJoin|MutexContended|ContextCreateCancel|ContextCancelFanout)/' \
  --benchmark_repetitions=3 --benchmark_display_aggregates_only=true \
  --benchmark_out="$out/scaling.json" --benchmark_out_format=json > "$out/bench.txt" 2>&1
echo "bench rc=$?" >> "$out/bench.txt"
timeout "${TEST_SECONDS:-150}" build/scaling/tests/weft-tests --gtest_brief=1 > "$out/tests.log" 2>&1
echo "tests rc=$?" >> "$out/tests.log"
grep -E "median|rc=" "$out/bench.txt" | grep -v "^$" | head -60
tail -3 "$out/tests.log"
