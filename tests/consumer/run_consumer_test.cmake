# cmake -P script behind the install.find_package test (see
# consumer_test.cmake for the variables it receives).
cmake_minimum_required(VERSION 3.20)

foreach(var NIBBLE_BUILD_DIR CONSUMER_SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer_test.cmake: ${var} is not set")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
set(consumer_build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(run_output "${out}" PARENT_SCOPE)
endfunction()

# 1. Install this build.
set(config_args)
if(CONFIG)
  set(config_args --config ${CONFIG})
endif()
run("cmake --install" ${CMAKE_COMMAND} --install ${NIBBLE_BUILD_DIR}
    --prefix ${prefix} ${config_args})

# 2. The files a user relies on.
set(expected include/nibble/quantize.h include/nibble/nibble.h
             include/nibble/version.h)
if(EXPECT_CLI)
  list(APPEND expected bin/nibble)
endif()
foreach(f ${expected})
  if(NOT EXISTS ${prefix}/${f})
    message(FATAL_ERROR "cmake --install did not install ${f}")
  endif()
endforeach()
file(GLOB_RECURSE configs ${prefix}/*/nibbleConfig.cmake)
file(GLOB_RECURSE versions ${prefix}/*/nibbleConfigVersion.cmake)
if(NOT configs OR NOT versions)
  message(FATAL_ERROR "no nibbleConfig.cmake / nibbleConfigVersion.cmake under ${prefix}")
endif()
if(EXPECT_CLI)
  run("installed nibble --version" ${prefix}/bin/nibble --version)
  if(NOT run_output MATCHES "isa: ")
    message(FATAL_ERROR "installed nibble --version printed:\n${run_output}")
  endif()
endif()

# 3. Configure and build the consumer against the prefix only.
set(configure_args -S ${CONSUMER_SOURCE_DIR} -B ${consumer_build}
    -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
    -DCMAKE_PREFIX_PATH=${prefix}
    -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
if(MAKE_PROGRAM)
  list(APPEND configure_args -DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM})
endif()
if(CONFIG)
  list(APPEND configure_args -DCMAKE_BUILD_TYPE=${CONFIG})
endif()
if(SANITIZE)
  # The installed static library carries sanitizer calls.
  list(APPEND configure_args -DCMAKE_EXE_LINKER_FLAGS=-fsanitize=${SANITIZE})
endif()
run("configuring the consumer" ${CMAKE_COMMAND} ${configure_args})
if(NOT run_output MATCHES "nibble_DIR=${prefix}/")
  message(FATAL_ERROR "the consumer did not find nibble under ${prefix}:\n${run_output}")
endif()
run("building the consumer" ${CMAKE_COMMAND} --build ${consumer_build} ${config_args})

# 4. Run it.
find_program(consumer_exe consumer PATHS ${consumer_build}
             ${consumer_build}/${CONFIG} NO_DEFAULT_PATH)
if(NOT consumer_exe)
  message(FATAL_ERROR "consumer executable not found in ${consumer_build}")
endif()
run("running the consumer" ${consumer_exe})
message(STATUS "${run_output}")
