#!/usr/bin/env python3
"""Request/response throughput of a server under a real load generator.

    load.py --server CMD --client wrk|redis-benchmark [options]
    load.py compare --client wrk --server name=CMD --server name2=CMD [options]

Each run starts the server command with an address on 127.0.0.1 (a free port
chosen here), waits for the line "listening on HOST:PORT" on its stdout, runs
the client against it, then sends SIGTERM and expects the server to exit 0
within 5 seconds (each server in a session of its own unless
--server-session shared). CMD is one shell-quoted string; "{addr}" in it is
replaced by HOST:PORT, and without "{addr}" the address is appended as the last
argument (weft's examples take it as their first positional argument):

    --server build/release/examples/http-hello
    --server 'go=bench/peers/go/bin/go-servers -mode http -addr {addr}'
    --server 'epoll=build/release/bench/peers/epoll/weft-epoll-peer --mode http --addr {addr}'

"name=" is optional (default: the program's file name). Without "compare"
every server gets all its runs in a row; "compare" interleaves them (A, B, C,
A, B, C, ...) so that a change in the machine's load hits all servers alike,
and prints each server's median as a ratio of the first server's.

Clients:
  wrk              wrk -t THREADS -c CONNECTIONS -d DURATION --latency http://ADDR/
  echo             weft-http-load --echo SIZE (bench/http_load.cc; --load-gen
                   says where it is built): each connection sends SIZE bytes
                   (default 64) and waits for them back, THREADS epoll threads
  redis-benchmark  redis-benchmark -h HOST -p PORT -t ping_mbulk -c CONNECTIONS
                   -n N -P PIPELINE --csv; N is chosen so that a run lasts about
                   DURATION (from the warm-up's rate) unless --requests is given

Before each measured run the client runs for --warmup seconds against the same
server process, and that run is discarded. Errors: wrk's "Socket errors" and
"Non-2xx or 3xx responses" (a wrk run without a single response fails);
redis-benchmark stops at the first error reply and exits 1, which fails the
run. Every step has a time limit: a server or client
that hangs is killed and the run reported as failed.

Output: a table (median, min, max, spread of requests/s over the runs, the
median of the runs' 99th percentile latency as the client measured it, and
errors), or with --json one JSON object per line and server:
{"server", "client", "connections", "runs", "rps_median", "rps_min",
"rps_max", "errors", "rps_runs", "p99_ms_median", "p99_ms_runs",
"failures", "ratio" (compare only), "other_cpu_percent", "server_session",
"server_cpu_us_median", "client_cpu_us_median"}: the last two are the median
over the runs of the CPU time (user and system, all threads) that the server
and the client spent per request during the measured run, in microseconds; on
a machine the two share, throughput follows their sum.
wrk's p99 is its --latency distribution's; redis-benchmark's its CSV
p99_latency_ms (7.0 and later; "-" before). The exit status is 1 when any run
had errors or any server failed to start or stop cleanly, 2 on bad arguments.

Standard library only. On a loaded machine the numbers move a lot; the
"other processes" share printed at the end says how much CPU others took.
"""

import argparse
import json
import os
import re
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

START_TIMEOUT = 10.0  # seconds for the server to print "listening on"
STOP_TIMEOUT = 5.0  # seconds for the server to exit after SIGTERM
LISTENING = re.compile(r"listening on (\S+)")


class RunError(Exception):
    """A run that failed: server did not start or stop cleanly, client hung."""


