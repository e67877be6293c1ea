#!/usr/bin/env python3
"""Runs weft's runtime benchmarks and their Go peers on the same machine, one
after the other, and prints the medians side by side with the ratio (Go time /
weft time: above 1 means weft is faster). Results also go to a JSON file.

Builds nothing of weft's; the Go peer is built with `go build` next to the
weft-bench binary."""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

# weft benchmark -> (Go name, which number to read from Google Benchmark's JSON)
METRICS = {
    "BM_ChannelPingPong": ("ChannelPingPong", "real_time"),
    "BM_PingPongPairs": ("PingPongPairs", "ns_per_trip"),
    "BM_Yield": ("Yield", "real_time"),
    "BM_YieldAlone": ("YieldAlone", "real_time"),
    "BM_SpawnJoin": ("SpawnJoin", "ns_per_fiber"),
    "BM_MutexContended": ("MutexContended", "ns_per_lock"),
    "BM_SleepOvershoot": ("SleepOvershoot", "overshoot_us"),
    "BM_TimerfdFloor": ("TimerfdFloor", "overshoot_us"),
    "BM_TimerAddStop": ("TimerAddStop", "ns_per_timer"),
    "BM_ConnDeadlinesPerRequest": ("ConnDeadlinesPerRequest", "real_time"),
    "BM_TimerBurstLateness": ("TimerBurstP50", "p50_late_us"),
    "BM_FdWakeRoundTrip": ("FdWakeRoundTrip", "real_time"),
    "BM_ContextCreateCancel": ("ContextCreateCancel", "real_time"),
    "BM_ContextValue": ("ContextValue", "real_time"),
    "BM_ContextCancelFanout": ("ContextCancelFanout", "real_time"),
    "BM_ContextCustomChild": ("ContextCustomChild", "ns_per_child"),
}
# Counters not in ns, scaled to ns.
SCALE = {"overshoot_us": 1e3, "p50_late_us": 1e3}
# weft-only variants: FdWakeRoundTrip on io_uring or kqueue has no Go
# counterpart here (Go's netpoller on Linux is epoll), so each gets its own row.
FD_BACKENDS = {"0": "", "1": "/io_uring", "2": "/kqueue"}
# Go peer programs (folders of bench/peers/go) that print benchmark rows.
GO_PEERS = ["runtimebench"]
TIME_UNIT_NS = {"ns": 1.0, "us": 1e3, "ms": 1e6, "s": 1e9}

# The targets: Go time / weft time at least this much.
SPEED_TARGETS = {"ChannelPingPong": 3.0, "SpawnJoin": 3.0, "ContextCreateCancel": 1.0,
                 "ContextValue": 1.0, "ContextCancelFanout": 2.0,
                 "SleepOvershoot/50us": 10.0, "SleepOvershoot/200us": 10.0}
# Issue 6: a short sleep's median overshoot within this factor of the
# machine's own floor (a raw timerfd wait with 1 ns slack), same run.
FLOOR_TARGET = 1.25
RSS_TARGET_MIB = 1024.0
IDLE_TARGET_PERCENT = 1.0


class MachineLoad:
    """How much CPU the rest of the machine used while we ran: all busy time
    from /proc/stat minus what our child processes used. On two cores, a build
    next to the benchmarks moves their numbers by whole factors."""

    def __init__(self):
        self.t0 = self._busy_idle()
        self.c0 = self._children_cpu()

    @staticmethod
    def _busy_idle():
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:9]]
        except OSError:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        idle = v[3] + v[4]
        return (sum(v) - idle) / hz, sum(v) / hz

    @staticmethod
    def _children_cpu():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def others_percent(self):
        """Share of all CPUs' time (0-100) that other processes used."""
        t1 = self._busy_idle()
        if not self.t0 or not t1 or t1[1] <= self.t0[1]:
            return None
        ours = self._children_cpu() - self.c0
        others = max(0.0, (t1[0] - self.t0[0]) - ours)
        return 100.0 * others / (t1[1] - self.t0[1])


