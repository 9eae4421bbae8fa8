# Included from cli_tests.cmake: `nibble convert` on a tiny checkpoint written
# with the Python standard library (make_tiny_safetensors.py); each case is
# one run of convert_cli.sh in its own directory. Labelled "cli".
if(NOT TARGET nibble_cli OR NOT Python3_Interpreter_FOUND)
  return()
endif()
foreach(_case ok file_input dry_run existing_output output_inside_input bad_input
              missing_input)
  add_test(NAME cli.convert_${_case}
    COMMAND ${NIBBLE_BASH} ${CMAKE_CURRENT_LIST_DIR}/convert_cli.sh
            $<TARGET_FILE:nibble_cli> ${Python3_EXECUTABLE} ${_case}
    WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/cli-work)
  set_tests_properties(cli.convert_${_case} PROPERTIES LABELS cli TIMEOUT 120)
endforeach()