class Server:
    def __init__(self, spec):
        name, cmd = None, spec
        m = re.match(r"^([A-Za-z0-9_.+-]+)=(.*)$", spec, re.S)
        if m and "/" not in m.group(1):
            name, cmd = m.group(1), m.group(2)
        self.argv = shlex.split(cmd)
        if not self.argv:
            raise ValueError(f"empty server command: {spec!r}")
        self.name = name or os.path.basename(self.argv[0])
        self.rps = []  # requests/s of each successful run
        self.p99_ms = []  # the client's 99th percentile latency of each run, if it gives one
        self.errors = 0  # client-reported errors over all runs
        self.failures = []  # messages of failed runs
        self.estimate = None  # requests/s seen last (redis-benchmark's -n)
        self.server_cpu_us = []  # the server's CPU time per request of each run
        self.client_cpu_us = []  # the client's

    def command(self, addr):
        if any("{addr}" in a for a in self.argv):
            return [a.replace("{addr}", addr) for a in self.argv]
        return self.argv + [addr]


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Running:
    """A started server process; stop() checks its exit."""

    def __init__(self, argv, shared_session=False):
        self.argv = argv
        self.stderr = tempfile.TemporaryFile()
        # A process group of its own either way, so that kill() takes its
        # children too; a session of its own also puts it in a scheduling
        # autogroup of its own (see --server-session).
        group = {"process_group": 0} if shared_session else {"start_new_session": True}
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.stderr,
                **group)
        except OSError as e:
            raise RunError(f"cannot start {argv[0]}: {e}")
        self.lines = []
        self.listening = threading.Event()
        self.addr = None
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self):
        # Reads stdout to the end so that a chatty server never blocks on a
        # full pipe; the first "listening on" line gives the address.
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            if len(self.lines) < 100:
                self.lines.append(line)
            m = LISTENING.search(line)
            if m and not self.listening.is_set():
                self.addr = m.group(1)
                self.listening.set()
        self.listening.set()  # EOF: wake the waiter, which sees addr is None

    def stderr_tail(self, n=600):
        self.stderr.seek(0)
        text = self.stderr.read().decode(errors="replace").strip()
        return ("; stderr: ..." + text[-n:]) if text else ""

    def wait_listening(self):
        if not self.listening.wait(START_TIMEOUT) or self.addr is None:
            rc = self.proc.poll()
            self.kill()
            what = f"exited with {rc}" if rc is not None else f"silent for {START_TIMEOUT:.0f} s"
            raise RunError(f"server did not print 'listening on' ({what}){self.stderr_tail()}")
        return self.addr

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def stop(self):
        """SIGTERM, then the exit status within STOP_TIMEOUT; None if clean."""
        if not self.alive():
            return f"server died during the run (exit {self.proc.returncode}){self.stderr_tail()}"
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            return f"server still running {STOP_TIMEOUT:.0f} s after SIGTERM (killed)"
        finally:
            # Children the server left in its session go too.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if rc != 0:
            return f"server exited with {rc} after SIGTERM{self.stderr_tail()}"
        return None


def start(server, shared_session=False):
    """Starts `server` on a free port of 127.0.0.1: (Running, the HOST:PORT to
    reach it). RunError (the process killed) if it never says it listens."""
    port = free_port()
    run = Running(server.command(f"127.0.0.1:{port}"), shared_session)
    addr = run.wait_listening()
    # A server that prints the address it was given (port 0 or not) is
    # reached on the port chosen here.
    if not re.search(r":[1-9][0-9]*$", addr):
        addr = f"127.0.0.1:{port}"
    return run, addr


def run_client(argv, timeout):
    """Runs a client to completion within timeout; (stdout, stderr, rc)."""
    try:
        p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RunError(f"client hung: {' '.join(argv)} ran past {timeout:.0f} s (killed)")
    except OSError as e:
        raise RunError(f"cannot run {argv[0]}: {e}")
    return p.stdout, p.stderr, p.returncode


def wrk_latency_ms(out, percent):
    """A percentile of wrk --latency's distribution, in ms (None if absent)."""
    m = re.search(rf"^\s+{percent}%\s+([0-9.]+)(us|ms|s)\s*$", out, re.M)
    if not m:
        return None
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    return float(m.group(1)) * scale


def wrk(args, addr, seconds):
    """(requests/s, errors, p99 ms) from one wrk run."""
    argv = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency",
            f"http://{addr}/"]
    out, err, rc = run_client(argv, seconds + 30)
    m = re.search(r"^Requests/sec:\s+([0-9.]+)", out, re.M)
    if rc != 0 or not m:
        raise RunError(f"wrk failed (exit {rc}): {(err or out).strip()[-400:]}")
    if float(m.group(1)) == 0:
        raise RunError("wrk got no responses in " + f"{seconds} s: {out.strip()[-400:]}")
    errors = 0
    s = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if s:
        errors += sum(int(x) for x in s.groups())
    s = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if s:
        errors += int(s.group(1))
    return float(m.group(1)), errors, wrk_latency_ms(out, 99)


