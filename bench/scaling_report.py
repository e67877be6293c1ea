#!/usr/bin/env python3
"""The scaling report from what bench/scaling.sh measured in OUT: report.md
(one table per measurement: weft and Go against workers, with Go/weft, and
issue 18's targets checked where the rows allow) and scaling.svg (per-op cost
or throughput against workers, log-log, weft beside Go). Standard library
only.

usage: scaling_report.py OUT"""

import json
import math
import os
import sys

RUNTIME_ROWS = {
    "ChannelPingPong": "ping-pong, one pair (ns per round trip)",
    "PingPongPairs": "ping-pong, one pair per worker (ns per round trip of a pair)",
    "SpawnJoin": "spawn+join (ns per fiber)",
    "MutexContended": "contended Mutex, 4 fibers per worker (ns per lock/unlock)",
    "ContextCancelFanout/10000": "cancel fan-out to 10,000 waiters (ns until the last runs)",
}


def load(out):
    series = {}  # title -> {"unit": ..., "lower_is_better": bool, "weft": {w: v}, "go": {w: v}}

    def put(title, unit, lower, runtime, workers, value):
        s = series.setdefault(title, {"unit": unit, "lower": lower, "weft": {}, "go": {},
                                      "shared": set()})
        if value is not None:
            s[runtime][workers] = value

    path = os.path.join(out, "runtime.json")
    if os.path.exists(path):
        with open(path) as f:
            for r in json.load(f)["rows"]:
                title = RUNTIME_ROWS.get(r["benchmark"])
                if title:
                    put(title, "ns", True, "weft", r["workers"], r.get("weft_ns"))
                    put(title, "ns", True, "go", r["workers"], r.get("go_ns"))
    for name in sorted(os.listdir(out)):
        if not (name.startswith("wakeup-") and name.endswith(".json")):
            continue
        workers = int(name[len("wakeup-"):-len(".json")])
        try:
            with open(os.path.join(out, name)) as f:
                rows = json.load(f)
        except (OSError, ValueError):
            continue
        for r in rows:
            title = f"{r['scenario']} wake-up, p50 (us)"
            put(title, "us", True, r["runtime"], workers, r.get("p50_us"))
    path = os.path.join(out, "http.jsonl")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                r = json.loads(line)
                if not r.get("load"):
                    continue
                title = "HTTP hello throughput (req/s; higher is better)"
                put(title, "req/s", False, r["server"], r["workers"], r["load"]["req_per_s"])
                put("HTTP hello p99 (us)", "us", True, r["server"], r["workers"], r["load"]["p99_us"])
                if r.get("load_shares_cores"):
                    series[title]["shared"].add(r["workers"])
                    series["HTTP hello p99 (us)"]["shared"].add(r["workers"])
    return series


def fmt(v, unit):
    if v is None:
        return "-"
    if unit == "req/s":
        return f"{v / 1000:.1f}k"
    return f"{v:.3g}" if v < 1000 else f"{v:,.0f}"


def ratio(s, w):
    a, b = s["weft"].get(w), s["go"].get(w)
    if not a or not b:
        return None
    return b / a if s["lower"] else a / b  # above 1: weft is better


def targets(series):
    """Issue 18's targets, where the rows hold what they need."""
    lines = []

    def by_prefix(prefix):
        return next((s for t, s in series.items() if t.startswith(prefix)), None)

    http = by_prefix("HTTP hello throughput")
    if http and http["weft"]:
        top = max(http["weft"])
        one = http["weft"].get(1)
        if one:
            lines.append(f"HTTP at {top} workers vs weft's own 1-worker figure: "
                         f"{http['weft'][top] / one:.1f}x (target 12x at 16)")
        r = ratio(http, top)
        if r:
            lines.append(f"HTTP at {top} workers vs Go: {r:.2f}x (target 1.3x)")
    spawn = by_prefix("spawn+join")
    if spawn and spawn["weft"]:
        top = max(spawn["weft"])
        if 2 in spawn["weft"]:
            lines.append(f"spawn+join at {top} workers vs at 2: "
                         f"{spawn['weft'][top] / spawn['weft'][2]:.2f}x the cost (target <= 1)")
        r = ratio(spawn, top)
        if r:
            lines.append(f"spawn+join at {top} workers vs Go: {r:.2f}x (target 2x)")
    mutex = by_prefix("contended Mutex")
    if mutex:
        worst = [ratio(mutex, w) for w in sorted(mutex["weft"]) if ratio(mutex, w)]
        if worst:
            lines.append(f"contended Mutex, worst Go/weft over the worker counts: {min(worst):.2f}x "
                         "(target >= 0.67x, within 1.5x of Go)")
    pairs = by_prefix("ping-pong, one pair per worker")
    if pairs and pairs["weft"]:
        v = pairs["weft"]
        lines.append(f"ping-pong pairs, per-pair round trip from {min(v)} to {max(v)} workers: "
                     f"{v[max(v)] / v[min(v)]:.2f}x (target <= 1.3x)")
    return lines


