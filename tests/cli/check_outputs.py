#!/usr/bin/env python3
"""check_outputs.py NIBBLE WORKDIR: `nibble quantize --json/--csv` write what
they promise (the keys, one row per scheme in order, sane values)."""

import csv
import json
import math
import os
import subprocess
import sys

ROW_KEYS = {
    "scheme", "bits", "group_size", "symmetric", "scale_dtype",
    "bits_per_weight", "codes_bytes", "scales_bytes", "zero_point_bytes",
    "total_bytes", "compression_ratio", "count", "mse", "rmse",
    "max_abs_error", "snr_db", "cosine", "rel_frobenius", "time_ms",
    "gb_per_s",
}


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def main():
    nibble, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    json_path = os.path.join(work, "check_outputs.json")
    csv_path = os.path.join(work, "check_outputs.csv")
    rows, cols = 64, 256
    cmd = [nibble, "quantize", "--rows", str(rows), "--cols", str(cols),
           "--scheme", "int4-g32,int8", "--threads", "2", "--seed", "7",
           "--json", json_path, "--csv", csv_path, "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        fail(f"{cmd} exited {proc.returncode}: {proc.stderr}")
    if proc.stdout.strip():
        fail(f"--quiet still printed: {proc.stdout!r}")

    with open(json_path, encoding="utf-8") as f:
        doc = json.load(f)
    for key in ("nibble_version", "isa", "isa_source", "threads", "input",
                "results"):
        if key not in doc:
            fail(f"JSON lacks '{key}': {sorted(doc)}")
    inp = doc["input"]
    if (inp.get("rows"), inp.get("cols"), inp.get("dtype"), inp.get("seed")) \
            != (rows, cols, "f16", 7):
        fail(f"JSON input block is {inp}")
    if inp.get("bytes") != rows * cols * 2:
        fail(f"JSON input bytes {inp.get('bytes')}")
    if doc["threads"] != 2 or doc["isa"] not in ("scalar", "avx2", "avx512"):
        fail(f"JSON run block: threads {doc['threads']}, isa {doc['isa']}")
    res = doc["results"]
    if [r.get("scheme") for r in res] != ["int4-g32", "int8"]:
        fail(f"JSON schemes: {[r.get('scheme') for r in res]}")
    expected_bpw = {"int4-g32": 4 + 16 / 32, "int8": 8 + 16 / cols}
    for r in res:
        missing = ROW_KEYS - set(r)
        if missing:
            fail(f"JSON row {r.get('scheme')} lacks {sorted(missing)}")
        name = r["scheme"]
        if abs(r["bits_per_weight"] - expected_bpw[name]) > 1e-12:
            fail(f"{name}: bits_per_weight {r['bits_per_weight']}")
        if r["count"] != rows * cols:
            fail(f"{name}: count {r['count']}")
        if r["total_bytes"] != r["codes_bytes"] + r["scales_bytes"] + \
                r["zero_point_bytes"]:
            fail(f"{name}: byte counts do not add up")
        if not (0 < r["rmse"] < 0.01 and 0 < r["max_abs_error"] < 1 and
                r["snr_db"] > 5 and 0.9 < r["cosine"] <= 1 and
                0 < r["rel_frobenius"] < 0.5):
            fail(f"{name}: implausible metrics {r}")
        if abs(r["rmse"] - math.sqrt(r["mse"])) > 1e-15:
            fail(f"{name}: rmse != sqrt(mse)")
    if not res[0]["snr_db"] < res[1]["snr_db"]:
        fail("int4-g32 should have a lower SNR than int8 on this input")

    with open(csv_path, newline="", encoding="utf-8") as f:
        table = list(csv.DictReader(f))
    if [t["scheme"] for t in table] != ["int4-g32", "int8"]:
        fail(f"CSV schemes: {[t['scheme'] for t in table]}")
    missing = ROW_KEYS - set(table[0])
    if missing:
        fail(f"CSV lacks columns {sorted(missing)}")
    for t, r in zip(table, res):
        for key in ("mse", "max_abs_error", "snr_db", "cosine"):
            if float(t[key]) != r[key]:
                fail(f"CSV {key} {t[key]} != JSON {r[key]}")
    print("ok")


if __name__ == "__main__":
    main()
