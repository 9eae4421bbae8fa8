#!/usr/bin/env bash
# Streaming benchmark of `nibble convert` (issue 3, "Scale and feel").
#
# Generates (or reuses) a >= 2 GB FP16 Llama-shaped safetensors checkpoint,
# written by scripts/make_checkpoint.py --stream (the `safetensors` layout,
# not nibble's writer), then, in one run and alternating, times
#   cp       the checkpoint directory to a fresh directory, then sync
#   int4     nibble convert IN OUT --scheme int4 --force, then sync
#   int8     nibble convert IN OUT --scheme int8 --force, then sync
# each under /usr/bin/time -v (wall time and "Maximum resident set size"),
# and prints a markdown table of the medians: wall time as a ratio to cp (the
# issue's target: at most 1.5x) and peak RSS (target: under 1 GB).
#
# Before every run the previous output is deleted, dirty pages are synced and,
# when permitted (root), the page cache is dropped, so each run reads its
# input from disk; otherwise all runs see the same warm cache, and the table
# says which.
#
# Usage: benchmarks/convert_bench.sh            (from any directory)
# Environment:
#   NIBBLE_BENCH_DIR   work directory (default /tmp/nibble-convert-bench); the
#                      checkpoint in it (ckpt/) is reused when complete
#   NIBBLE_BENCH_RUNS  runs of each operation (default 3; the median is shown)
#   NIBBLE_BENCH_KEEP  1 keeps the checkpoint and the last outputs (default: all deleted)
#   NIBBLE_BENCH_SIZE  checkpoint size for --min-size (default 2GB)
#   NIBBLE_BENCH_SCHEMES  schemes to convert to (default "int4 int8")
#   NIBBLE             nibble binary (default: build/tools/nibble/nibble, then
#                      build-bench/tools/nibble/nibble, under the repo root)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${NIBBLE_BENCH_DIR:-/tmp/nibble-convert-bench}"
runs="${NIBBLE_BENCH_RUNS:-3}"
keep="${NIBBLE_BENCH_KEEP:-0}"
size="${NIBBLE_BENCH_SIZE:-2GB}"
read -r -a schemes <<<"${NIBBLE_BENCH_SCHEMES:-int4 int8}"