def echo_client(args, addr, seconds, warmup):
    """(requests/s, errors, p99 ms) from one weft-http-load --echo run."""
    argv = [args.load_gen, "--addr", addr, "--echo", str(args.size),
            "--connections", str(args.connections), "--threads", str(args.threads),
            "--seconds", str(seconds), "--warmup", str(warmup)]
    out, err, rc = run_client(argv, seconds + warmup + 30)
    try:
        r = json.loads(out.strip().splitlines()[-1])
    except (IndexError, ValueError):
        r = None
    if rc != 0 or r is None:
        raise RunError(f"{args.load_gen} failed (exit {rc}): {(err or out).strip()[-400:]}")
    return float(r["req_per_s"]), int(r["errors"]), r["p99_us"] / 1000.0


def redis_benchmark(args, addr, requests, expected_seconds):
    """(requests/s, errors, p99 ms) from one redis-benchmark run of `requests`
    PINGs (p99 None from a redis-benchmark older than 7, whose CSV has no
    latency columns)."""
    host, port = addr.rsplit(":", 1)
    argv = ["redis-benchmark", "-h", host, "-p", port, "-t", "ping_mbulk",
            "-c", str(args.connections), "-n", str(requests), "-P", str(args.pipeline),
            "--csv"]
    out, err, rc = run_client(argv, expected_seconds * 4 + 30)
    m = re.search(r'^"PING_MBULK","([0-9.]+)"(.*)$', out, re.M)
    # redis-benchmark stops at the first error reply ("Error from server:
    # ...", exit 1): that run counts as failed.
    if rc != 0 or not m:
        raise RunError(f"redis-benchmark failed (exit {rc}): {(err or out).strip()[-400:]}")
    p99 = None
    head = re.search(r'^"test","rps"(.*)$', out, re.M)
    if head:
        names = [c.strip('"') for c in head.group(1).split(",") if c]
        values = [c.strip('"') for c in m.group(2).split(",") if c]
        if "p99_latency_ms" in names and len(values) == len(names):
            p99 = float(values[names.index("p99_latency_ms")])
    return float(m.group(1)), 0, p99


def measure(args, server):
    """One run: start the server, warm up, measure, stop. Updates server."""
    try:
        run, addr = start(server, args.server_session == "shared")
    except RunError as e:
        server.failures.append(str(e))
        return f"FAILED: {e}"
    try:
        if args.client == "wrk":
            if args.warmup > 0:
                wrk(args, addr, args.warmup)
        elif args.client == "echo":
            if args.warmup > 0:
                echo_client(args, addr, args.warmup, 0)
        else:
            if server.estimate is None or args.warmup > 0:
                n = int(max(5000, (server.estimate or 50000) * max(args.warmup, 0.2)))
                rate, _, _ = redis_benchmark(args, addr, n, max(args.warmup, 1))
                server.estimate = server.estimate or rate
            n = args.requests or int(max(10000, server.estimate * args.duration))
        cpu = CpuMeter(run.proc.pid)
        if args.client == "wrk":
            rps, errors, p99 = wrk(args, addr, args.duration)
        elif args.client == "echo":
            rps, errors, p99 = echo_client(args, addr, args.duration, 0)
        else:
            rps, errors, p99 = redis_benchmark(args, addr, n, args.duration)
            server.estimate = rps
        server_us, client_us = cpu.per_request(rps)
        if not run.alive():
            raise RunError(f"server died during the run (exit {run.proc.returncode})"
                           f"{run.stderr_tail()}")
    except RunError as e:
        if run.proc.poll() is not None:
            e = RunError(f"{e}; the server had exited with {run.proc.returncode}"
                         f"{run.stderr_tail()}")
        run.kill()
        server.failures.append(str(e))
        return f"FAILED: {e}"
    problem = run.stop()
    server.rps.append(rps)
    if p99 is not None:
        server.p99_ms.append(p99)
    if server_us is not None:
        server.server_cpu_us.append(server_us)
        server.client_cpu_us.append(client_us)
    server.errors += errors
    if problem:
        server.failures.append(problem)
        return f"{rps:,.0f} req/s, {errors} errors; FAILED: {problem}"
    return (f"{rps:,.0f} req/s" + (f", p99 {p99:.2f} ms" if p99 is not None else "")
            + (f", CPU/req server {server_us:.1f} us client {client_us:.1f} us"
               if server_us is not None else "")
            + (f", {errors} ERRORS" if errors else ""))


