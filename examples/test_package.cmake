# ctest's package_example (cmake -P): installs the build into a fresh prefix, builds
# examples/hello_vgen against it with find_package(vgen), runs it on the tiny fixture, and
# configures examples/add_subdirectory (vgen as a subproject). Variables: BUILD_DIR, SOURCE_DIR,
# WORK_DIR, GENERATOR.
foreach(var BUILD_DIR SOURCE_DIR WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "test_package.cmake: ${var} is not set")
  endif()
endforeach()
file(REMOVE_RECURSE "${WORK_DIR}")

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "failed (${rc}): ${ARGN}\n${out}")
  endif()
endfunction()

run(${CMAKE_COMMAND} --install "${BUILD_DIR}" --prefix "${WORK_DIR}/prefix")
foreach(f include/vgen/visual_gen.h include/vgen/api/visual_gen.h lib/cmake/vgen/vgenConfig.cmake
          lib/cmake/vgen/vgenConfigVersion.cmake bin/vgen)
  if(NOT EXISTS "${WORK_DIR}/prefix/${f}")
    message(FATAL_ERROR "the install has no ${f}")
  endif()
endforeach()

run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples/hello_vgen" -B "${WORK_DIR}/hello" -G "${GENERATOR}"
    -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=${WORK_DIR}/prefix")
run(${CMAKE_COMMAND} --build "${WORK_DIR}/hello")
run("${WORK_DIR}/hello/hello_vgen" "${SOURCE_DIR}/tests/fixtures/wan21_t2v_tiny" "${WORK_DIR}/hello.png")
if(NOT EXISTS "${WORK_DIR}/hello.png")
  message(FATAL_ERROR "hello_vgen wrote no ${WORK_DIR}/hello.png")
endif()

# add_subdirectory: configuring is what failed before (CMAKE_SOURCE_DIR); building it would
# compile vgen a second time.
run(${CMAKE_COMMAND} -S "${SOURCE_DIR}/examples/add_subdirectory" -B "${WORK_DIR}/sub" -G "${GENERATOR}"
    "-DVGEN_SOURCE_DIR=${SOURCE_DIR}" -DVGEN_CUDA=OFF)
message(STATUS "package example: installed, built against the prefix, ran; add_subdirectory configures")
