#!/usr/bin/env python3
"""Markdown tables from nibble-bench's JSON output (Python 3 standard library).

Usage: python3 scripts/bench_table.py BENCH.json [--no-extra]

Prints one row per benchmark: input GB/s (10^9 bytes of the floating-point
matrix per second) and the ratio to memcpy of the same dtype and thread count
from the same run. Unless --no-extra is given it adds two tables: the cost of
the fused metrics (quantize_metrics vs quantize) and thread scaling (N threads
vs 1). With --benchmark_repetitions the median aggregate is used.
"""

import argparse
import json
import statistics
import sys

IGNORED_PREFIXES = ("real_time", "process_time", "manual_time", "min_time:",
                    "iterations:", "repeats:", "min_warmup_time:")


def parse_name(run_name):
    """quantize/int4_g128_sym/f16/avx2/threads:2/real_time -> dict."""
    parts = [p for p in run_name.split("/")
             if p and not p.startswith(IGNORED_PREFIXES)]
    threads = 1
    rest = []
    for p in parts:
        if p.startswith("threads:"):
            threads = int(p.split(":", 1)[1])
        else:
            rest.append(p)
    if not rest:
        return None
    op = rest[0]
    if op == "memcpy" and len(rest) >= 2:
        return {"op": op, "scheme": "", "dtype": rest[1], "isa": "",
                "threads": threads}
    if len(rest) >= 4:
        return {"op": op, "scheme": rest[1], "dtype": rest[2], "isa": rest[3],
                "threads": threads}
    return None


def collect(benchmarks):
    """run_name -> bytes/s, preferring median > mean aggregates."""
    iterations = {}
    aggregates = {}
    order = []
    for b in benchmarks:
        if b.get("error_occurred"):
            continue
        run = b.get("run_name", b["name"])
        bps = b.get("bytes_per_second")
        if bps is None:
            continue
        if run not in order:
            order.append(run)
        if b.get("run_type") == "aggregate":
            aggregates.setdefault(run, {})[b.get("aggregate_name")] = bps
        else:
            iterations.setdefault(run, []).append(bps)
    rates = {}
    for run in order:
        agg = aggregates.get(run, {})
        if "median" in agg:
            rates[run] = agg["median"]
        elif "mean" in agg:
            rates[run] = agg["mean"]
        elif run in iterations:
            rates[run] = statistics.median(iterations[run])
    return [(run, rates[run]) for run in order if run in rates]


def gbs(bps):
    return f"{bps / 1e9:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json_file")
    ap.add_argument("--no-extra", action="store_true",
                    help="print only the main table")
    args = ap.parse_args()
    try:
        with open(args.json_file, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"bench_table.py: cannot read {args.json_file}: {e}")

    rows = []
    for run, bps in collect(data.get("benchmarks", [])):
        info = parse_name(run)
        if info is None:
            continue
        info["name"] = run.replace("/real_time", "")
        info["bps"] = bps
        rows.append(info)
    if not rows:
        sys.exit("bench_table.py: no benchmarks with bytes_per_second found")

    ctx = data.get("context", {})
    print(f"nibble {ctx.get('nibble_version', '?')}, matrix "
          f"{ctx.get('matrix', '?')}, {ctx.get('num_cpus', '?')} CPUs @ "
          f"{ctx.get('mhz_per_cpu', '?')} MHz, ISA paths: "
          f"{ctx.get('nibble_isas', '?')}, {ctx.get('date', '')}")
    print()

    memcpy = {(r["dtype"], r["threads"]): r["bps"]
              for r in rows if r["op"] == "memcpy"}
    print("| benchmark | GB/s | vs memcpy |")
    print("|---|---:|---:|")
    for r in rows:
        base = memcpy.get((r["dtype"], r["threads"]))
        ratio = f"{r['bps'] / base:.2f}" if base else "n/a"
        print(f"| {r['name']} | {gbs(r['bps'])} | {ratio} |")

    if args.no_extra:
        return

    key = lambda r: (r["scheme"], r["dtype"], r["isa"], r["threads"])
    plain = {key(r): r["bps"] for r in rows if r["op"] == "quantize"}
    fused = [r for r in rows
             if r["op"] == "quantize_metrics" and key(r) in plain]
    if fused:
        print()
        print("Fused metrics: extra time of quantize_metrics over quantize "
              "(same scheme, dtype, ISA, threads).")
        print()
        print("| scheme/dtype/isa/threads | quantize GB/s | with metrics GB/s "
              "| extra time |")
        print("|---|---:|---:|---:|")
        for r in fused:
            p = plain[key(r)]
            extra = (p / r["bps"] - 1.0) * 100.0
            print(f"| {r['scheme']}/{r['dtype']}/{r['isa']}/{r['threads']} | "
                  f"{gbs(p)} | {gbs(r['bps'])} | {extra:+.1f}% |")

    single = {(r["op"], r["scheme"], r["dtype"], r["isa"]): r["bps"]
              for r in rows if r["threads"] == 1}
    scaled = [r for r in rows if r["threads"] > 1 and
              (r["op"], r["scheme"], r["dtype"], r["isa"]) in single]
    if scaled:
        print()
        print("Thread scaling: N threads vs 1 thread.")
        print()
        print("| benchmark | threads | GB/s | 1 thread GB/s | speed-up |")
        print("|---|---:|---:|---:|---:|")
        for r in scaled:
            one = single[(r["op"], r["scheme"], r["dtype"], r["isa"])]
            name = "/".join(x for x in (r["op"], r["scheme"], r["dtype"],
                                        r["isa"]) if x)
            print(f"| {name} | {r['threads']} | {gbs(r['bps'])} | {gbs(one)} "
                  f"| {r['bps'] / one:.2f}x |")


if __name__ == "__main__":
    main()