class CpuMeter:
    """CPU time per request of the server (all its threads, from
    /proc/PID/stat) and of the client (the waited-for children's rusage)
    over one measured client run. On a machine the client shares with the
    server, throughput follows the sum: a server that takes less CPU per
    request leaves more to the client."""

    def __init__(self, pid):
        self.pid = pid
        self.t0 = time.monotonic()
        self.server0 = self._server()
        self.client0 = self._client()

    def _server(self):
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                # Fields after the command name, which may hold spaces.
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _client():
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime

    def per_request(self, rps):
        """(server us, client us) per request, or (None, None) when unknown."""
        server1 = self._server()
        requests = rps * (time.monotonic() - self.t0)
        if self.server0 is None or server1 is None or requests <= 0:
            return None, None
        return (1e6 * (server1 - self.server0) / requests,
                1e6 * (self._client() - self.client0) / requests)


class OtherLoad:
    """CPU time that processes other than ours (the servers and clients, all
    waited-for children) used, as a share of all CPUs, from /proc/stat."""

    def __init__(self):
        self.t0 = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        total = sum(fields[:8])
        r = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (total - idle) / hz, total / hz, r.ru_utime + r.ru_stime

    def percent(self):
        t1 = self._sample()
        if self.t0 is None or t1 is None or t1[1] <= self.t0[1]:
            return None
        busy = t1[0] - self.t0[0]
        ours = t1[2] - self.t0[2]
        return 100.0 * max(0.0, busy - ours) / (t1[1] - self.t0[1])


def parse_args(argv):
    compare = bool(argv) and argv[0] == "compare"
    if compare:
        argv = argv[1:]
    p = argparse.ArgumentParser(
        prog="load.py compare" if compare else "load.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", action="append", required=True, metavar="[NAME=]CMD",
                   help="server command (one string; {addr} is replaced); repeatable")
    p.add_argument("--client", required=True, choices=["wrk", "redis-benchmark", "echo"])
    p.add_argument("--size", type=int, default=64, help="echo: bytes per request (default 64)")
    p.add_argument("--load-gen", default="build/release/bench/weft-http-load",
                   help="echo: the weft-http-load binary (default %(default)s)")
    p.add_argument("--duration", type=float, default=10, help="seconds per run (default 10)")
    p.add_argument("--connections", type=int, default=50, help="client connections (default 50)")
    p.add_argument("--threads", type=int, default=2,
                   help="wrk and echo client threads (default 2; redis-benchmark runs its one)")
    p.add_argument("--runs", type=int, default=3, help="runs per server (default 3)")
    p.add_argument("--warmup", type=float, default=1,
                   help="seconds of discarded load before each run (default 1)")
    p.add_argument("--pipeline", type=int, default=1,
                   help="redis-benchmark -P: commands in flight per connection (default 1)")
    p.add_argument("--requests", type=int, default=0,
                   help="redis-benchmark -n (default: about DURATION seconds' worth)")
    p.add_argument("--server-session", choices=["own", "shared"], default="own",
                   help="own (default): each server in a session of its own; shared: in "
                        "this script's, beside the client, as a shell script's jobs are. "
                        "With autogroup scheduling (/proc/sys/kernel/sched_autogroup_enabled "
                        "1) a session is a scheduling group, and a spinning server "
                        "competes with its client task by task only in the same group")
    p.add_argument("--json", action="store_true", help="one JSON object per server and line")
    args = p.parse_args(argv)
    args.compare = compare
    if args.client == "wrk":
        args.duration = max(1, int(round(args.duration)))
        args.warmup = int(round(args.warmup))
    if args.runs < 1 or args.connections < 1 or args.threads < 1 or args.pipeline < 1:
        p.error("--runs, --connections, --threads and --pipeline must be at least 1")
    try:
        args.servers = [Server(s) for s in args.server]
    except ValueError as e:
        p.error(str(e))
    names = [s.name for s in args.servers]
    if len(set(names)) != len(names):
        p.error(f"server names must differ (got {', '.join(names)}); use NAME=CMD")
    return args


