# Included at the end of tests/CMakeLists.txt: ctest tests that run the built
# `nibble` binary and check exit codes exactly (expect.sh), its output, and
# the files it writes. All are labelled "cli".
if(NOT TARGET nibble_cli)
  return()
endif()

find_program(NIBBLE_BASH bash REQUIRED)
find_package(Python3 COMPONENTS Interpreter)

set(_cli_dir ${CMAKE_CURRENT_LIST_DIR})
set(_cli_work ${CMAKE_CURRENT_BINARY_DIR}/cli-work)
file(MAKE_DIRECTORY ${_cli_work})
set(_nibble $<TARGET_FILE:nibble_cli>)
# A small matrix so that every test is quick.
set(_small --rows 8 --cols 64 --scheme int8)

# nibble_cli_test(NAME RC [-e REGEX]... [-n REGEX]... -- ARGS...)
# Runs `nibble ARGS...` and expects exit code RC and the regexes.
function(nibble_cli_test name rc)
  add_test(NAME cli.${name}
    COMMAND ${NIBBLE_BASH} ${_cli_dir}/expect.sh ${rc} ${ARGN}
    WORKING_DIRECTORY ${_cli_work})
  set_tests_properties(cli.${name} PROPERTIES LABELS cli TIMEOUT 120)
endfunction()

# Version, info, help.
nibble_cli_test(version 0 -e "^nibble [0-9]+[.][0-9]+[.][0-9]+$"
  -e "^isa: (scalar|avx2|avx512) [(](auto|NIBBLE_ISA)[)]$" -e "^cpu: "
  -- ${_nibble} --version)
nibble_cli_test(info 0 -e "^isa: (scalar|avx2|avx512)"
  -e "^supported isas: scalar" -e "^openmp max threads: [1-9]"
  -- ${_nibble} info)
nibble_cli_test(help 0 -e "quantize" -e "info" -e "Exit codes"
  -- ${_nibble} --help)
nibble_cli_test(quantize_help 0 -e "--rows" -e "--cols" -e "--dtype"
  -e "--scheme" -e "--scale-dtype" -e "--threads" -e "--isa" -e "--json"
  -e "--csv" -e "--quiet" -e "--distribution" -e "--seed"
  -- ${_nibble} quantize --help)
nibble_cli_test(no_subcommand 1 -e "Usage" -e "no subcommand given"
  -- ${_nibble})

# Usage errors: exit 1 with one line naming the problem.
nibble_cli_test(threads_zero 1 -e "--threads must be at least 1, got 0"
  -- ${_nibble} quantize ${_small} --threads 0)
nibble_cli_test(threads_negative 1 -e "--threads must be at least 1, got -1"
  -- ${_nibble} quantize ${_small} --threads -1)
nibble_cli_test(seed_negative 1 -e "--seed"
  -- ${_nibble} quantize ${_small} --seed -1)
nibble_cli_test(threads_too_many 1 -e "--threads must be at most"
  -- ${_nibble} quantize ${_small} --threads 100000)
nibble_cli_test(threads_not_a_number 1 -e "--threads"
  -- ${_nibble} quantize ${_small} --threads two)
nibble_cli_test(isa_bogus 1 -e "--isa" -- ${_nibble} --isa bogus --version)
nibble_cli_test(quantize_isa_bogus 1 -e "--isa"
  -- ${_nibble} quantize ${_small} --isa bogus)
nibble_cli_test(env_isa_bogus 1 -e "NIBBLE_ISA=bogus"
  -- ${CMAKE_COMMAND} -E env NIBBLE_ISA=bogus ${_nibble} --version)
nibble_cli_test(env_isa_bogus_quantize 1 -e "NIBBLE_ISA=bogus"
  -- ${CMAKE_COMMAND} -E env NIBBLE_ISA=bogus ${_nibble} quantize ${_small})
nibble_cli_test(unknown_scheme 1 -e "unknown scheme 'int3'"
  -- ${_nibble} quantize --rows 8 --cols 64 --scheme int8,int3)
nibble_cli_test(empty_scheme 1 -e "empty scheme"
  -- ${_nibble} quantize --rows 8 --cols 64 --scheme int8,,int4)
nibble_cli_test(scheme_cols_mismatch 1 -e "not a multiple of the group size"
  -- ${_nibble} quantize --rows 8 --cols 100 --scheme int4-g32)
nibble_cli_test(bad_dtype 1 -e "--dtype: 'f64'"
  -- ${_nibble} quantize ${_small} --dtype f64)
nibble_cli_test(bad_scale_dtype 1 -e "--scale-dtype"
  -- ${_nibble} quantize ${_small} --scale-dtype int8)
nibble_cli_test(bad_rows 1 -e "--rows must be at least 1"
  -- ${_nibble} quantize --rows 0 --cols 64)
