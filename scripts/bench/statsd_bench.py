#!/usr/bin/env python3
"""The StatsD benchmark of scripts/bench-statsd (which builds the binaries and runs this).

For each rate (full speed, then fixed rates in metrics/s) and each receiver (a bare recvmmsg
loop that only counts lines, bucky-statsd, Etsy statsd 0.9.0), on a fresh port:

  1. start the receiver and wait until it listens;
  2. read its CPU time (utime + stime of /proc/PID/stat, all threads);
  3. run the load generator (statsd_load: counters over KEYS keys, PER per datagram);
  4. wait until the receiver's CPU time stops growing (it has taken in its backlog);
  5. read its CPU time again, stop it, and count what it received:
     bare: the lines it counted; bucky-statsd: the sum of its stats_counts.bench.* samples
     (its final flush at SIGTERM holds everything); Etsy: the sum of stats_counts.bench.*
     its graphite backend sent to a sink of ours (Etsy has no final flush: we wait for its
     flushes to settle first).

Reports the fraction received and CPU seconds per million metrics, with the ratio to the
bare loop of the same rate in the same run.
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def free_port(kind):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_for(what, cond, timeout):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.02)
    sys.exit(f"bench-statsd: timed out waiting for {what}")


def settle(pid, timeout=120):
    """Waits until the process's CPU time stops growing; returns its CPU time then."""
    last = cpu_seconds(pid)
    quiet = 0
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.25)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last <= 1.0 / TICK else 0
        last = now
        if quiet >= 3:
            return now
    return last


class GraphiteSink:
    """Accepts carbon plaintext and sums the values of names starting with a prefix."""

    def __init__(self, prefix):
        self.prefix = prefix.encode()
        self.total = 0.0
        self.updates = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.read, args=(conn,), daemon=True).start()

    def read(self, conn):
        data = b""
        while True:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            data += chunk
        total = 0.0
        for line in data.split(b"\n"):
            if line.startswith(self.prefix):
                total += float(line.split()[1])
        with self.lock:
            self.total += total
            self.updates += 1

    def snapshot(self):
        with self.lock:
            return self.total, self.updates


class Receiver:
    def __init__(self, name, rundir):
        self.name = name
        self.rundir = rundir
        self.proc = None

    def out_path(self):
        return os.path.join(self.rundir, f"{self.name}.out")

    def err_path(self):
        return os.path.join(self.rundir, f"{self.name}.err")

    def spawn(self, argv, **kw):
        self.out = open(self.out_path(), "w")
        self.err = open(self.err_path(), "w")
        self.proc = subprocess.Popen(argv, stdout=self.out, stderr=self.err, **kw)

    def log_has(self, text):
        for p in (self.out_path(), self.err_path()):
            with open(p) as f:
                if text in f.read():
                    return True
        if self.proc.poll() is not None:
            sys.exit(f"bench-statsd: {self.name} exited: {open(self.err_path()).read()[-2000:]}")
        return False

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            sys.exit(f"bench-statsd: {self.name} did not exit on SIGTERM")
        self.out.close()
        self.err.close()


class Bare(Receiver):
    def start(self, a, port):
        self.spawn([a.bare, "--listen", f"127.0.0.1:{port}", "--recv-buffer", str(a.recv_buffer)])
        wait_for("the bare loop", lambda: self.log_has("listening on"), 30)

    def received(self):
        self.terminate()
        text = open(self.out_path()).read()
        kv = dict(x.split("=") for x in text.split())
        return int(kv["lines"]), int(kv["kernel_drops"])


