#!/usr/bin/env bash
# Every test, from a fresh Debian 12 machine: installs the dependencies,
# builds (Release, warnings as errors) and runs ctest, which ends with
# "100% tests passed, 0 tests failed out of N". Extra arguments go to ctest,
# e.g. bash scripts/test.sh -R cli
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build_dir="${NIBBLE_BUILD_DIR:-$root/build}"

bash "$root/scripts/setup-deps.sh"
bash "$root/scripts/build.sh"
# The venv with a real llama.cpp runtime (llama-cpp-python, built from
# source once, ~3 min on 2 cores; a no-op afterwards); its end-to-end tests
# fail instead of skipping when it is missing.
bash "$root/scripts/setup-llama.sh" >/dev/null
export NIBBLE_REQUIRE_LLAMA=1
ctest --test-dir "$build_dir" --output-on-failure -j2 "$@"
