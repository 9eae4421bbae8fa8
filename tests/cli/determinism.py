#!/usr/bin/env python3
"""determinism.py NIBBLE WORKDIR: `nibble quantize` reports bit-identical
sizes and metrics for every ISA path this CPU supports and every thread
count, for each input dtype (the library's promise, checked end to end)."""

import json
import os
import re
import subprocess
import sys

SCHEMES = "int8,int8-asym,int8-g32,int4-g32,int4-g64-asym,int4-g128,int4-row,int4-row-asym"
VARYING = {"time_ms", "gb_per_s"}


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"FAIL: {cmd} exited {proc.returncode}\n{proc.stdout}{proc.stderr}")
        sys.exit(1)
    return proc.stdout


def main():
    nibble, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    info = run([nibble, "info"])
    m = re.search(r"^supported isas: (.*)$", info, re.M)
    if not m:
        print(f"FAIL: no 'supported isas:' line in:\n{info}")
        sys.exit(1)
    isas = m.group(1).split()
    print(f"isa paths: {' '.join(isas)}")
    for dtype in ("f16", "bf16", "f32"):
        reference = None
        for isa in isas:
            for threads in (1, 2, 3):
                out = os.path.join(work, f"det_{dtype}_{isa}_{threads}.json")
                run([nibble, "quantize", "--rows", "203", "--cols", "384",
                     "--dtype", dtype, "--scheme", SCHEMES, "--isa", isa,
                     "--threads", str(threads), "--json", out, "--quiet"])
                with open(out, encoding="utf-8") as f:
                    rows = [{k: v for k, v in r.items() if k not in VARYING}
                            for r in json.load(f)["results"]]
                if reference is None:
                    reference = (isa, threads, rows)
                    continue
                for a, b in zip(reference[2], rows):
                    if a != b:
                        diff = {k: (a[k], b.get(k)) for k in a if a[k] != b.get(k)}
                        print(f"FAIL: {dtype} {a['scheme']}: {isa}/{threads} threads "
                              f"differs from {reference[0]}/{reference[1]}: {diff}")
                        sys.exit(1)
        print(f"{dtype}: identical across {len(isas)} paths x 3 thread counts")
    print("ok")


if __name__ == "__main__":
    main()
