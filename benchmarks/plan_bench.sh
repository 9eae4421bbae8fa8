#!/usr/bin/env bash
# Benchmark of `nibble plan` (issue 5): plan time relative to one `nibble
# convert` of the same checkpoint.
#
# Generates (or reuses) an FP16 Llama-shaped safetensors checkpoint with
# scripts/make_checkpoint.py --stream (TinyLlama-1.1B dims, layers added until
# the tensors reach NIBBLE_BENCH_SIZE), then, alternating, times
#   convert  nibble convert IN OUT --scheme int4 --force --quiet, then sync
#   plan     nibble plan IN --target-bpw 4.5 -o plan.toml --json plan.json -q
#   apply    nibble convert IN OUT --config plan.toml --force --quiet, then sync
# each under /usr/bin/time -v, and prints a markdown table of the medians
# (wall time, ratio to convert, peak RSS) and the plan's figures from its
# JSON (bits per weight, squared error against the uniform schemes, solver).
#
# plan reads every tensor once, like convert, but quantizes each candidate
# with 8 targets (int8, int4-g32/g64/g128 sym and asym, keep) and writes only
# the config, so it is compute-bound: the page cache is left warm (the
# checkpoint is read once before timing) and the ratio is mostly the kernel
# work. Threads: all cores unless NIBBLE_BENCH_THREADS is set.
#
# Usage: benchmarks/plan_bench.sh            (from any directory)
# Environment:
#   NIBBLE_BENCH_DIR      work directory (default /tmp/nibble-plan-bench); the
#                         checkpoint in it (ckpt/) is reused when complete
#   NIBBLE_BENCH_RUNS     runs of each operation (default 3; the median is shown)
#   NIBBLE_BENCH_SIZE     checkpoint size for --min-size (default 512MB)
#   NIBBLE_BENCH_BPW      --target-bpw of the plan (default 4.5)
#   NIBBLE_BENCH_THREADS  --threads for every command (default: all cores)
#   NIBBLE_BENCH_KEEP     1 keeps the checkpoint and outputs (default: deleted)
#   NIBBLE                nibble binary (default: build/tools/nibble/nibble, then
#                         build-bench/tools/nibble/nibble, under the repo root)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${NIBBLE_BENCH_DIR:-/tmp/nibble-plan-bench}"
runs="${NIBBLE_BENCH_RUNS:-3}"
size="${NIBBLE_BENCH_SIZE:-512MB}"
bpw="${NIBBLE_BENCH_BPW:-4.5}"
keep="${NIBBLE_BENCH_KEEP:-0}"
threads=()
if [[ -n "${NIBBLE_BENCH_THREADS:-}" ]]; then threads=(--threads "$NIBBLE_BENCH_THREADS"); fi

die() { echo "plan_bench: $*" >&2; exit 1; }

nibble="${NIBBLE:-}"
if [[ -z "$nibble" ]]; then
  for cand in "$root/build/tools/nibble/nibble" "$root/build-bench/tools/nibble/nibble"; do
    if [[ -x "$cand" ]]; then nibble="$cand"; break; fi
  done
fi
[[ -n "$nibble" && -x "$nibble" ]] ||
  die "no nibble binary; build it (bash scripts/build.sh) or set NIBBLE"
[[ -x /usr/bin/time ]] || die "/usr/bin/time missing: run scripts/setup-deps.sh (Debian package 'time')"
py="$root/.venv/bin/python"
[[ -x "$py" ]] || bash "$root/scripts/setup-venv.sh" >&2
[[ -x "$py" ]] || die "no venv python at $py (scripts/setup-venv.sh failed?)"

ckpt="$dir/ckpt"
stamp="$dir/ckpt.done"
want="hidden=2048 intermediate=5632 vocab=32000 heads=32 kv=4 dtype=f16 size=$size"
mkdir -p "$dir"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "plan_bench: reusing $ckpt" >&2
else
  rm -rf "$ckpt" "$stamp"
  echo "plan_bench: generating $ckpt ($want)" >&2
  "$py" "$root/scripts/make_checkpoint.py" "$ckpt" --hidden 2048 --intermediate 5632 \
    --vocab 32000 --heads 32 --kv-heads 4 --dtype f16 --stream --min-size "$size" >&2
  printf '%s\n' "$want" >"$stamp"
fi
ckpt_bytes=$(du -sb "$ckpt" | cut -f1)

