#!/usr/bin/env python3
"""The example servers under real clients: weft-http-hello under wrk, alone
and behind weft-proxy, weft-resp-ping under redis-benchmark (plain and
pipelined), weft-echo under a small client here. Each server must answer every request with no error
reported and exit 0 on SIGTERM (bench/load.py checks both). Prints one line
per case and "real-clients: N passed, M failed"; exits 1 on any failure.

    tests/real_clients.py BUILD_DIR
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOAD = os.path.join(HERE, "..", "bench", "load.py")


def load_case(name, server, client, extra):
    cmd = [sys.executable, LOAD, "--server", server, "--client", client, "--duration", "2",
           "--runs", "1", "--warmup", "0.5", "--connections", "20", "--json"] + extra
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    rows = [json.loads(l) for l in proc.stdout.splitlines() if l.startswith("{")]
    ok = proc.returncode == 0 and rows and rows[0]["errors"] == 0 and rows[0]["rps_median"] > 0
    detail = (f"{rows[0]['rps_median']:,.0f} req/s, {rows[0]['errors']} errors" if rows
              else (proc.stderr.strip().splitlines() or ["no output"])[-1])
    return ok, detail


def echo_case(binary):
    """Echo: 50 clients each send 200 messages and must get each one back
    intact; then SIGTERM with ten clients still connected: the server closes
    them and exits 0."""
    proc = subprocess.Popen([binary, "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("listening on "):
            return False, f"no 'listening on' line: {line!r}"
        host, port = line.split()[-1].rsplit(":", 1)
        conns = [socket.create_connection((host, int(port)), timeout=10) for _ in range(50)]
        for round_ in range(200):
            for i, c in enumerate(conns):
                c.sendall(f"{i}:{round_}\n".encode())
            for i, c in enumerate(conns):
                want = f"{i}:{round_}\n".encode()
                got = b""
                while len(got) < len(want):
                    chunk = c.recv(len(want) - len(got))
                    if not chunk:
                        return False, f"connection {i} closed early"
                    got += chunk
                if got != want:
                    return False, f"connection {i}: sent {want!r}, got {got!r}"
        for c in conns[10:]:
            c.close()
        # Ten clients stay connected and idle: shutdown must not wait for them.
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=5)
        for i, c in enumerate(conns[:10]):
            if c.recv(1) != b"":
                return False, f"idle connection {i} was not closed at shutdown"
            c.close()
        return code == 0, f"10,000 messages echoed, shut down with 10 idle clients, exit {code}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def proxy_case(proxy, upstream_server):
    """weft-proxy in front of weft-http-hello, under wrk: every request and
    response crosses two io::copy splices."""
    up = subprocess.Popen([upstream_server, "127.0.0.1:0"], stdout=subprocess.PIPE, text=True)
    try:
        line = up.stdout.readline()
        if not line.startswith("listening on "):
            return False, f"upstream printed no 'listening on' line: {line!r}"
        ok, detail = load_case("http", f"{proxy} {{addr}} {line.split()[-1]}", "wrk", [])
        up.send_signal(signal.SIGTERM)
        code = up.wait(timeout=5)
        return ok and code == 0, f"{detail}; upstream exit {code}"
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    build = sys.argv[1]
    ex = os.path.join(build, "examples")
    cases = [("echo", lambda: echo_case(os.path.join(ex, "weft-echo")))]
    cases.append(("http-hello under wrk", lambda: load_case(
        "http", os.path.join(ex, "weft-http-hello"), "wrk", [])))
    cases.append(("resp-ping under redis-benchmark", lambda: load_case(
        "resp", os.path.join(ex, "weft-resp-ping"), "redis-benchmark", ["--pipeline", "1"])))
    cases.append(("resp-ping under redis-benchmark -P 16", lambda: load_case(
        "resp", os.path.join(ex, "weft-resp-ping"), "redis-benchmark", ["--pipeline", "16"])))
    cases.append(("proxy (io::copy) to http-hello under wrk", lambda: proxy_case(
        os.path.join(ex, "weft-proxy"), os.path.join(ex, "weft-http-hello"))))
    passed = failed = 0
    for name, run in cases:
        start = time.monotonic()
        try:
            ok, detail = run()
        except Exception as e:  # a hung or crashed case is a failure, not an abort
            ok, detail = False, f"{type(e).__name__}: {e}"
        print(f"[{'  OK  ' if ok else ' FAIL '}] {name}: {detail} ({time.monotonic() - start:.1f} s)")
        passed, failed = passed + ok, failed + (not ok)
    print(f"real-clients: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
