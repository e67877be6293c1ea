#!/usr/bin/env python3
"""Fairness under streams: one small round trip's latency beside connections
that stream to the same echo server flat out (issue 12).

    fairness.py --client PATH/weft-fairness-client --server [NAME=]CMD ...
                [--streams 4] [--seconds 5] [--runs 3] [--json] [--json-out FILE]

Servers are started as bench/load.py starts them (a free port on 127.0.0.1,
"{addr}" in CMD, the "listening on" line, SIGTERM and a clean exit). Every
run starts a fresh server twice, once with no streams and once with
--streams of them, servers and stream counts interleaved so that a change in
the machine's load hits all alike. The probe is weft-fairness-client
(bench/fairness_client.cc): 64-byte round trips 1 ms apart.

Reported per server: the probe's p50 and p99 alone and beside the streams
(medians over the runs, with their spread), the streams' echoed MB/s, and
p99 beside streams / p99 alone, whose target is 3x or less.
"""

import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import RunError, Server, run_client, start  # noqa: E402


def one_run(args, server, streams):
    try:
        run, addr = start(server)
    except RunError as e:
        raise RunError(f"{server.name} with {streams} streams: {e}")
    try:
        argv = [args.client, "--addr", addr, "--streams", str(streams),
                "--seconds", str(args.seconds), "--warmup", str(args.warmup)]
        out, err, rc = run_client(argv, args.seconds + args.warmup + 60)
        if rc != 0:
            raise RunError(f"client failed (exit {rc}): {(err or out).strip()[-400:]}")
        result = json.loads(out.strip().splitlines()[-1])
    except (RunError, ValueError, IndexError) as e:
        run.kill()
        raise RunError(f"{server.name} with {streams} streams: {e}")
    problem = run.stop()
    if problem:
        raise RunError(f"{server.name} with {streams} streams: {problem}")
    return result


def spread(values):
    return f"{min(values):,.0f}..{max(values):,.0f}"


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--client", required=True, help="path to weft-fairness-client")
    p.add_argument("--server", action="append", required=True, metavar="[NAME=]CMD")
    p.add_argument("--streams", type=int, default=4)
    p.add_argument("--seconds", type=float, default=5, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1, help="unmeasured seconds first")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true", help="one JSON object per server and line")
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON lines to FILE")
    args = p.parse_args(argv)
    servers = [Server(s) for s in args.server]
    log = sys.stderr if args.json else sys.stdout
    results = {(s.name, n): [] for s in servers for n in (0, args.streams)}
    failed = False
    for r in range(args.runs):
        for s in servers:
            for n in (0, args.streams):
                try:
                    res = one_run(args, s, n)
                except RunError as e:
                    print(f"run {r + 1}: FAILED: {e}", file=log, flush=True)
                    failed = True
                    continue
                results[(s.name, n)].append(res)
                print(f"run {r + 1}: {s.name:<14} streams {n}: p50 {res['p50_us']:,.0f} us, "
                      f"p99 {res['p99_us']:,.0f} us, n {res['n']}, "
                      f"streams {res['stream_mb_s']:,.0f} MB/s", file=log, flush=True)

    rows = []
    for s in servers:
        alone, beside = results[(s.name, 0)], results[(s.name, args.streams)]
        if not alone or not beside:
            continue
        row = {"server": s.name, "streams": args.streams, "runs": len(beside)}
        for key in ("p50_us", "p99_us"):
            row[f"alone_{key}"] = statistics.median(x[key] for x in alone)
            row[f"beside_{key}"] = statistics.median(x[key] for x in beside)
            row[f"alone_{key}_runs"] = [x[key] for x in alone]
            row[f"beside_{key}_runs"] = [x[key] for x in beside]
        row["stream_mb_s"] = statistics.median(x["stream_mb_s"] for x in beside)
        row["n"] = min(x["n"] for x in alone + beside)
        row["p99_ratio"] = row["beside_p99_us"] / max(row["alone_p99_us"], 1e-9)
        rows.append(row)

    if args.json_out:
        with open(args.json_out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        print(f"\nThe probe's round trip (us), alone and beside {args.streams} streams; "
              f"medians of {args.runs} runs, spread in brackets; lower is better.")
        print(f"{'server':<14} {'p50 alone':>18} {'p50 beside':>22} {'p99 alone':>18} "
              f"{'p99 beside':>24} {'p99 x':>7} {'streams MB/s':>13}")
        for row in rows:
            print(f"{row['server']:<14} "
                  f"{row['alone_p50_us']:>7,.0f} [{spread(row['alone_p50_us_runs']):>8}] "
                  f"{row['beside_p50_us']:>9,.0f} [{spread(row['beside_p50_us_runs']):>10}] "
                  f"{row['alone_p99_us']:>7,.0f} [{spread(row['alone_p99_us_runs']):>8}] "
                  f"{row['beside_p99_us']:>11,.0f} [{spread(row['beside_p99_us_runs']):>10}] "
                  f"{row['p99_ratio']:>6.1f}x {row['stream_mb_s']:>13,.0f}")
        print("p99 x: p99 beside the streams / p99 alone (target: 3x or less). "
              f"n per run: at least {min((r['n'] for r in rows), default=0)} round trips.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
