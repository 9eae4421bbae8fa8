#!/usr/bin/env bash
# expect.sh RC [-e REGEX]... [-n REGEX]... -- COMMAND [ARGS...]
#
# Runs COMMAND and passes only when it exits with exactly RC, its stdout and
# stderr together match every -e extended regex and none of the -n ones. When
# RC is not 0, stderr must also hold exactly one "nibble: error: " line (the
# tool's one-line error report). Prints what it saw on failure.
set -uo pipefail

if [[ $# -lt 3 ]]; then
  echo "usage: expect.sh RC [-e REGEX]... [-n REGEX]... -- COMMAND [ARGS...]" >&2
  exit 2
fi
want_rc="$1"
shift
must=()
must_not=()
while [[ $# -gt 0 && "$1" != "--" ]]; do
  case "$1" in
    -e) must+=("$2"); shift 2 ;;
    -n) must_not+=("$2"); shift 2 ;;
    *) echo "expect.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [[ $# -lt 2 || "$1" != "--" ]]; then
  echo "expect.sh: missing -- COMMAND" >&2
  exit 2
fi
shift

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$@" >"$tmp/out" 2>"$tmp/err"
rc=$?
cat "$tmp/out" "$tmp/err" >"$tmp/all"

fail() {
  echo "FAIL: $*"
  echo "--- command:"; printf ' %q' "${cmd[@]}"; echo
  echo "--- exit code: $rc (expected $want_rc)"
  echo "--- stdout:"; cat "$tmp/out"
  echo "--- stderr:"; cat "$tmp/err"
  exit 1
}
cmd=("$@")

[[ "$rc" == "$want_rc" ]] || fail "exit code $rc, expected $want_rc"
for re in "${must[@]+"${must[@]}"}"; do
  grep -Eq -- "$re" "$tmp/all" || fail "no line matches /$re/"
done
for re in "${must_not[@]+"${must_not[@]}"}"; do
  if grep -Eq -- "$re" "$tmp/all"; then fail "a line matches /$re/"; fi
done
if [[ "$want_rc" != 0 ]]; then
  n="$(grep -c '^nibble: error: ' "$tmp/err" || true)"
  [[ "$n" == 1 ]] || fail "expected one 'nibble: error:' line on stderr, got $n"
fi
echo "ok (exit $rc)"
