#!/usr/bin/env bash
# Builds and runs nibble-bench, writes its JSON to out/bench.json (or
# NIBBLE_BENCH_OUT) and prints the markdown tables of scripts/bench_table.py
# (also saved next to the JSON as .md). Extra arguments go to nibble-bench,
# e.g. bash scripts/bench.sh --benchmark_filter='int4_g128_sym/f16' \
#        --benchmark_min_time=0.2 --benchmark_repetitions=3
# The full run (every scheme x dtype x ISA x thread count on 4096x11008) takes
# a while; run it on an otherwise idle machine.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${NIBBLE_BUILD_DIR:-$root/build}"
out="${NIBBLE_BENCH_OUT:-$root/out/bench.json}"

bash "$root/scripts/setup-deps.sh"
bash "$root/scripts/build.sh"
mkdir -p "$(dirname "$out")"
"$build_dir/benchmarks/nibble-bench" --benchmark_out="$out" \
  --benchmark_out_format=json "$@"
python3 "$root/scripts/bench_table.py" "$out" | tee "${out%.json}.md"
echo "bench: wrote $out and ${out%.json}.md"
