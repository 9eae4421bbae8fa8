# Readers and writers of checkpoint formats (lib/src/io). Included from
# tests/CMakeLists.txt, so nibble_add_test is defined; paths are relative to
# this file.
nibble_add_test(nibble_io_test
  ${CMAKE_CURRENT_LIST_DIR}/safetensors_reader_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/safetensors_writer_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/checkpoint_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/atomic_file_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/compressed_tensors_test.cc)
target_include_directories(nibble_io_test PRIVATE ${CMAKE_CURRENT_LIST_DIR})

# GGUF reader and writer (lib/src/io/gguf*.cc): their own executable, with
# test names prefixed "gguf." so that `ctest -R gguf` selects them.
add_executable(nibble_gguf_test
  ${CMAKE_CURRENT_LIST_DIR}/gguf_reader_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/gguf_writer_test.cc)
target_link_libraries(nibble_gguf_test PRIVATE nibble_test_util nibble::nibble
                      GTest::gmock GTest::gtest_main)
target_include_directories(nibble_gguf_test PRIVATE ${CMAKE_CURRENT_LIST_DIR})
nibble_set_warnings(nibble_gguf_test)
gtest_discover_tests(nibble_gguf_test TEST_PREFIX "gguf." DISCOVERY_TIMEOUT 120
                     PROPERTIES TIMEOUT 300 LABELS unit)
# What nibble's GGUF reader sees, as JSON, and copies through the writer:
# the helper of tests/python/test_gguf_io.py (found through the environment
# variable NIBBLE_GGUF_DUMP, or as build*/tests/nibble_gguf_dump).
add_executable(nibble_gguf_dump ${CMAKE_CURRENT_LIST_DIR}/gguf_dump.cc)
target_link_libraries(nibble_gguf_dump PRIVATE nibble::nibble)
nibble_set_warnings(nibble_gguf_dump)
