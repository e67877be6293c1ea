#!/usr/bin/env python3
"""Runs weft's runtime benchmarks and their Go peers in one go, on the same
machine, and prints medians side by side with the ratio (Go time / weft time:
above 1 means weft is faster). Results also go to a JSON file."""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

# weft benchmark -> (Go name, which number to read, scale to ns)
METRICS = {
    "BM_ChannelPingPong": ("ChannelPingPong", "real_time", 1.0),
    "BM_Yield": ("Yield", "real_time", 1.0),
    "BM_SpawnJoin": ("SpawnJoin", "ns_per_op", 1.0),
    "BM_MutexContended": ("MutexContended", "ns_per_op", 1.0),
    "BM_SleepOvershoot": ("SleepOvershoot", "overshoot_us", 1000.0),
}


def run_weft(binary, reps, tmp):
    # The file reporter keeps every repetition (for the spread); the console
    # shows only the aggregates.
    out_file = os.path.join(tmp, "weft.json")
    subprocess.run(
        [binary, f"--benchmark_out={out_file}", "--benchmark_out_format=json",
         f"--benchmark_repetitions={reps}", "--benchmark_display_aggregates_only=true"],
        check=True, capture_output=True, text=True)
    with open(out_file) as f:
        data = json.load(f)
    samples = {}
    for b in data["benchmarks"]:
        if b.get("run_type") != "iteration":
            continue
        base, *params = b["run_name"].split("/")
        args = dict(p.split(":") for p in params if ":" in p)
        workers = int(args.get("workers", 0))
        go_name, field, scale = METRICS[base]
        if base == "BM_SleepOvershoot":
            go_name = f"SleepOvershoot/{args['us']}us"
        value = b[field] * scale
        if field == "real_time":
            value *= {"ns": 1, "us": 1e3, "ms": 1e6}[b["time_unit"]]
        samples.setdefault((go_name, workers), []).append(value)
    return {k: (statistics.median(v), min(v), max(v)) for k, v in samples.items()}


def build_go(go_dir, out_dir):
    go = shutil.which("go")
    if not go:
        return None
    exe = os.path.join(out_dir, "runtimebench")
    subprocess.run([go, "build", "-o", exe, "./runtimebench"], cwd=go_dir, check=True)
    return exe


def run_go(exe, reps):
    out = subprocess.run([exe, f"-reps={reps}"], check=True, capture_output=True, text=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return {(r["name"], r["workers"]): (r["ns_per_op"], r["min"], r["max"]) for r in rows}


def footprint_lines(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {r["name"]: r for r in (json.loads(l) for l in out.splitlines() if l.startswith("{"))}


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.1f} us"
    return f"{ns:.1f} ns"


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--weft-bench", required=True, help="path to the weft-bench binary")
    ap.add_argument("--footprint", help="path to the weft-footprint binary")
    ap.add_argument("--go-dir", required=True, help="bench/peers/go")
    ap.add_argument("--out", default="bench/results/runtime.json")
    ap.add_argument("--reps", type=int, default=5, help="repetitions (medians reported)")
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    args = ap.parse_args()

    print(f"weft: {args.weft_bench}, {args.reps} repetitions each ...", flush=True)
    tmp = tempfile.mkdtemp(prefix="weft-bench-")
    weft = run_weft(args.weft_bench, args.reps, tmp)
    go_exe = build_go(os.path.abspath(args.go_dir), tmp)
    go = {}
    if go_exe:
        print("go: " + subprocess.run(["go", "version"], capture_output=True, text=True).stdout.strip(),
              flush=True)
        go = run_go(go_exe, args.reps)
    else:
        print("go: not found (apt-get install golang-go); weft's numbers alone", flush=True)

    rows = []
    header = f"{'benchmark':<24}{'workers':>8}{'weft median':>14}{'go median':>14}{'go/weft':>10}   spread weft | go (min..max)"
    print()
    print(header)
    print("-" * len(header))
    for (name, workers), (med, lo, hi) in sorted(weft.items()):
        g = go.get((name, workers))
        ratio = g[0] / med if g and med > 0 else None
        rows.append({"benchmark": name, "workers": workers, "weft_ns": med, "weft_min_ns": lo,
                     "weft_max_ns": hi, "go_ns": g[0] if g else None,
                     "go_min_ns": g[1] if g else None, "go_max_ns": g[2] if g else None,
                     "go_over_weft": ratio})
        gtxt = fmt_ns(g[0]) if g else "-"
        rtxt = f"{ratio:.2f}x" if ratio else "-"
        spread = f"{fmt_ns(lo)}..{fmt_ns(hi)}"
        if g:
            spread += f" | {fmt_ns(g[1])}..{fmt_ns(g[2])}"
        print(f"{name:<24}{workers:>8}{fmt_ns(med):>14}{gtxt:>14}{rtxt:>10}   {spread}")

    result = {"rows": rows}
    if args.footprint:
        wf = footprint_lines([args.footprint, "100000", str(args.idle_seconds)])
        gf = footprint_lines([go_exe, "-footprint", f"-idle={args.idle_seconds}s"]) if go_exe else {}
        result["footprint"] = {"weft": wf, "go": gf}
        print()
        r, i = wf.get("rss_parked_fibers", {}), wf.get("idle_cpu", {})
        gr, gi = gf.get("rss_parked_fibers", {}), gf.get("idle_cpu", {})
        print(f"RSS with 100k parked fibers: weft {r.get('mib', 0):.0f} MiB"
              + (f", go {gr.get('mib', 0):.0f} MiB" if gr else ""))
        print(f"idle runtime, 2 workers, {args.idle_seconds:.0f} s: weft {i.get('percent_of_a_core', 0):.3f}% of a core"
              + (f", go {gi.get('percent_of_a_core', 0):.3f}%" if gi else ""))

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"\nwritten: {args.out}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