def markdown(series, machine):
    out = ["# weft scaling report", "", "```", machine.strip(), "```", ""]
    out.append("Go/weft above 1x: weft is better (faster, or more requests). "
               "Worker counts marked * ran the load generator on the server's cores "
               "(no core was left for it).")
    for title, s in series.items():
        workers = sorted(set(s["weft"]) | set(s["go"]))
        out += ["", f"## {title}", "", "| workers | weft | Go | Go/weft |", "| --- | --- | --- | --- |"]
        for w in workers:
            r = ratio(s, w)
            mark = "*" if w in s["shared"] else ""
            out.append(f"| {w}{mark} | {fmt(s['weft'].get(w), s['unit'])} | {fmt(s['go'].get(w), s['unit'])} "
                       f"| {f'{r:.2f}x' if r else '-'} |")
    lines = targets(series)
    if lines:
        out += ["", "## Issue 18's targets", ""] + [f"- {l}" for l in lines]
    return "\n".join(out) + "\n"


def svg(series):
    """One small log-log panel per series, weft and Go."""
    panels = [(t, s) for t, s in series.items() if s["weft"] or s["go"]]
    cols, pw, ph = 2, 420, 260
    rows = math.ceil(len(panels) / cols) if panels else 1
    width, height = cols * pw, rows * ph
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="11">',
             f'<rect width="{width}" height="{height}" fill="white"/>']
    colors = {"weft": "#1f77b4", "go": "#d62728"}
    for i, (title, s) in enumerate(panels):
        x0, y0 = (i % cols) * pw + 60, (i // cols) * ph + 30
        w, h = pw - 90, ph - 80
        workers = sorted(set(s["weft"]) | set(s["go"]))
        values = [v for r in ("weft", "go") for v in s[r].values() if v and v > 0]
        if not values:
            continue
        lo, hi = math.log10(min(values)) - 0.1, math.log10(max(values)) + 0.1
        wlo, whi = math.log2(min(workers)), math.log2(max(workers)) or 1
        if whi == wlo:
            whi = wlo + 1

        def px(wk):
            return x0 + (math.log2(wk) - wlo) / (whi - wlo) * w

        def py(v):
            return y0 + h - (math.log10(v) - lo) / (hi - lo) * h

        parts.append(f'<text x="{x0}" y="{y0 - 10}" font-weight="bold">{title}</text>')
        parts.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
        for wk in workers:
            parts.append(f'<text x="{px(wk):.1f}" y="{y0 + h + 14}" text-anchor="middle">{wk}</text>')
        parts.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 30}" text-anchor="middle">workers (log scale)</text>')
        for v in (min(values), max(values)):
            parts.append(f'<text x="{x0 - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{fmt(v, s["unit"])}</text>')
        parts.append(f'<text x="{x0 - 50}" y="{y0 + h / 2}" transform="rotate(-90 {x0 - 50} {y0 + h / 2})" '
                     f'text-anchor="middle">{s["unit"]} (log; {"lower" if s["lower"] else "higher"} is better)</text>')
        for k, (runtime, color) in enumerate(colors.items()):
            pts = [(px(wk), py(v)) for wk, v in sorted(s[runtime].items()) if v and v > 0]
            if pts:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
                parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
                parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>' for x, y in pts]
            parts.append(f'<text x="{x0 + w - 60}" y="{y0 + 14 + 14 * k}" fill="{color}">{runtime}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    series = load(out)
    machine = ""
    try:
        with open(os.path.join(out, "machine.txt")) as f:
            machine = f.read()
    except OSError:
        pass
    report = markdown(series, machine)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(report)
    with open(os.path.join(out, "scaling.svg"), "w") as f:
        f.write(svg(series))
    print(report)
    print(f"written: {out}/report.md, {out}/scaling.svg")


if __name__ == "__main__":
    main()
