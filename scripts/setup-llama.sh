#!/usr/bin/env bash
# Adds a real llama.cpp runtime to nibble's Python venv: first runs
# scripts/setup-venv.sh, then installs scripts/requirements-llama.txt into the
# same venv (NIBBLE_VENV, default repo-root/.venv), every package with
# --no-deps. llama-cpp-python has no Linux wheel on PyPI, so pip builds its
# sdist (llama.cpp vendored) with CMake and GCC: CPU only, the library
# (libllama, libggml) and nothing else: no tools, tests, examples, server,
# multimodal library, or llama.cpp's "common" helper library (the Python
# bindings never load it). About 5 minutes on 2 cores (NIBBLE_LLAMA_JOBS sets
# the parallel jobs, default 2); NIBBLE_LLAMA_CMAKE_ARGS adds CMake arguments.
# Nothing is cached between runs outside the venv (pip runs with
# --no-cache-dir).
#
# Idempotent and offline once done: a stamp file in the venv records the hash
# of requirements-llama.txt, the CMake arguments and the interpreter, and when
# it matches (and llama_cpp is importable) nothing is installed. Prints the
# venv's path on its last line.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${NIBBLE_VENV:-$root/.venv}"
req="$root/scripts/requirements-llama.txt"
stamp="$venv/.nibble-llama.sha256"
jobs="${NIBBLE_LLAMA_JOBS:-2}"

bash "$root/scripts/setup-venv.sh" >&2

# Same lock as setup-venv.sh (taken only after it returned: flock on a second
# descriptor of the same file would wait for ourselves), so no other
# setup-venv.sh or setup-llama.sh installs into this venv meanwhile.
if command -v flock >/dev/null 2>&1; then
  lock="${TMPDIR:-/tmp}/nibble-venv-$(printf '%s' "$venv" | sha256sum | cut -c1-16).lock"
  exec 9>"$lock"
  flock 9
fi

# -DGGML_NATIVE is left at its default (ON): the library is built on the
# machine that runs it and nothing is cached, so -march=native is safe.
cmake_args=(
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF
  -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF
  -DLLAVA_BUILD=OFF -DGGML_BLAS=OFF
)
# llama-cpp-python's CMakeLists forces the cache variable LLAMA_BUILD_COMMON
# ON, although the Python package never loads libllama-common (its largest
# and slowest part to compile, with cpp-httplib). A normal variable set in
# llama.cpp's own directory scope, through CMake's standard per-project
# include hook (run right after its project() call), takes precedence over the
# cache variable there, so neither is configured, built nor installed.
marker='set(LLAMA_BUILD_COMMON OFF)'
# shellcheck disable=SC2206  # split on purpose: a list of -D arguments
cmake_args+=(${NIBBLE_LLAMA_CMAKE_ARGS:-})

python_version="$("$venv/bin/python" -c 'import sys; print(sys.version)')"
want="$( { cat "$req"; printf '%s\n' "${cmake_args[@]}" "$marker" "$python_version"; } \
  | sha256sum | cut -d' ' -f1)"
has_llama='import importlib.util, sys; sys.exit(importlib.util.find_spec("llama_cpp") is None)'
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && "$venv/bin/python" -c "$has_llama" >/dev/null 2>&1; then
  echo "setup-llama: up to date"
  echo "$venv"
  exit 0
fi

rm -f "$stamp"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
printf '%s\n' "$marker" >"$work/skip-common.cmake"
cmake_args+=("-DCMAKE_PROJECT_llama.cpp_INCLUDE=$work/skip-common.cmake")

pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check
     --no-input --no-deps --no-cache-dir)
# The build backend first: the sdist is built without build isolation.
grep -iE '^(scikit-build-core|pathspec|exceptiongroup|tomli)==' "$req" >"$work/build.txt"
"${pip[@]}" -r "$work/build.txt"
# pip keeps an installed llama-cpp-python of the pinned version even when the
# CMake arguments changed: remove it, so that a stale stamp always rebuilds.
"$venv/bin/python" -m pip uninstall --quiet --disable-pip-version-check --yes \
  llama-cpp-python >/dev/null 2>&1 || true

echo "setup-llama: building llama-cpp-python from source with $jobs jobs" \
  "(a few minutes; log in $work/build.log until it ends)"
start=$SECONDS
if ! CMAKE_ARGS="${cmake_args[*]}" CMAKE_BUILD_PARALLEL_LEVEL="$jobs" \
    "${pip[@]/--quiet/--verbose}" --no-build-isolation --no-binary llama-cpp-python \
    -r "$req" >"$work/build.log" 2>&1; then
  tail -n 60 "$work/build.log" >&2
  echo "setup-llama: pip install -r $req failed (last lines above)" >&2
  exit 1
fi
"$venv/bin/python" -c 'import llama_cpp; print("setup-llama: llama_cpp", llama_cpp.__version__,
  "from", llama_cpp.__file__)'
echo "$want" >"$stamp"
echo "setup-llama: done in $((SECONDS - start)) s"
echo "$venv"
