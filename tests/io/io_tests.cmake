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