def run_weft(binary, reps, tmp, bench_filter, workers):
    # The file reporter keeps every repetition (for the spread) while the
    # console gets only the aggregates.
    out_file = os.path.join(tmp, "weft.json")
    cmd = [binary, f"--benchmark_out={out_file}", "--benchmark_out_format=json",
           f"--benchmark_repetitions={reps}", "--benchmark_display_aggregates_only=true"]
    # weft-bench holds other suites too (the poller's); run only those with a
    # Go peer unless asked otherwise.
    cmd.append(f"--benchmark_filter={bench_filter or '^(' + '|'.join(METRICS) + ')/'}")
    env = dict(os.environ, WEFT_BENCH_WORKERS=workers) if workers else None
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"compare.py: {binary} exited with {proc.returncode}")
    with open(out_file) as f:
        data = json.load(f)
    samples = {}
    for b in data["benchmarks"]:
        if b.get("run_type") != "iteration" or b.get("error_occurred"):
            continue  # a skipped one (a backend not built in) has no time
        base, *params = b["run_name"].split("/")
        args = dict(p.split(":", 1) for p in params if ":" in p)
        if base not in METRICS:
            continue
        name, field = METRICS[base]
        if base in ("BM_SleepOvershoot", "BM_TimerfdFloor"):
            name = f"{name}/{args['us']}us"
        if base == "BM_FdWakeRoundTrip":
            name += FD_BACKENDS[args["backend"]]
        if base == "BM_ConnDeadlinesPerRequest":
            name = f"{name}/{args['conns']}"
            # Counted from weft::coarse_now(): weft-only (Go has no such clock).
            if args.get("coarse") == "1":
                name += "/coarse"
        if base == "BM_ContextValue":
            name = f"ContextValue/{args['depth']}"
        if base == "BM_ContextCancelFanout":
            name = f"ContextCancelFanout/{args['children']}"
        if base == "BM_ContextCustomChild":
            kind = "wraps" if args["wraps"] == "1" else "own-done"
            name = f"ContextCustomChild/{kind}"
            # A count beside the time, printed in a section of its own.
            fibers = (f"ContextCustomChildFibers/{kind}", int(args.get("workers", 0)))
            samples.setdefault(fibers, []).append(b["fibers_alive"])
        value = b[field] * SCALE.get(field, 1.0)
        if field == "real_time":
            value *= TIME_UNIT_NS[b["time_unit"]]
        samples.setdefault((name, int(args.get("workers", 0))), []).append(value)
    return {k: (statistics.median(v), min(v), max(v)) for k, v in samples.items()}, data.get(
        "context", {})


def build_go(go_dir, out_dir):
    go = shutil.which("go")
    if not go:
        return None, None
    version = subprocess.run([go, "version"], capture_output=True, text=True).stdout.strip()
    # Each peer is its own module (Go 1.19 has no `go -C`): build in its folder.
    exes = []
    for peer in GO_PEERS:
        exe = os.path.join(out_dir, "go-" + peer)
        subprocess.run([go, "build", "-o", exe, "."], cwd=os.path.join(go_dir, peer), check=True)
        exes.append(exe)
    return exes, version


def prebuilt_go(folder):
    """Peers built elsewhere (a machine without Go): go-<peer> in folder."""
    exes = [os.path.join(folder, "go-" + peer) for peer in GO_PEERS]
    missing = [e for e in exes if not os.access(e, os.X_OK)]
    if missing:
        raise SystemExit(f"compare.py: no prebuilt Go peer at {', '.join(missing)}")
    return exes, f"prebuilt in {folder}"


def run_go(exes, reps, bench_filter, workers):
    # One process per repetition (each warms up once before its measured run):
    # Go's scheduler settles into a fast or a slow mode for a whole process at
    # times (spawn+join with 2 Ps: ~250 or ~900 ns), so repetitions within one
    # process would not be independent samples.
    samples = {}
    for _, exe in ((r, e) for r in range(reps) for e in exes):
        cmd = [exe, "-reps=1"]
        if workers:
            cmd.append(f"-workers={workers}")
        if bench_filter:
            # weft's names end in "/workers:N", some of Go's in nothing.
            cmd.append(f"-filter={bench_filter.replace('BM_', '').removesuffix('/')}")
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        for r in (json.loads(line) for line in out.splitlines() if line.startswith("{")):
            samples.setdefault((r["name"], r["workers"]), []).append(r["ns_per_op"])
    return {k: (statistics.median(v), min(v), max(v)) for k, v in samples.items()}


