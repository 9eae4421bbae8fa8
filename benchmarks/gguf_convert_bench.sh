#!/usr/bin/env bash
# Streaming benchmark of `nibble convert IN.gguf OUT.gguf` (issue 4).
#
# Generates (or reuses) a >= 2 GB F16 Llama-shaped GGUF, written tensor by
# tensor by scripts/make_gguf_checkpoint.py (its own GGUF layout code, not
# nibble's writer), then, in one run and alternating, times
#   cp       the file to a fresh name, then sync
#   q4_0     nibble convert IN OUT.gguf --scheme q4_0 --force, then sync
#   q8_0     nibble convert IN OUT.gguf --scheme q8_0 --force, then sync
# each under /usr/bin/time -v (wall time and "Maximum resident set size"),
# and prints a markdown table of the medians: wall time as a ratio to cp, peak
# RSS and output size.
#
# Before every run the previous output is deleted, dirty pages are synced and,
# when permitted (root with a writable /proc/sys/vm/drop_caches), the page
# cache is dropped, so each run reads its input from disk; otherwise all runs
# see the same warm cache, and the table says which.
#
# Usage: benchmarks/gguf_convert_bench.sh            (from any directory)
# Environment:
#   NIBBLE_BENCH_DIR      work directory (default /tmp/nibble-gguf-bench); the
#                         model in it is reused when complete
#   NIBBLE_BENCH_RUNS     runs of each operation (default 3; the median is shown)
#   NIBBLE_BENCH_KEEP     1 keeps the model and the last outputs (default: all deleted)
#   NIBBLE_BENCH_SIZE     tensor bytes for --min-size (default 2GB)
#   NIBBLE_BENCH_SCHEMES  schemes to convert to (default "q4_0 q8_0")
#   NIBBLE_BENCH_THREADS  --threads for nibble (default: all cores)
#   NIBBLE                nibble binary (default: build/tools/nibble/nibble, then
#                         build-bench/tools/nibble/nibble, under the repo root)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${NIBBLE_BENCH_DIR:-/tmp/nibble-gguf-bench}"
runs="${NIBBLE_BENCH_RUNS:-3}"
keep="${NIBBLE_BENCH_KEEP:-0}"
size="${NIBBLE_BENCH_SIZE:-2GB}"
threads="${NIBBLE_BENCH_THREADS:-}"
read -r -a schemes <<<"${NIBBLE_BENCH_SCHEMES:-q4_0 q8_0}"

die() { echo "gguf_convert_bench: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
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
if [[ ! -x "$py" ]]; then
  bash "$root/scripts/setup-venv.sh" >&2
fi
[[ -x "$py" ]] || die "no venv python at $py (scripts/setup-venv.sh failed?)"
thread_args=()
if [[ -n "$threads" ]]; then thread_args=(--threads "$threads"); fi

# --- model ---------------------------------------------------------------------
# TinyLlama-1.1B shape (hidden 2048, intermediate 5632, vocab 32000, 4 KV
# heads, untied output); --min-size adds layers until the tensors reach $size.
model="$dir/model-f16.gguf"
stamp="$dir/model.done"
want="hidden=2048 intermediate=5632 vocab=32000 heads=32 kv=4 dtype=f16 size=$size v1"
mkdir -p "$dir"
if [[ -f "$stamp" && -f "$model" && "$(cat "$stamp")" == "$want" ]]; then
  echo "gguf_convert_bench: reusing $model" >&2
else
  rm -f "$model" "$stamp"
  echo "gguf_convert_bench: generating $model ($want)" >&2
  "$py" "$root/scripts/make_gguf_checkpoint.py" "$model" --hidden 2048 --intermediate 5632 \
    --vocab 32000 --heads 32 --kv-heads 4 --dtype f16 --min-size "$size" >&2
  printf '%s\n' "$want" >"$stamp"
fi
model_bytes=$(stat -c %s "$model")

# --- timing --------------------------------------------------------------------
cleanup() {
  rm -f "$dir"/.out-*.gguf.nibble-tmp-* "$dir"/time-*.txt
  if [[ "$keep" != 1 ]]; then
    rm -f "$dir/out-cp.gguf" "${schemes[@]/#/$dir/out-}" "$dir"/out-*.gguf "$model" "$stamp"
    rmdir "$dir" 2>/dev/null || true
  fi
}
trap cleanup EXIT

can_drop=0
if sync && { echo 3 >/proc/sys/vm/drop_caches; } 2>/dev/null; then can_drop=1; fi

prepare() {
  rm -f "$1" "$dir"/.out-*.gguf.nibble-tmp-*
  sync
  if [[ "$can_drop" == 1 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
}

# run_one NAME OUTFILE CMD...: times CMD followed by sync; appends "wall rss_kb out_bytes".
declare -A results
run_one() {
  local name="$1" out="$2"; shift 2
  local tf="$dir/time-$name.txt"
  prepare "$out"
  /usr/bin/time -v -o "$tf" bash -c '"$@" && sync' bash "$@" >/dev/null ||
    { cat "$tf" >&2; die "$name failed"; }
  local wall rss bytes
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {
          n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; print s }' "$tf")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tf")
  bytes=$(stat -c %s "$out")
  results[$name]+="$wall $rss $bytes"$'\n'
  printf 'gguf_convert_bench: %-5s wall %7.2f s  peak RSS %6d MB  out %s bytes\n' \
    "$name" "$wall" "$((rss / 1024))" "$bytes" >&2
}

echo "gguf_convert_bench: $nibble; model $model_bytes bytes; $runs runs each;" \
  "page cache $([[ $can_drop == 1 ]] && echo dropped before every run || echo NOT dropped: not permitted, warm cache)" >&2
for ((r = 1; r <= runs; r++)); do
  run_one cp "$dir/out-cp.gguf" cp "$model" "$dir/out-cp.gguf"
  for s in "${schemes[@]}"; do
    run_one "$s" "$dir/out-$s.gguf" "$nibble" convert "$model" "$dir/out-$s.gguf" \
      --scheme "$s" --force --quiet "${thread_args[@]}"
  done
done

# --- table ---------------------------------------------------------------------
median() { sort -g | awk '{v[NR] = $1} END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
col() { printf '%s' "${results[$1]}" | awk -v c="$2" 'NF {print $c}'; }

cp_wall=$(col cp 1 | median)
echo
echo "Model: $(awk -v b="$model_bytes" 'BEGIN {printf "%.2f GB", b / 1e9}') F16 GGUF, Llama-shaped" \
  "(TinyLlama-1.1B dims); median of $runs runs; each operation ends with sync;" \
  "page cache $([[ $can_drop == 1 ]] && echo 'dropped before every run (cold)' || echo 'not dropped (warm, not permitted)');" \
  "$(nproc) cores${threads:+, --threads $threads}."
echo
echo "| operation | median wall (s) | ratio to cp | peak RSS (MB) | output size (MB) |"
echo "|---|---:|---:|---:|---:|"
for name in cp "${schemes[@]}"; do
  w=$(col "$name" 1 | median)
  m=$(col "$name" 2 | median)
  b=$(col "$name" 3 | median)
  if [[ "$name" == cp ]]; then label="cp + sync"; else label="nibble convert --scheme $name + sync"; fi
  awk -v l="$label" -v w="$w" -v c="$cp_wall" -v m="$m" -v b="$b" \
    'BEGIN {printf "| %s | %.2f | %.2fx | %.0f | %.0f |\n", l, w, w / c, m / 1024, b / 1e6}'
done
