#!/usr/bin/env python3
"""Resident memory a server spends per idle connection (issue 19).

    idle_rss.py --server NAME=CMD [--server ...] [--connections N] [--runs R]
                [--exchange] [--idle-for SECONDS]

Each server is started as bench/load.py starts it (a free port on 127.0.0.1,
"{addr}" replaced, the "listening on" line awaited). Then N connections are
opened, which the server accepts and parks a reader on; with --exchange each
also makes one 64-byte echo round trip first, so that every reader has read
into its buffer and parked again, as on a server whose clients went quiet.
The server's VmRSS before the connections and once they have been idle for
--idle-for seconds (3: a server's idle connections are idle for seconds to
minutes, and weft gives an idle connection's stack back after 1 s) and its
RSS has been steady for 0.5 s gives the bytes per idle connection. Servers and
runs are interleaved. Prints a table, or with --json one object per server:
{"server", "connections", "exchange", "runs", "bytes_per_conn_median",
"bytes_per_conn_runs"}.

The client side is plain sockets in this process; the soft limit on open files
is raised to the hard limit for it and the servers, which inherit it.
"""

import argparse
import json
import os
import resource
import selectors
import socket
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402  (Server, start, RunError)

MESSAGE = b"x" * 64


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise load.RunError("no VmRSS in /proc/PID/status")


def settled_rss(pid, timeout=10.0):
    """VmRSS once it has not changed for 0.5 s (or after timeout)."""
    last, since, give_up = rss_bytes(pid), time.monotonic(), time.monotonic() + timeout
    while time.monotonic() < give_up:
        time.sleep(0.1)
        now = rss_bytes(pid)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.5:
            break
    return last


def open_idle(addr, n, exchange):
    host, port = addr.rsplit(":", 1)
    conns = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect((host, int(port)))
        except OSError as e:
            s.close()
            for c in conns:
                c.close()
            raise load.RunError(f"connection {i + 1} of {n}: {e}")
        conns.append(s)
    if not exchange:
        return conns
    # One echo round trip on each, all in flight at once.
    sel = selectors.DefaultSelector()
    for s in conns:
        s.setblocking(False)
        s.sendall(MESSAGE)
        sel.register(s, selectors.EVENT_READ, bytearray())
    pending, deadline = len(conns), time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(1.0):
            chunk = key.fileobj.recv(4096)
            if not chunk:
                raise load.RunError("the server closed an idle connection")
            key.data.extend(chunk)
            if len(key.data) >= len(MESSAGE):
                sel.unregister(key.fileobj)
                pending -= 1
    sel.close()
    if pending:
        raise load.RunError(f"{pending} of {n} echo round trips unanswered after 30 s")
    return conns


def measure(server, n, exchange, idle_for):
    run, addr = load.start(server)
    try:
        time.sleep(0.3)
        before = settled_rss(run.proc.pid)
        conns = open_idle(addr, n, exchange)
        time.sleep(idle_for)
        after = settled_rss(run.proc.pid)
        for c in conns:
            c.close()
    finally:
        problem = run.stop()
    if problem:
        raise load.RunError(problem)
    return (after - before) / n


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", action="append", required=True, metavar="NAME=CMD")
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--exchange", action="store_true",
                   help="one 64-byte echo round trip per connection before it idles")
    p.add_argument("--idle-for", type=float, default=3.0, metavar="SECONDS",
                   help="how long the connections stay idle before RSS is read (default 3)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Each side holds one descriptor per connection, in its own process.
    if hard != resource.RLIM_INFINITY and hard < args.connections + 256:
        p.error(f"the hard limit on open files ({hard}) is below --connections + 256")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    servers = [load.Server(s) for s in args.server]
    per = {s.name: [] for s in servers}
    failed = False
    for r in range(args.runs):
        for s in servers:
            try:
                b = measure(s, args.connections, args.exchange, args.idle_for)
                per[s.name].append(b)
                print(f"  {s.name:<12} run {r + 1}/{args.runs}: {b:,.0f} B per idle connection",
                      file=sys.stderr if args.json else sys.stdout, flush=True)
            except load.RunError as e:
                failed = True
                print(f"FAILED {s.name}: {e}", file=sys.stderr)
    for s in servers:
        runs = per[s.name]
        row = {"server": s.name, "connections": args.connections, "exchange": args.exchange,
               "idle_for_s": args.idle_for, "runs": len(runs),
               "bytes_per_conn_median": round(statistics.median(runs)) if runs else None,
               "bytes_per_conn_runs": [round(b) for b in runs]}
        if args.json:
            print(json.dumps(row))
        elif runs:
            print(f"{s.name:<12} {row['bytes_per_conn_median']:>8,} B per idle connection "
                  f"(runs: {', '.join(f'{b:,}' for b in row['bytes_per_conn_runs'])})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