def json_lines(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {r["name"]: r for r in (json.loads(l) for l in out.splitlines() if l.startswith("{"))}


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.1f} us"
    if ns >= 100:
        return f"{ns:.0f} ns"
    return f"{ns:.1f} ns"


def fmt_ratio(r):
    if r is None:
        return "-"
    if abs(r - 1) < 0.005:
        return "same"
    return f"{r:.2f}x faster" if r > 1 else f"{1 / r:.2f}x slower"


def verdict(ok):
    return "met" if ok else "MISSED"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weft-bench", required=True, help="path to the weft-bench binary")
    ap.add_argument("--footprint", help="path to the weft-footprint binary (RSS and idle CPU)")
    ap.add_argument("--go-dir", required=True, help="the Go peers' module (bench/peers/go)")
    ap.add_argument("--out", default="bench/results/runtime.json", help="JSON results file")
    ap.add_argument("--reps", type=int, default=5, help="repetitions; medians are reported")
    ap.add_argument("--idle-seconds", type=float, default=5.0, help="idle-CPU window")
    ap.add_argument("--parked", type=int, default=100_000, help="fibers parked for the RSS figure")
    ap.add_argument("--filter", default="", help="--benchmark_filter for weft-bench")
    ap.add_argument("--no-go", action="store_true", help="weft's numbers alone")
    ap.add_argument("--workers", default="",
                    help="worker counts, e.g. 1,2,4,8,16 (default 1,2): weft's workers, Go's "
                         "GOMAXPROCS")
    ap.add_argument("--go-prebuilt", metavar="DIR",
                    help="run the Go peers built in DIR (go-runtimebench) instead of building "
                         "them: for a machine without Go")
    args = ap.parse_args()

    load = MachineLoad()
    print(f"weft: {args.weft_bench}, {args.reps} repetitions each ...", flush=True)
    tmp = tempfile.mkdtemp(prefix="weft-bench-")
    try:
        weft, context = run_weft(args.weft_bench, args.reps, tmp, args.filter, args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    go_exe, go_version, go = None, None, {}
    if not args.no_go:
        if args.go_prebuilt:
            go_exe, go_version = prebuilt_go(args.go_prebuilt)
        else:
            go_exe, go_version = build_go(os.path.abspath(args.go_dir),
                                          os.path.dirname(os.path.abspath(args.weft_bench)))
        if go_exe:
            print(f"go: {go_version}, {args.reps} runs of the peer, one process each ...", flush=True)
            go = run_go(go_exe, args.reps, args.filter, args.workers)
        else:
            print("go: not found (apt-get install golang-go); weft's numbers alone", flush=True)

    rows = []
    cols = (f"{'benchmark':<22}{'workers':>8}{'weft median':>13}{'go median':>12}"
            f"{'go/weft':>15}  spread min..max: weft | go")
    print()
    print(cols)
    print("-" * (len(cols) + 12))
    order = list(dict.fromkeys(m[0] for m in METRICS.values()))
    counts = {k: v for k, v in weft.items() if k[0].startswith("ContextCustomChildFibers/")}
    timed = {k: v for k, v in weft.items() if k not in counts}
    for (name, workers), (med, lo, hi) in sorted(
            timed.items(), key=lambda kv: (order.index(kv[0][0].split("/")[0]), kv[0])):
        g = go.get((name, workers))
        ratio = g[0] / med if g and med > 0 else None
        target = SPEED_TARGETS.get(name, SPEED_TARGETS.get(name.split("/")[0]))
        rows.append({"benchmark": name, "workers": workers, "weft_ns": med, "weft_min_ns": lo,
                     "weft_max_ns": hi, "go_ns": g[0] if g else None,
                     "go_min_ns": g[1] if g else None, "go_max_ns": g[2] if g else None,
                     "go_over_weft": ratio, "target_go_over_weft": target})
        spread = f"{fmt_ns(lo)}..{fmt_ns(hi)}"
        if g:
            spread += f" | {fmt_ns(g[1])}..{fmt_ns(g[2])}"
        note = ""
        if target and ratio is not None:
            note = f"  [target {target:g}x: {verdict(ratio >= target)}]"
        print(f"{name:<22}{workers:>8}{fmt_ns(med):>13}{fmt_ns(g[0]) if g else '-':>12}"
              f"{fmt_ratio(ratio):>15}  {spread}{note}")

    if counts:
        print()
        print("fibers alive once 10,000 children of a user's context exist (weft | go):")
        for (name, workers), (med, _, _) in sorted(counts.items()):
            g = go.get((name, workers))
            print(f"  {name.split('/', 1)[1]:<10} workers {workers}: {med:,.0f} | "
                  f"{f'{g[0]:,.0f}' if g else '-'}")
            rows.append({"benchmark": name, "workers": workers, "weft_count": med,
                         "go_count": g[0] if g else None})

    floors = []
    for (name, workers), (med, _, _) in sorted(weft.items()):
        if not name.startswith("SleepOvershoot/"):
            continue
        floor = weft.get((name.replace("SleepOvershoot", "TimerfdFloor"), 0))
        if not floor or floor[0] <= 0:
            continue
        ratio = med / floor[0]
        floors.append({"benchmark": name, "workers": workers, "weft_ns": med,
                       "floor_ns": floor[0], "weft_over_floor": ratio})
        note = ""
        if name in ("SleepOvershoot/50us", "SleepOvershoot/200us"):
            note = f"  [target <= {FLOOR_TARGET:g}x: {verdict(ratio <= FLOOR_TARGET)}]"
        print(f"{name:<22}{workers:>8}{fmt_ns(med):>13}  vs timerfd floor {fmt_ns(floor[0])}: "
              f"{ratio:.2f}x the floor{note}")

    result = {"weft_context": context, "go_version": go_version, "reps": args.reps, "rows": rows,
              "overshoot_vs_floor": floors}
    if args.footprint:
        print()
        wf = json_lines([args.footprint, str(args.parked), str(args.idle_seconds)])
        gf = {}
        if go_exe:
            gf = json_lines([go_exe[0], "-footprint", f"-parked={args.parked}",
                             f"-idle={args.idle_seconds}s"])
        result["footprint"] = {"weft": wf, "go": gf}
        r, i = wf.get("rss_parked_fibers", {}), wf.get("idle_cpu", {})
        gr, gi = gf.get("rss_parked_fibers"), gf.get("idle_cpu")
        line = (f"RSS with {args.parked} parked fibers: weft {r['mib']:.0f} MiB "
                f"({r['kib_per_fiber']:.1f} KiB each)")
        if gr:
            line += f", go {gr['mib']:.0f} MiB ({gr['kib_per_fiber']:.1f} KiB each)"
        if args.parked == 100_000:
            line += f"  [target < {RSS_TARGET_MIB:.0f} MiB: {verdict(r['mib'] < RSS_TARGET_MIB)}]"
        print(line)
        line = (f"idle runtime, 2 workers, {i['seconds']:.1f} s: weft "
                f"{i['percent_of_a_core']:.3f}% of a core")
        if gi:
            line += f", go {gi['percent_of_a_core']:.3f}%"
        line += (f"  [target < {IDLE_TARGET_PERCENT:g}%: "
                 f"{verdict(i['percent_of_a_core'] < IDLE_TARGET_PERCENT)}]")
        print(line)

    others = load.others_percent()
    result["other_processes_cpu_percent"] = others
    if others is not None:
        print(f"\nother processes used {others:.1f}% of the CPUs during this run", end="")
        print(": the numbers above are skewed, run again on an idle machine" if others > 5 else "")

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
