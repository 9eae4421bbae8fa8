#!/usr/bin/env bash
# Configures and builds nibble (Release, warnings as errors) into build/.
# NIBBLE_BUILD_DIR overrides the directory; extra arguments go to the CMake
# configure step, e.g. bash scripts/build.sh -DNIBBLE_SANITIZE=address,undefined
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${NIBBLE_BUILD_DIR:-$root/build}"

generator=()
if [[ ! -f "$build_dir/CMakeCache.txt" ]] && command -v ninja >/dev/null 2>&1; then
  generator=(-G Ninja)
fi
jobs="$(nproc 2>/dev/null || echo 2)"

cmake -S "$root" -B "$build_dir" "${generator[@]}" \
  -DCMAKE_BUILD_TYPE=Release -DNIBBLE_WARNINGS_AS_ERRORS=ON "$@" >/dev/null
cmake --build "$build_dir" --parallel "$jobs"
