# Included at the end of tests/CMakeLists.txt. Adds the ctest test
# install.find_package: `cmake --install` this build into a scratch prefix,
# check the installed files, then configure, build and run the project in
# tests/consumer against it with find_package(nibble REQUIRED).

set(_nibble_consumer_args
  -DNIBBLE_BUILD_DIR=${PROJECT_BINARY_DIR}
  -DCONSUMER_SOURCE_DIR=${CMAKE_CURRENT_LIST_DIR}
  -DWORK_DIR=${CMAKE_CURRENT_BINARY_DIR}/consumer-work
  -DCONFIG=$<CONFIG>
  -DGENERATOR=${CMAKE_GENERATOR}
  -DMAKE_PROGRAM=${CMAKE_MAKE_PROGRAM}
  -DCXX_COMPILER=${CMAKE_CXX_COMPILER}
  -DSANITIZE=${NIBBLE_SANITIZE}
)
if(TARGET nibble_cli)
  list(APPEND _nibble_consumer_args -DEXPECT_CLI=ON)
endif()

add_test(NAME install.find_package
  COMMAND ${CMAKE_COMMAND} ${_nibble_consumer_args}
          -P ${CMAKE_CURRENT_LIST_DIR}/run_consumer_test.cmake)
set_tests_properties(install.find_package PROPERTIES
  LABELS "install"
  TIMEOUT 600)
unset(_nibble_consumer_args)
