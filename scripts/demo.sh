#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: installs the dependencies,
# builds, and runs `nibble quantize` on a generated 4096x11008 FP16 matrix
# (LLM-shaped: Student-t entries with outlier columns), printing the error
# table of each scheme. Extra arguments go to `nibble quantize`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${NIBBLE_BUILD_DIR:-$root/build}"

bash "$root/scripts/setup-deps.sh"
bash "$root/scripts/build.sh"
"$build_dir/tools/nibble/nibble" quantize "$@"