class Bucky(Receiver):
    def start(self, a, port):
        self.spawn(
            [
                a.bucky,
                "--statsd-port", str(port),
                "--flush-time", "1",
                "--self-metrics-interval", "0",
                "--threads", str(a.threads),
                "--recv-buffer", str(a.recv_buffer),
            ]
        )
        wait_for("bucky-statsd", lambda: self.log_has("receiving StatsD on UDP"), 30)

    def received(self):
        self.terminate()
        total = 0.0
        with open(self.out_path()) as f:
            for line in f:
                if line.startswith("stats_counts.bench."):
                    total += float(line.split()[1])
        drops = 0
        for line in open(self.err_path()):
            if "exiting:" in line:
                kv = dict(x.split("=") for x in line.split("exiting:")[1].split())
                drops = int(kv.get("kernel_drops", 0))
        return int(total), drops


class Etsy(Receiver):
    def start(self, a, port):
        self.sink = GraphiteSink("stats_counts.bench.")
        mgmt = free_port(socket.SOCK_STREAM)
        config = {
            "port": port,
            "address": "127.0.0.1",
            "mgmt_port": mgmt,
            "mgmt_address": "127.0.0.1",
            "flushInterval": 1000,
            "backends": ["./backends/graphite"],
            "graphiteHost": "127.0.0.1",
            "graphitePort": self.sink.port,
            "graphite": {"legacyNamespace": True},
            "deleteIdleStats": False,
            "percentThreshold": [90],
        }
        path = os.path.join(self.rundir, "etsy-config.js")
        with open(path, "w") as f:
            f.write("(" + json.dumps(config) + ")\n")
        statsd = os.path.join(a.etsy_dir, "node_modules", "statsd")
        self.spawn(["node", "stats.js", path], cwd=statsd)
        wait_for("Etsy statsd", lambda: self.log_has("server is up"), 60)

    def received(self):
        # No final flush at exit: wait until two flushes in a row add nothing.
        last, updates = self.sink.snapshot()
        stable = 0
        deadline = time.time() + 120
        while stable < 2 and time.time() < deadline:
            time.sleep(1.1)
            total, n = self.sink.snapshot()
            stable = stable + 1 if (total == last and n > updates) else 0
            if total != last:
                updates = n
            last = total
        self.terminate()
        self.sink.sock.close()
        return int(last), None


RECEIVERS = {"bare": Bare, "bucky": Bucky, "etsy": Etsy}
LABELS = {"bare": "bare recvmmsg loop", "bucky": "bucky-statsd", "etsy": "Etsy statsd 0.9.0"}


