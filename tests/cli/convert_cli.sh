#!/usr/bin/env bash
# convert_cli.sh NIBBLE PYTHON CASE: one `nibble convert` CLI test in a fresh
# directory under the current one. Exits 0 when the case passes.
set -uo pipefail
nibble="$1"; python="$2"; case_name="$3"
here="$(cd "$(dirname "$0")" && pwd)"
work="$PWD/convert-$case_name"
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
"$python" "$here/make_tiny_safetensors.py" in || { echo "cannot make the checkpoint"; exit 1; }
fail() { echo "FAIL ($case_name): $*"; echo "--- stdout"; cat out.txt 2>/dev/null; echo "--- stderr"; cat err.txt 2>/dev/null; exit 1; }
# Nothing but `in` (and the expected output) may be left in the directory.
only() { local got; got="$(ls -A | grep -v -e '^out.txt$' -e '^err.txt$' | tr '\n' ' ')"; [[ "$got" == "$* " ]] || fail "left: '$got', expected '$* '"; }
run() { "$nibble" convert "$@" >out.txt 2>err.txt; echo $?; }
case "$case_name" in
  ok)
    mkdir -p in/1_Pooling && echo '{"pooling": true}' > in/1_Pooling/config.json
    echo '{"tok": 1}' > in/tokenizer.json
    rc=$(run in out --report r.json --csv r.csv)
    [[ $rc == 0 ]] || fail "rc $rc"
    [[ -f out/model.safetensors && -f out/config.json ]] || fail "no output"
    grep -q '"quantization_config"' out/config.json || fail "no quantization_config"
    grep -q '"lm_head"' out/config.json || fail "lm_head not in ignore"
    grep -q '"tensors"' r.json && grep -q '"totals"' r.json || fail "report keys"
    [[ $(wc -l < r.csv) == 4 ]] || fail "csv rows"
    grep -q '^total: 3 tensors (1 quantized)' out.txt || fail "summary line"
    cmp in/tokenizer.json out/tokenizer.json || fail "tokenizer.json not copied"
    cmp in/1_Pooling/config.json out/1_Pooling/config.json || fail "subdirectory not copied"
    only in out r.csv r.json ;;
  file_input)
    rc=$(run in/model.safetensors out --scheme int4-g32 --quiet)
    [[ $rc == 0 ]] || fail "rc $rc"
    [[ ! -s out.txt ]] || fail "--quiet printed"
    [[ "$(ls out | tr '\n' ' ')" == "config.json model.safetensors " ]] || fail "files: $(ls out)"
    "$python" -c 'import json,sys; c=json.load(open("out/config.json")); assert list(c)==["quantization_config"], c; g=c["quantization_config"]["config_groups"]["group_0"]; assert g["weights"]["num_bits"]==4 and g["weights"]["group_size"]==32, g' || fail "config.json"
    only in out ;;
  dry_run)
    rc=$(run in out --dry-run)
    [[ $rc == 0 ]] || fail "rc $rc"
    grep -q 'model.layers.0.mlp.up_proj.weight' out.txt || fail "plan not printed"
    only in ;;
  existing_output)
    mkdir out && touch out/keep
    rc=$(run in out)
    [[ $rc == 1 ]] || fail "rc $rc"
    grep -q 'exists' err.txt || fail "message"
    [[ -f out/keep ]] || fail "output touched"
    only in out ;;
  output_inside_input)
    rc=$(run in in/sub)
    [[ $rc == 1 ]] || fail "rc $rc"
    [[ ! -e in/sub ]] || fail "wrote inside the input"
    rc=$(run in/model.safetensors in --force)
    [[ $rc == 1 ]] || fail "rc $rc for OUT containing IN"
    [[ -f in/model.safetensors ]] || fail "input removed"
    only in ;;
  bad_input)
    printf 'not a checkpoint at all' > bad.safetensors
    rc=$(run bad.safetensors out)
    [[ $rc == 2 ]] || fail "rc $rc"
    [[ $(grep -c 'nibble: error: ' err.txt) == 1 ]] || fail "not one error line"
    grep -q 'bad.safetensors' err.txt || fail "file not named"
    only bad.safetensors in ;;
  missing_input)
    rc=$(run nowhere out)
    [[ $rc == 3 ]] || fail "rc $rc"
    only in ;;
  *) echo "unknown case $case_name"; exit 2 ;;
esac
echo "ok ($case_name)"