def main(argv):
    args = parse_args(argv)
    log = sys.stderr if args.json else sys.stdout
    order = []
    if args.compare:
        order = [s for _ in range(args.runs) for s in args.servers]
    else:
        order = [s for s in args.servers for _ in range(args.runs)]
    load = OtherLoad()
    done = {}
    for server in order:
        done[server.name] = done.get(server.name, 0) + 1
        result = measure(args, server)
        print(f"  {server.name:<16} run {done[server.name]}/{args.runs}: {result}", file=log,
              flush=True)
    others = load.percent()

    base = args.servers[0]
    base_median = statistics.median(base.rps) if base.rps else None
    rows = []
    for s in args.servers:
        row = {
            "server": s.name,
            "client": args.client,
            "connections": args.connections,
            "server_session": args.server_session,
            "runs": len(s.rps),
            "rps_median": round(statistics.median(s.rps), 1) if s.rps else None,
            "rps_min": round(min(s.rps), 1) if s.rps else None,
            "rps_max": round(max(s.rps), 1) if s.rps else None,
            "errors": s.errors,
            "rps_runs": [round(r, 1) for r in s.rps],
            "p99_ms_median": round(statistics.median(s.p99_ms), 3) if s.p99_ms else None,
            "p99_ms_runs": [round(x, 3) for x in s.p99_ms],
            "server_cpu_us_median": (round(statistics.median(s.server_cpu_us), 2)
                                     if s.server_cpu_us else None),
            "client_cpu_us_median": (round(statistics.median(s.client_cpu_us), 2)
                                     if s.client_cpu_us else None),
            "failures": s.failures,
            "other_cpu_percent": None if others is None else round(others, 1),
        }
        if args.compare:
            row["ratio"] = (round(row["rps_median"] / base_median, 3)
                            if row["rps_median"] and base_median else None)
        rows.append(row)

    if args.json:
        for row in rows:
            print(json.dumps(row))
    else:
        client = {"wrk": f"wrk -t{args.threads}", "echo": f"echo {args.size} B, {args.threads} threads",
                  "redis-benchmark": f"redis-benchmark -P{args.pipeline}"}[args.client]
        print(f"\n{client}, {args.connections} connections, "
              f"{args.duration} s x {args.runs} runs" + (" (interleaved)" if args.compare else ""))
        head = (f"{'server':<16} {'median req/s':>13} {'min':>11} {'max':>11} {'spread':>7} "
                f"{'p99 ms':>7} {'errors':>7} {'CPU us/req srv':>14} {'cli':>5}")
        if args.compare:
            head += f"  {'vs ' + base.name:>12}"
        print(head)
        for row in rows:
            if row["rps_median"] is None:
                print(f"{row['server']:<16} {'no successful run':>13}")
                continue
            spread = 100.0 * (row["rps_max"] - row["rps_min"]) / max(row["rps_median"], 1e-9)
            p99 = "-" if row["p99_ms_median"] is None else f"{row['p99_ms_median']:.2f}"
            srv, cli = row["server_cpu_us_median"], row["client_cpu_us_median"]
            line = (f"{row['server']:<16} {row['rps_median']:>13,.0f} {row['rps_min']:>11,.0f} "
                    f"{row['rps_max']:>11,.0f} {spread:>6.1f}% {p99:>7} {row['errors']:>7} "
                    f"{'-' if srv is None else f'{srv:.1f}':>14} "
                    f"{'-' if cli is None else f'{cli:.1f}':>5}")
            if args.compare and row["ratio"] is not None:
                line += f"  {row['ratio']:>11.2f}x"
            print(line)
        if others is not None:
            print(f"other processes used {others:.1f}% of the CPUs during the runs"
                  + (": the numbers are skewed" if others > 5 else ""))
    failed = [(s.name, f) for s in args.servers for f in s.failures]
    for name, f in failed:
        print(f"FAILED {name}: {f}", file=sys.stderr)
    errors = sum(s.errors for s in args.servers)
    if errors:
        print(f"{errors} client-reported errors", file=sys.stderr)
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
