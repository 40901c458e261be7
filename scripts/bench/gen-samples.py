#!/usr/bin/env python3
"""Generates a benchmark file of bucky sample lines (`NAME VALUE TIMESTAMP[ HOST]`).

    gen-samples.py LINES OUTPUT [--seed N]

The mix looks like bucky's real input: StatsD aggregates without a host (counters, gauges,
timer statistics) and collectd values with a host (cpu, interface, memory, df, load), about
half each; integer and fractional values, integer timestamps for StatsD and sub-second ones
for collectd. Each pass over the series pool advances the clock by 10 seconds. Deterministic
for a given seed.
"""

import argparse
import random
import time

SERVICES = ["api", "web", "auth", "billing", "search", "checkout", "cart", "img", "mail", "feed"]
ENDPOINTS = ["index", "login", "logout", "users_show", "users_list", "orders_create",
             "orders_show", "items_list", "health", "metrics", "upload", "download"]
TIMER_STATS = ["mean_90", "upper_90", "sum_90", "count_90", "mean", "upper", "lower", "count",
               "count_ps", "median", "sum", "std"]
CPU_STATES = ["user", "system", "idle", "wait", "nice", "interrupt", "softirq", "steal"]
IFACES = ["eth0", "eth1", "lo", "bond0"]
DISKS = ["root", "var", "data", "boot"]


def series_pool(rng):
    """(name, host or None, kind) for every series."""
    pool = []
    for svc in SERVICES:
        for ep in ENDPOINTS:
            pool.append((f"stats.counters.{svc}.{ep}.requests.count", None, "count"))
            pool.append((f"stats.counters.{svc}.{ep}.requests.rate", None, "float"))
            pool.append((f"stats.gauges.{svc}.{ep}.inflight", None, "int"))
            for st in TIMER_STATS:
                pool.append((f"stats.timers.{svc}.{ep}.latency.{st}", None, "float"))
    hosts = [f"{role}{n:02d}.{dc}.example.com"
             for role in ("web", "db", "cache", "worker")
             for n in range(1, 6)
             for dc in ("ams1", "fra2")]
    for host in hosts:
        for cpu in range(4):
            for st in CPU_STATES:
                pool.append((f"cpu.{cpu}.cpu.{st}", host, "float"))
        for ifc in IFACES:
            for d in ("rx", "tx"):
                pool.append((f"interface.{ifc}.if_octets.{d}", host, "float"))
                pool.append((f"interface.{ifc}.if_packets.{d}", host, "int"))
        for m in ("used", "free", "cached", "buffered"):
            pool.append((f"memory.memory.{m}", host, "int"))
        for dsk in DISKS:
            pool.append((f"df.{dsk}.df_complex.used", host, "int"))
            pool.append((f"df.{dsk}.df_complex.free", host, "int"))
        for t in ("shortterm", "midterm", "longterm"):
            pool.append((f"load.load.{t}", host, "float"))
    rng.shuffle(pool)
    return pool


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lines", type=int)
    ap.add_argument("output")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    rng = random.Random(args.seed)
    pool = series_pool(rng)
    # Prefix and suffix of every line of the pool, formatted once.
    heads = [name + " " for name, _, _ in pool]
    tails = [(" " + host) if host else "" for _, host, _ in pool]
    kinds = [kind for _, _, kind in pool]
    has_host = [host is not None for _, host, _ in pool]
    now = int(time.time())
    passes = (args.lines + len(pool) - 1) // len(pool)
    ts = now - 10 * passes

    written = 0
    rand = rng.random
    randint = rng.randint
    with open(args.output, "w", buffering=1 << 22) as out:
        while written < args.lines:
            n = min(len(pool), args.lines - written)
            chunk = []
            for i in range(n):
                kind = kinds[i]
                if kind == "count":
                    value = str(randint(0, 5000))
                elif kind == "int":
                    value = str(randint(0, 1 << 40))
                else:
                    value = repr(round(rand() * 10 ** randint(0, 9), randint(0, 6)))
                stamp = f"{ts}.{randint(0, 99):02d}" if has_host[i] else str(ts)
                chunk.append(f"{heads[i]}{value} {stamp}{tails[i]}\n")
            out.write("".join(chunk))
            written += n
            ts += 10
    print(f"{args.output}: {written} lines, {len(pool)} series", flush=True)


if __name__ == "__main__":
    main()
