#!/usr/bin/env bash
# The scaling report (issue 18): weft beside Go at 1, 2, 4, 8 and 16 workers
# (Go's GOMAXPROCS), same machine, same run. Two steps, because the
# many-core machine it is meant for has neither Go, wrk nor a network:
#
#   bench/scaling.sh prepare   where Go is (./weft bench installs it): builds
#                              the Go peers as static binaries into
#                              bench/peers/bin/ (git-ignored: carry it)
#   bench/scaling.sh run       on the machine to measure: builds weft
#                              (release) from this tree, then measures
#
# What `run` measures, each at every worker count in WORKERS:
#   - runtime rows (bench/compare.py): ping-pong (one pair, and one pair per
#     worker, all at once), spawn+join, contended Mutex, cancel fan-out to
#     10k waiters;
#   - wake-ups (bench/weft-wakeup --vs-go): cancel-read and fanout-1000;
#   - HTTP hello throughput: weft's example server and Go's net/http one,
#     each on cores 0..N-1 (taskset), loaded by weft-http-load (plain epoll
#     threads, no weft) on the cores left; with no core left the load shares
#     the server's, and the table says so.
# Then bench/scaling_report.py writes report.md (a table per measurement,
# per-op cost or throughput against workers, Go/weft ratios) and
# scaling.svg. Everything goes to $OUT (default /tmp/weft-scaling).
#
# Environment: WORKERS (1,2,4,8,16), REPS (3), HTTP_SECONDS (10),
# HTTP_CONNECTIONS (256), OUT, BUILD (build/scaling: a release build folder).
# Counts above the machine's CPUs are skipped.
set -uo pipefail
cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.."

GO_BIN=bench/peers/bin
BUILD=${BUILD:-build/scaling}

prepare() {
  command -v go >/dev/null || {
    echo "scaling.sh prepare: needs go (apt-get install golang-go)" >&2
    exit 1
  }
  mkdir -p "$GO_BIN"
  local peer
  for peer in runtimebench wakeup servers; do
    (cd "bench/peers/go/$peer" && CGO_ENABLED=0 go build -trimpath -o "../../bin/go-$peer" .) || exit 1
  done
  ls -l "$GO_BIN"
}

# ncpu: this machine's CPUs. Worker counts above it are dropped.
worker_counts() {
  local ncpu=$1 w out=()
  IFS=, read -ra ws <<<"${WORKERS:-1,2,4,8,16}"
  for w in "${ws[@]}"; do ((w >= 1 && w <= ncpu)) && out+=("$w"); done
  local IFS=,
  echo "${out[*]}"
}

# http_row NAME WORKERS NCPU PORT SERVER-COMMAND...: one throughput row.
http_row() {
  local name=$1 w=$2 ncpu=$3 port=$4
  shift 4
  local server_cpus="0-$((w - 1))" load_cpus shared=false
  if ((w < ncpu)); then
    load_cpus="$w-$((ncpu - 1))"
  else
    load_cpus="0-$((ncpu - 1))" shared=true
  fi
  local load_threads=$((ncpu - w))
  ((load_threads < 2)) && load_threads=2
  taskset -c "$server_cpus" "$@" >"$OUT/http-$name-$w.log" 2>&1 &
  local pid=$!
  local i
  for ((i = 0; i < 100; i++)); do
    (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  local line
  line=$(taskset -c "$load_cpus" "$BUILD/bench/weft-http-load" --addr "127.0.0.1:$port" \
    --connections "${HTTP_CONNECTIONS:-256}" --threads "$load_threads" \
    --seconds "${HTTP_SECONDS:-10}" --warmup 1)
  kill -TERM "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  echo "{\"server\": \"$name\", \"workers\": $w, \"load_shares_cores\": $shared, \"load\": ${line:-null}}" \
    >>"$OUT/http.jsonl"
}

run() {
  OUT=${OUT:-/tmp/weft-scaling}
  mkdir -p "$OUT"
  rm -f "$OUT/http.jsonl"
  local ncpu
  ncpu=$(nproc)
  local workers
  workers=$(worker_counts "$ncpu")
  { echo "cpus $ncpu"; uname -r; g++ --version | head -1; echo "workers $workers"; } >"$OUT/machine.txt"
  local peer
  for peer in runtimebench wakeup servers; do
    [[ -x $GO_BIN/go-$peer ]] || {
      echo "scaling.sh run: no $GO_BIN/go-$peer (run 'bench/scaling.sh prepare' where Go is)" >&2
      exit 1
    }
  done
  echo "building weft (release) in $BUILD ..."
  { [[ -f $BUILD/build.ninja ]] || meson setup "$BUILD" -Dbuildtype=release -Dwerror=false -Dtests=disabled
    ninja -C "$BUILD"; } >"$OUT/build.log" 2>&1 || {
    echo "build failed"
    tail -30 "$OUT/build.log"
    exit 1
  }

  echo "runtime rows at $workers workers ..."
  python3 bench/compare.py --weft-bench "$BUILD/bench/weft-bench" --go-dir bench/peers/go \
    --go-prebuilt "$GO_BIN" --workers "$workers" --reps "${REPS:-3}" \
    --filter '^BM_(ChannelPingPong|PingPongPairs|SpawnJoin|MutexContended|ContextCancelFanout)/' \
    --out "$OUT/runtime.json" >"$OUT/runtime.txt" 2>&1 || echo "compare.py failed: see $OUT/runtime.txt"

  local w
  IFS=, read -ra ws <<<"$workers"
  for w in "${ws[@]}"; do
    echo "wake-ups and HTTP at $w workers ..."
    "$BUILD/bench/weft-wakeup" --workers "$w" --backends epoll --scenarios cancel-read,fanout-1000 \
      --vs-go --go-peer "$GO_BIN/go-wakeup" --json --svg '' >"$OUT/wakeup-$w.json" 2>"$OUT/wakeup-$w.log"
    http_row weft "$w" "$ncpu" 18080 env WEFT_PROCS="$w" "$BUILD/examples/weft-http-hello" 127.0.0.1:18080
    http_row go "$w" "$ncpu" 18081 "$GO_BIN/go-servers" -mode http -addr 127.0.0.1:18081 -procs "$w"
  done
  python3 bench/scaling_report.py "$OUT"
}

case "${1:-}" in
  prepare) prepare ;;
  run) run ;;
  *)
    sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