def run_case(a, kind, rate, rundir):
    port = free_port(socket.SOCK_DGRAM)
    r = RECEIVERS[kind](kind, rundir)
    r.start(a, port)
    c0 = cpu_seconds(r.proc.pid)
    gen = subprocess.run(
        [
            a.load,
            "--target", f"127.0.0.1:{port}",
            "--metrics", str(a.metrics),
            "--keys", str(a.keys),
            "--per-datagram", str(a.per),
            "--rate", str(rate),
            "--sockets", str(a.sockets),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    g = dict(x.split("=") for x in gen.stdout.split())
    c1 = settle(r.proc.pid)
    received, drops = r.received()
    sent = int(g["metrics"])
    return {
        "rate": rate,
        "receiver": kind,
        "sent": sent,
        "send_seconds": float(g["seconds"]),
        "send_rate": float(g["rate"]),
        "received": received,
        "kernel_drops": drops,
        "cpu": c1 - c0,
    }


def best_of(results):
    """One result per (rate, receiver): the most received and the least CPU per metric sent,
    each the best over the runs."""
    best = {}
    for r in results:
        key = (r["rate"], r["receiver"])
        b = best.get(key)
        if b is None:
            best[key] = dict(r)
            continue
        if r["received"] / r["sent"] > b["received"] / b["sent"]:
            b["received"] = r["received"]
        if r["cpu"] / r["sent"] < b["cpu"] / b["sent"]:
            b["cpu"], b["sent"], b["send_rate"] = r["cpu"], r["sent"], r["send_rate"]
    return list(best.values())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--metrics", type=int, default=10_000_000)
    p.add_argument("--keys", type=int, default=1000)
    p.add_argument("--per", type=int, default=10)
    p.add_argument("--rates", default="0,1000000,100000", help="metrics/s, 0 = full speed")
    p.add_argument("--receivers", default="bare,bucky,etsy")
    p.add_argument("--threads", type=int, default=0, help="bucky-statsd --threads")
    p.add_argument("--sockets", type=int, default=1, help="generator sockets")
    p.add_argument("--recv-buffer", type=int, default=8 << 20)
    p.add_argument("--bucky", required=True)
    p.add_argument("--bare", required=True)
    p.add_argument("--load", required=True)
    p.add_argument("--etsy-dir", required=True)
    p.add_argument("--runs", type=int, default=1, help="runs of each case; the best is reported")
    p.add_argument("--json", help="write the results here too")
    a = p.parse_args()

    rates = [float(x) for x in a.rates.split(",")]
    kinds = a.receivers.split(",")
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-statsd-") as rundir:
        for run in range(1, a.runs + 1):
            for rate in rates:
                for kind in kinds:
                    label = "full speed" if rate == 0 else f"{rate:,.0f}/s"
                    print(f"== run {run}, {label}: {LABELS[kind]}", file=sys.stderr, flush=True)
                    res = run_case(a, kind, rate, rundir)
                    results.append(res)
                    print(
                        f"   sent {res['sent']:,} in {res['send_seconds']:.2f} s "
                        f"({res['send_rate']:,.0f}/s), received {res['received']:,} "
                        f"({100 * res['received'] / res['sent']:.2f}%), "
                        f"CPU {res['cpu']:.2f} s"
                        + (f", kernel drops {res['kernel_drops']}" if res["kernel_drops"] else ""),
                        file=sys.stderr,
                        flush=True,
                    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)
    results = best_of(results)

    print()
    print(
        f"{a.metrics:,} counters over {a.keys} keys, {a.per} per datagram; "
        f"CPU = receiver user+sys from the first datagram until it went idle, per million "
        f"metrics sent (and per million received); best of {a.runs} run(s)"
    )
    print(
        f"{'rate':<12} {'receiver':<20} {'sent/s':>11} {'received':>9} "
        f"{'CPU s/M':>8} {'x bare':>7} {'s/M rcvd':>9}"
    )
    bare = {r["rate"]: r for r in results if r["receiver"] == "bare"}
    for r in results:
        per_m = r["cpu"] / (r["sent"] / 1e6)
        b = bare.get(r["rate"])
        ratio = ""
        if b and b["cpu"] > 0:
            ratio = f"{per_m / (b['cpu'] / (b['sent'] / 1e6)):.2f}"
        label = "full speed" if r["rate"] == 0 else f"{r['rate']:,.0f}/s"
        per_rcvd = r["cpu"] / (r["received"] / 1e6) if r["received"] else float("inf")
        print(
            f"{label:<12} {LABELS[r['receiver']]:<20} {r['send_rate']:>11,.0f} "
            f"{100 * r['received'] / r['sent']:>8.2f}% {per_m:>8.3f} {ratio:>7} {per_rcvd:>9.3f}"
        )
    print()
    ok = True
    for r in results:
        if r["receiver"] != "bucky":
            continue
        if r["rate"] == 0:
            good = r["received"] == r["sent"]
            ok &= good
            print(f"goal: zero loss at full speed: {'met' if good else 'NOT met'} "
                  f"({r['sent'] - r['received']:,} lost)")
        elif r["rate"] in bare and bare[r["rate"]]["cpu"] > 0:
            ratio = r["cpu"] / bare[r["rate"]]["cpu"] * bare[r["rate"]]["sent"] / r["sent"]
            good = ratio <= 1.5
            ok &= good
            print(f"goal: CPU within 1.5x of the bare loop at {r['rate']:,.0f}/s: "
                  f"{'met' if good else 'NOT met'} ({ratio:.2f}x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