die() { echo "convert_bench: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
nibble="${NIBBLE:-}"
if [[ -z "$nibble" ]]; then
  for cand in "$root/build/tools/nibble/nibble" "$root/build-bench/tools/nibble/nibble"; do
    if [[ -x "$cand" ]]; then nibble="$cand"; break; fi
  done
fi
[[ -n "$nibble" && -x "$nibble" ]] ||
  die "no nibble binary; build it (cmake -S $root -B $root/build -G Ninja && cmake --build $root/build) or set NIBBLE"
[[ -x /usr/bin/time ]] || die "/usr/bin/time missing: run scripts/setup-deps.sh (Debian package 'time')"
py="$root/.venv/bin/python"
if [[ ! -x "$py" ]]; then
  bash "$root/scripts/setup-venv.sh" >&2
fi
[[ -x "$py" ]] || die "no venv python at $py (scripts/setup-venv.sh failed?)"

# --- checkpoint ----------------------------------------------------------------
# TinyLlama-1.1B shape (hidden 2048, intermediate 5632, vocab 32000, 4 KV
# heads); --min-size adds layers until the tensors reach $size.
ckpt="$dir/ckpt"
stamp="$dir/ckpt.done"
want="hidden=2048 intermediate=5632 vocab=32000 heads=32 kv=4 dtype=f16 size=$size"
mkdir -p "$dir"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "convert_bench: reusing $ckpt" >&2
else
  rm -rf "$ckpt" "$stamp"
  echo "convert_bench: generating $ckpt ($want)" >&2
  "$py" "$root/scripts/make_checkpoint.py" "$ckpt" --hidden 2048 --intermediate 5632 \
    --vocab 32000 --heads 32 --kv-heads 4 --dtype f16 --stream --min-size "$size" >&2
  printf '%s\n' "$want" >"$stamp"
fi
ckpt_bytes=$(du -sb "$ckpt" | cut -f1)
nfiles=$(find "$ckpt" -name '*.safetensors' | wc -l)
[[ "$nfiles" -ge 1 ]] || die "no .safetensors in $ckpt"

# --- timing --------------------------------------------------------------------
cleanup() {
  rm -rf "$dir"/.out-*.nibble-tmp-* "$dir"/time-*.txt
  if [[ "$keep" != 1 ]]; then
    rm -rf "$dir/out-cp" "${schemes[@]/#/$dir/out-}" "$ckpt" "$stamp"
    rmdir "$dir" 2>/dev/null || true
  fi
}
trap cleanup EXIT

can_drop=0
if sync && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then can_drop=1; fi

# Before each run: remove the output, flush, drop the page cache if we can.
prepare() {
  rm -rf "$1" "$dir"/.out-*.nibble-tmp-*
  sync
  if [[ "$can_drop" == 1 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# run NAME OUTDIR CMD...: times CMD followed by sync; appends "wall rss_kb out_bytes".
declare -A results
run_one() {
  local name="$1" out="$2"; shift 2
  local tf="$dir/time-$name.txt"
  prepare "$out"
  /usr/bin/time -v -o "$tf" bash -c '"$@" && sync' bash "$@" >/dev/null ||
    { cat "$tf" >&2; die "$name failed"; }
  local wall rss
  # "Elapsed (wall clock) time (h:mm:ss or m:ss): 0:12.34"
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {
          n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$tf")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
  local bytes
  bytes=$(du -sb "$out" | cut -f1)
  results[$name]+="$wall $rss $bytes"$'\n'
  printf 'convert_bench: %-5s wall %7.2f s  peak RSS %6d MB  out %s bytes\n' \
    "$name" "$wall" "$((rss / 1024))" "$bytes" >&2
}

echo "convert_bench: $nibble; checkpoint $ckpt_bytes bytes in $nfiles file(s); $runs runs each;" \
  "page cache $([[ $can_drop == 1 ]] && echo dropped before every run || echo NOT dropped: not permitted, warm cache)" >&2
for ((r = 1; r <= runs; r++)); do
  run_one cp "$dir/out-cp" cp -r "$ckpt" "$dir/out-cp"
  for s in "${schemes[@]}"; do
    run_one "$s" "$dir/out-$s" "$nibble" convert "$ckpt" "$dir/out-$s" --scheme "$s" --force --quiet
  done
done

# --- table ---------------------------------------------------------------------
median() { sort -g | awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}'; }

cp_wall=$(col cp 1 | median)
echo
echo "Checkpoint: $(awk -v b="$ckpt_bytes" 'BEGIN {printf "%.2f GB", b / 1e9}') FP16 Llama-shaped" \
  "(TinyLlama-1.1B dims, $nfiles file(s)); median of $runs runs; each operation ends with sync;" \
  "page cache $([[ $can_drop == 1 ]] && echo 'dropped before every run (cold)' || echo 'not dropped (warm, not permitted)');" \
  "$(nproc) cores."
echo
echo "| operation | median wall (s) | ratio to cp | peak RSS (MB) | output size (MB) |"
echo "|---|---:|---:|---:|---:|"
for name in cp "${schemes[@]}"; do
  w=$(col "$name" 1 | median)
  m=$(col "$name" 2 | median)
  b=$(col "$name" 3 | median)
  if [[ "$name" == cp ]]; then label="cp -r + sync"; else label="nibble convert --scheme $name + sync"; fi
  awk -v l="$label" -v w="$w" -v c="$cp_wall" -v m="$m" -v b="$b" \
    'BEGIN {printf "| %s | %.2f | %.2fx | %.0f | %.0f |\n", l, w, w / c, m / 1024, b / 1e6}'
done
