#!/usr/bin/env python3
"""Memory given back after load: an echo server's RSS before, at the peak of
and after bursts of connections (issue 12).

    burst_rss.py --server [NAME=]CMD ... [--connections 10000] [--bursts 3]
                 [--settle 8]

Each server is started as bench/load.py starts them. A burst opens
--connections connections, sends 16 KiB on each and reads it back (so every
connection's handler has touched its buffer), holds them all, then closes
them and waits --settle seconds. Printed per server: RSS idle before the
first burst, at each peak, and after each settle, in MB, and after/idle.
Target (weft): within 1.2x of idle after every burst, and no creep.
"""

import argparse
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import RunError, Server, start  # noqa: E402


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def burst(addr, n):
    host, port = addr.rsplit(":", 1)
    payload = b"x" * 16384
    conns = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        s.sendall(payload)
        conns.append(s)
    for s in conns:
        got = 0
        while got < len(payload):
            chunk = s.recv(65536)
            if not chunk:
                raise RunError("the server closed a connection mid-burst")
            got += len(chunk)
    return conns


def main(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", action="append", required=True, metavar="[NAME=]CMD")
    p.add_argument("--connections", type=int, default=10000)
    p.add_argument("--bursts", type=int, default=3)
    p.add_argument("--settle", type=float, default=8.0)
    args = p.parse_args(argv)
    for spec in args.server:
        server = Server(spec)
        try:
            run, addr = start(server)
        except RunError as e:
            print(f"{server.name}: FAILED: {e}", flush=True)
            continue
        try:
            time.sleep(1)
            idle = rss_mb(run.proc.pid)
            peaks, afters = [], []
            for _ in range(args.bursts):
                conns = burst(addr, args.connections)
                peaks.append(rss_mb(run.proc.pid))
                for s in conns:
                    s.close()
                time.sleep(args.settle)
                afters.append(rss_mb(run.proc.pid))
            print(f"{server.name:<8} idle {idle:6.1f} MB; peaks "
                  + ", ".join(f"{x:.1f}" for x in peaks) + " MB; after "
                  + ", ".join(f"{x:.1f}" for x in afters) + " MB; after/idle "
                  + ", ".join(f"{x / idle:.2f}x" for x in afters), flush=True)
        except (RunError, OSError) as e:
            print(f"{server.name}: FAILED: {e}", flush=True)
            run.kill()
            continue
        problem = run.stop()
        if problem:
            print(f"{server.name}: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
