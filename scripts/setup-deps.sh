#!/usr/bin/env bash
# Installs the Debian 12 packages that nibble needs to build, test and
# benchmark. Idempotent: when every package is already installed it touches
# nothing (and needs no network). Runs apt-get directly as root, through sudo
# otherwise. Set NIBBLE_SKIP_SETUP=1 to skip it entirely.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build
  libeigen3-dev libomp-dev
  libcli11-dev libspdlog-dev nlohmann-json3-dev libtomlplusplus-dev libre2-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  python3 python3-venv time gdb
)

if [[ "${NIBBLE_SKIP_SETUP:-0}" == 1 ]]; then
  exit 0
fi
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "setup-deps: no apt-get here; install the equivalents of: ${PACKAGES[*]}" >&2
  exit 0
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != *" installed" ]]; then
    missing+=("$pkg")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
  as_root=(env DEBIAN_FRONTEND=noninteractive)
elif command -v sudo >/dev/null 2>&1; then
  as_root=(sudo env DEBIAN_FRONTEND=noninteractive)
else
  echo "setup-deps: missing ${missing[*]}; run this script as root or install sudo" >&2
  exit 1
fi

echo "setup-deps: installing ${missing[*]}"
"${as_root[@]}" apt-get update -qq >/dev/null
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-deps: done"
