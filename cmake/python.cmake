# The Python extension (python/): built when VGEN_PYTHON is ON, or AUTO and both the Python
# development headers and nanobind (PyPI: `pip install nanobind`) are found. Sets
# VGEN_WITH_PYTHON; when set, the layers' static libraries are compiled as position-independent
# code (vgen_layer in CMakeLists.txt) so that the extension, a shared module, can link them.
set(VGEN_PYTHON AUTO CACHE STRING "Build the Python extension (the vgen package): ON, OFF or AUTO")
set(VGEN_WITH_PYTHON OFF)

if(NOT VGEN_PYTHON STREQUAL "OFF")
  # nanobind wants FindPython's targets (Python::Module); scikit-build-core sets Python_EXECUTABLE.
  if(NOT Python_EXECUTABLE AND Python3_EXECUTABLE)
    set(Python_EXECUTABLE ${Python3_EXECUTABLE})
  endif()
  find_package(Python 3.9 COMPONENTS Interpreter Development.Module)
  if(Python_FOUND AND NOT nanobind_DIR)
    execute_process(COMMAND ${Python_EXECUTABLE} -m nanobind --cmake_dir
                    OUTPUT_VARIABLE _nb_dir OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    if(_nb_dir)
      set(nanobind_DIR ${_nb_dir} CACHE PATH "nanobind's CMake folder (python -m nanobind --cmake_dir)")
    endif()
  endif()
  if(Python_FOUND)
    find_package(nanobind CONFIG QUIET)
  endif()
  if(Python_FOUND AND nanobind_FOUND)
    set(VGEN_WITH_PYTHON ON)
    message(STATUS "Python extension: Python ${Python_VERSION} (${Python_EXECUTABLE}), nanobind ${nanobind_DIR}")
  elseif(VGEN_PYTHON STREQUAL "ON")
    message(FATAL_ERROR "VGEN_PYTHON=ON but the Python development headers (found: ${Python_FOUND}) or "
                        "nanobind (found: ${nanobind_FOUND}) are missing: `python3 -m pip install nanobind`")
  else()
    message(STATUS "Python extension not built (needs the Python headers and nanobind: pip install nanobind)")
  endif()
endif()
