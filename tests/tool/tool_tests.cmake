# Included from tests/CMakeLists.txt: unit tests of the tool's logic
# (tools/nibble: targets, name patterns, the config file, the plan), linked
# against nibble_toolcore. Config files the tests need are written from the
# test code; the shipped example config is read from the source tree.
if(NOT TARGET nibble_toolcore)
  return()
endif()

nibble_add_test(nibble_tool_test
  ${CMAKE_CURRENT_LIST_DIR}/pattern_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/config_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/plan_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/progress_test.cc
  ${CMAKE_CURRENT_LIST_DIR}/text_test.cc)
target_link_libraries(nibble_tool_test PRIVATE nibble_toolcore)
target_compile_definitions(nibble_tool_test PRIVATE
  NIBBLE_TOOL_EXAMPLES_DIR="${PROJECT_SOURCE_DIR}/tools/nibble/examples")
