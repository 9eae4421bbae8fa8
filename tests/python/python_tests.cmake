# Included at the end of tests/CMakeLists.txt: one ctest test, labelled
# "python", that creates or refreshes the virtual environment
# (scripts/setup-venv.sh: pinned packages, offline once set up) and runs the
# pytest suite in tests/python (independent compressed-tensors decoder,
# checkpoint generator, the real all-MiniLM-L6-v2 model). A failure prints
# pytest's report through `ctest --output-on-failure`; to see it on success:
#   ctest --test-dir build -L python -V
option(NIBBLE_PYTHON_TESTS "Run the Python (pytest) tests; needs python3-venv and, once, PyPI" ON)
if(NOT NIBBLE_PYTHON_TESTS)
  return()
endif()

find_program(NIBBLE_BASH bash REQUIRED)
# The built binary for test_convert_e2e.py (skipped without it).
set(_nibble_bin "")
if(TARGET nibble_cli)
  set(_nibble_bin "$<TARGET_FILE:nibble_cli>")
endif()
# The GGUF reader's dump program and the ggml block quantizer's, for
# test_gguf_io.py and test_ggml_blocks.py.
set(_gguf_dump "")
if(TARGET nibble_gguf_dump)
  set(_gguf_dump "$<TARGET_FILE:nibble_gguf_dump>")
endif()
set(_ggml_dump "")
if(TARGET nibble_ggml_quant_dump)
  set(_ggml_dump "$<TARGET_FILE:nibble_ggml_quant_dump>")
endif()
add_test(NAME python.pytest
  COMMAND ${NIBBLE_BASH} -c
    "bash scripts/setup-venv.sh && PYTHONDONTWRITEBYTECODE=1 NIBBLE_BIN=\"${_nibble_bin}\" NIBBLE_GGUF_DUMP=\"${_gguf_dump}\" NIBBLE_GGML_DUMP=\"${_ggml_dump}\" NIBBLE_REQUIRE_REAL_MODEL=1 \"\${NIBBLE_VENV:-.venv}/bin/python\" -m pytest -q -rs tests/python"
  WORKING_DIRECTORY ${PROJECT_SOURCE_DIR})
set_tests_properties(python.pytest PROPERTIES LABELS python TIMEOUT 900)