cleanup() {
  rm -rf "$dir"/.out*.nibble-tmp-* "$dir"/time-*.txt
  if [[ "$keep" != 1 ]]; then
    rm -rf "$dir/out" "$dir/out-plan" "$dir/plan.toml" "$dir/plan.json" "$ckpt" "$stamp"
    rmdir "$dir" 2>/dev/null || true
  fi
}
trap cleanup EXIT

# Warm the page cache once: every timed run then reads from memory.
cat "$ckpt"/*.safetensors >/dev/null

declare -A results
run_one() {
  local name="$1"; shift
  local tf="$dir/time-$name.txt"
  rm -rf "$dir/out" "$dir/out-plan"
  sync
  /usr/bin/time -v -o "$tf" bash -c '"$@" && sync' bash "$@" >/dev/null ||
    { cat "$tf" >&2; die "$name failed"; }
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {
          n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$tf")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
  results[$name]+="$wall $rss"$'\n'
  printf 'plan_bench: %-8s wall %7.2f s  peak RSS %6d MB\n' "$name" "$wall" "$((rss / 1024))" >&2
}

echo "plan_bench: $nibble; checkpoint $ckpt_bytes bytes; $runs runs each; $(nproc) cores" >&2
for ((r = 1; r <= runs; r++)); do
  run_one convert "$nibble" convert "$ckpt" "$dir/out" --scheme int4 --force --quiet "${threads[@]}"
  run_one plan "$nibble" plan "$ckpt" --target-bpw "$bpw" -o "$dir/plan.toml" \
    --json "$dir/plan.json" -q "${threads[@]}"
  run_one apply "$nibble" convert "$ckpt" "$dir/out-plan" --config "$dir/plan.toml" --force \
    --quiet "${threads[@]}"
done

median() { sort -g | awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}'; }

conv_wall=$(col convert 1 | median)
echo
echo "Checkpoint: $(awk -v b="$ckpt_bytes" 'BEGIN {printf "%.2f GB", b / 1e9}') FP16 Llama-shaped" \
  "(TinyLlama-1.1B dims); median of $runs runs; warm page cache; $(nproc) cores;" \
  "threads: ${NIBBLE_BENCH_THREADS:-all}."
echo
echo "| operation | median wall (s) | ratio to convert | peak RSS (MB) |"
echo "|---|---:|---:|---:|"
for name in convert plan apply; do
  w=$(col "$name" 1 | median)
  m=$(col "$name" 2 | median)
  case "$name" in
    convert) label="nibble convert --scheme int4-g128 + sync" ;;
    plan) label="nibble plan --target-bpw $bpw" ;;
    apply) label="nibble convert --config plan.toml + sync" ;;
  esac
  awk -v l="$label" -v w="$w" -v c="$conv_wall" -v m="$m" \
    'BEGIN {printf "| %s | %.2f | %.2fx | %.0f |\n", l, w, w / c, m / 1024}'
done
echo
# The plan's own figures, and a check that the applied plan has the size
# it predicted.
"$py" - "$dir/plan.json" "$dir/out-plan" <<'EOF'
import json, struct, sys
from pathlib import Path
p = json.load(open(sys.argv[1]))
written = 0
for f in Path(sys.argv[2]).glob("*.safetensors"):
    with open(f, "rb") as fh:
        h = json.loads(fh.read(struct.unpack("<Q", fh.read(8))[0]))
    written += sum(v["data_offsets"][1] - v["data_offsets"][0]
                   for k, v in h.items() if k != "__metadata__")
pr, s = p["predicted"], p["solver"]
print(f"plan: {pr['bytes']:,} bytes predicted, {written:,} written by convert --config "
      f"({'equal' if written == pr['bytes'] else 'DIFFERENT'}); {pr['bits_per_weight']:.4f} bits "
      f"per weight; squared error {pr['sse']:.4e}; solver {s['method']}, {s['groups']} groups, "
      f"unit {s['granularity']} bytes, exact {s['exact']}, LP bound {s['lower_bound_sse']:.4e}")
print()
print("| uniform scheme | embeddings | bytes | bits/weight | squared error | vs plan | fits |")
print("|---|---|---:|---:|---:|---:|---|")
for u in p["uniform"]:
    print(f"| {u['scheme']} | {u['embeddings']} | {u['bytes']:,} | {u['bits_per_weight']:.3f} | "
          f"{u['sse']:.4e} | {u['sse'] / pr['sse']:.2f}x | {'yes' if u['fits'] else 'no'} |")
EOF
