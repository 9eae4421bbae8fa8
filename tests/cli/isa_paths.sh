#!/usr/bin/env bash
# isa_paths.sh NIBBLE: every ISA path is either usable, through --isa and
# NIBBLE_ISA alike, and then reported by --version, or refused with exit 1
# and a message saying it is not supported.
set -uo pipefail
nibble="$1"
supported="$("$nibble" info | sed -n 's/^supported isas: //p')"
[[ -n "$supported" ]] || { echo "FAIL: no 'supported isas:' line"; exit 1; }
echo "supported: $supported"
status=0
for isa in scalar avx2 avx512; do
  for how in flag env; do
    if [[ $how == flag ]]; then
      out="$("$nibble" --isa "$isa" --version 2>&1)"; rc=$?; src="--isa"
    else
      out="$(NIBBLE_ISA="$isa" "$nibble" --version 2>&1)"; rc=$?; src="NIBBLE_ISA"
    fi
    if [[ " $supported " == *" $isa "* ]]; then
      if [[ $rc -ne 0 || "$out" != *"isa: $isa ($src)"* ]]; then
        echo "FAIL: $isa via $src: exit $rc: $out"; status=1
      fi
    else
      if [[ $rc -ne 1 || "$out" != *"not supported"* ]]; then
        echo "FAIL: unsupported $isa via $src: exit $rc: $out"; status=1
      fi
    fi
  done
done
[[ $status == 0 ]] && echo ok
exit $status