nibble_cli_test(too_large 1 -e "--rows x --cols is too large"
  -- ${_nibble} quantize --rows 100000000 --cols 100000000 --scheme int8)
nibble_cli_test(bad_distribution 1 -e "--distribution"
  -- ${_nibble} quantize ${_small} --distribution uniform)
nibble_cli_test(unknown_option 1 -e "--bogus"
  -- ${_nibble} quantize ${_small} --bogus)

# ISA selection.
nibble_cli_test(isa_scalar_version 0 -e "^isa: scalar [(]--isa[)]$"
  -- ${_nibble} --isa scalar --version)
nibble_cli_test(isa_scalar_quantize 0 -e "isa scalar [(]--isa[)]"
  -e "^int8 " -- ${_nibble} quantize ${_small} --isa scalar)
nibble_cli_test(isa_global_before_subcommand 0 -e "isa scalar [(]--isa[)]"
  -- ${_nibble} --isa scalar quantize ${_small})
nibble_cli_test(env_isa_scalar 0 -e "^isa: scalar [(]NIBBLE_ISA[)]$"
  -- ${CMAKE_COMMAND} -E env NIBBLE_ISA=scalar ${_nibble} --version)
nibble_cli_test(isa_flag_beats_env 0 -e "^isa: scalar [(]--isa[)]$"
  -- ${CMAKE_COMMAND} -E env NIBBLE_ISA=bogus ${_nibble} --isa scalar --version)
add_test(NAME cli.isa_paths
  COMMAND ${NIBBLE_BASH} ${_cli_dir}/isa_paths.sh ${_nibble})
set_tests_properties(cli.isa_paths PROPERTIES LABELS cli TIMEOUT 120)

# Quantize: the table, the bad-input and I/O exit codes.
nibble_cli_test(quantize_table 0
  -e "^scheme +bits/w +size MB +ratio +RMSE +max abs err +SNR dB +cosine +rel Frob +time ms +GB/s$"
  -e "^int4-g32 +4[.]500 " -e "^int8 +8[.]06"
  -e "^input: 64 x 256 f16, heavy"
  -- ${_nibble} quantize --rows 64 --cols 256 --scheme int4-g32,int8)
nibble_cli_test(quantize_quiet 0 -n "." -- ${_nibble} quantize ${_small} --quiet)
nibble_cli_test(nonfinite_input 2 -e "non-finite input: [+-]Inf at row [0-9]+, column [0-9]+"
  -- ${_nibble} quantize ${_small} --std 1e6)
nibble_cli_test(scale_overflow 2 -e "scale overflow"
  -- ${_nibble} quantize --rows 8 --cols 64 --dtype f32 --std 1e6
     --scheme int4-g32 --scale-dtype f16)
nibble_cli_test(f32_scales_fix_overflow 0 -e "^int4-g32 "
  -- ${_nibble} quantize --rows 8 --cols 64 --dtype f32 --std 1e6
     --scheme int4-g32 --scale-dtype f32)
nibble_cli_test(json_unwritable 3 -e "cannot open '/nonexistent-nibble-dir/x[.]json'"
  -- ${_nibble} quantize ${_small} --json /nonexistent-nibble-dir/x.json)
nibble_cli_test(csv_unwritable 3 -e "cannot open"
  -- ${_nibble} quantize ${_small} --csv /nonexistent-nibble-dir/x.csv)

if(Python3_Interpreter_FOUND)
  add_test(NAME cli.json_csv_output
    COMMAND ${Python3_EXECUTABLE} ${_cli_dir}/check_outputs.py ${_nibble}
            ${_cli_work}/outputs)
  add_test(NAME cli.determinism
    COMMAND ${Python3_EXECUTABLE} ${_cli_dir}/determinism.py ${_nibble}
            ${_cli_work}/determinism)
  set_tests_properties(cli.json_csv_output cli.determinism PROPERTIES
    LABELS cli TIMEOUT 300)
else()
  # Without Python, still check that the JSON has the expected keys.
  add_test(NAME cli.json_csv_output
    COMMAND ${NIBBLE_BASH} -c [=[set -eu
"$1" quantize --rows 64 --cols 256 --scheme int4-g32,int8 --json "$2" --quiet
for k in nibble_version isa threads input results scheme bits_per_weight rmse max_abs_error snr_db cosine rel_frobenius time_ms gb_per_s; do
  grep -q "\"$k\"" "$2" || { echo "missing $k"; exit 1; }
done]=] _ ${_nibble} ${_cli_work}/out.json)
  set_tests_properties(cli.json_csv_output PROPERTIES LABELS cli)
endif()

unset(_cli_dir)
unset(_cli_work)
unset(_nibble)
unset(_small)

include(${CMAKE_CURRENT_LIST_DIR}/convert_tests.cmake)
