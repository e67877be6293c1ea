#!/usr/bin/env python3
"""Prints one workload's rows of `./weft bench` (bench/load.py compare --json
output) with issue 19's targets checked:

    throughput_report.py RESULTS.json MODE CLIENT

Servers named weft, go, epoll (the C loop, 1 thread) and epoll2 (2 threads).
Targets: weft's p99 at most 1.5x epoll2's and at most Go's; its throughput at
least 0.95x epoll's (http and echo) and at least 1.3x Go's."""

import json
import sys


def main(path, mode, client):
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    by = {r["server"]: r for r in rows}
    runs = max((r["runs"] for r in rows), default=0)
    print(f"{mode} under {client} -c50, medians of {runs} interleaved runs:")
    for r in rows:
        if r["rps_median"] is None:
            print(f"  {r['server']:<7} no successful run")
            continue
        p99 = "-" if r["p99_ms_median"] is None else f"{r['p99_ms_median']:.2f} ms"
        print(f"  {r['server']:<7} {r['rps_median']:>10,.0f} req/s  spread "
              f"{r['rps_min']:,.0f}..{r['rps_max']:,.0f}  p99 {p99:>9}  errors {r['errors']}")
    weft = by.get("weft")
    if not weft or weft["rps_median"] is None:
        return 0

    def check(label, ok):
        print(f"  {'ok  ' if ok else 'MISS'} {label}")

    def rps(name):
        r = by.get(name)
        return r["rps_median"] if r else None

    def p99(name):
        r = by.get(name)
        return r["p99_ms_median"] if r else None

    if rps("go"):
        ratio = weft["rps_median"] / rps("go")
        check(f"throughput {ratio:.2f}x Go's (target >= 1.3x)", ratio >= 1.3)
    if rps("epoll") and mode in ("http", "echo"):
        ratio = weft["rps_median"] / rps("epoll")
        check(f"throughput {ratio:.2f}x the C loop's, 1 thread (target >= 0.95x)", ratio >= 0.95)
    if p99("weft") is not None and p99("epoll2"):
        ratio = p99("weft") / p99("epoll2")
        check(f"p99 {ratio:.2f}x the C loop's, 2 threads (target <= 1.5x)", ratio <= 1.5)
    if p99("weft") is not None and p99("go"):
        check(f"p99 {p99('weft'):.2f} ms, Go's {p99('go'):.2f} ms (target: never worse)",
              p99("weft") <= p99("go"))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
