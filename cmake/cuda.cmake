# The CUDA backend (src/backends/cuda): built when VGEN_CUDA is ON, or AUTO and nvcc is found.
# Needs the CUDA toolkit (cudart, cuBLASLt), cuDNN 9 and the header-only cuDNN frontend
# (PyPI: nvidia-cudnn-frontend; found through python3, or VGEN_CUDNN_FRONTEND_INCLUDE), whose
# runtime-compiled engines need NVRTC, and the CUTLASS/CuTe headers (PyPI: nvidia-cutlass, or
# VGEN_CUTLASS_INCLUDE).
#
# Sets VGEN_CUDA_SOURCES and defines vgen_link_cuda(target). Without CUDA both are empty and
# the binaries run on the CPU only.

set(VGEN_CUDA_SOURCES "")
set(VGEN_WITH_CUDA OFF)

# Sets VAR (a cache path) to the folder holding `header`: VAR as given, else where the python3
# snippet `where` prints; fails naming `install` (how to get it) and -DVAR.
function(vgen_find_pip_headers var header where install)
  if(NOT ${var})
    find_package(Python3 COMPONENTS Interpreter)
    if(Python3_Interpreter_FOUND)
      execute_process(COMMAND ${Python3_EXECUTABLE} -c "${where}" OUTPUT_VARIABLE _dir
                      OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    endif()
    find_path(${var} ${header} HINTS ${_dir})
  endif()
  if(NOT ${var})
    message(FATAL_ERROR "${header} not found: ${install}, pass -D${var}=<dir>, or configure with -DVGEN_CUDA=OFF")
  endif()
endfunction()

if(NOT VGEN_CUDA STREQUAL "OFF")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(VGEN_WITH_CUDA ON)
  elseif(VGEN_CUDA STREQUAL "ON")
    message(FATAL_ERROR "VGEN_CUDA=ON but no CUDA compiler (nvcc) was found")
  else()
    message(STATUS "nvcc not found: building without the CUDA backend")
  endif()
endif()

if(VGEN_WITH_CUDA)
  # Targets are given as -gencode flags (CMake 3.25 does not know the 'a' suffix).
  set(CMAKE_CUDA_ARCHITECTURES OFF)
  enable_language(CUDA)
  if(CMAKE_VERSION VERSION_LESS 3.26)
    # CMake 3.25 does not know nvcc's C++20 flag yet.
    set(CMAKE_CUDA20_STANDARD_COMPILE_OPTION "-std=c++20")
    set(CMAKE_CUDA20_EXTENSION_COMPILE_OPTION "-std=c++20")
  endif()
  set(CMAKE_CUDA_STANDARD 20)
  set(CMAKE_CUDA_STANDARD_REQUIRED ON)
  find_package(CUDAToolkit REQUIRED)

  set(VGEN_CUDA_GENCODE "")
  foreach(arch IN LISTS VGEN_CUDA_ARCHS)
    list(APPEND VGEN_CUDA_GENCODE "-gencode=arch=compute_${arch},code=sm_${arch}")
  endforeach()

  find_path(CUDNN_INCLUDE_DIR cudnn.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include/x86_64-linux-gnu)
  find_library(CUDNN_LIBRARY cudnn HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
  if(NOT CUDNN_INCLUDE_DIR OR NOT CUDNN_LIBRARY)
    message(FATAL_ERROR "cuDNN 9 (cudnn.h, libcudnn) not found: install it or configure with -DVGEN_CUDA=OFF")
  endif()

  # NCCL (the multi-GPU communicator) ships with the CUDA toolkit here.
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} /usr/include)
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} /usr/lib/x86_64-linux-gnu)
  if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
    message(FATAL_ERROR "NCCL (nccl.h, libnccl) not found: install it or configure with -DVGEN_CUDA=OFF")
  endif()

  # Header-only packages from PyPI, found through python3 unless given: the cuDNN frontend
  # (nvidia-cudnn-frontend, <purelib>/include) and the CUTLASS/CuTe headers (BSD-3) for vgen's
  # own Hopper kernels (nvidia-cutlass, cutlass_library/source/include).
  vgen_find_pip_headers(VGEN_CUDNN_FRONTEND_INCLUDE cudnn_frontend.h
    "import sysconfig, os; print(os.path.join(sysconfig.get_paths()['purelib'], 'include'))"
    "`python3 -m pip install nvidia-cudnn-frontend`")
  vgen_find_pip_headers(VGEN_CUTLASS_INCLUDE cute/tensor.hpp
    "import importlib.util, os; s = importlib.util.find_spec('cutlass_library'); print(os.path.join(s.submodule_search_locations[0], 'source', 'include') if s else '')"
    "`python3 -m pip install --no-deps nvidia-cutlass==4.2.0.0`")
  # CUTLASS's sm90 convolution collective includes cutlass/util/packed_stride.hpp, which the
  # wheel keeps under tools/util/include (a packed copy may carry it inside include/ instead).
  if(NOT EXISTS "${VGEN_CUTLASS_INCLUDE}/cutlass/util/packed_stride.hpp")
    find_path(VGEN_CUTLASS_UTIL_INCLUDE cutlass/util/packed_stride.hpp
              HINTS "${VGEN_CUTLASS_INCLUDE}/../tools/util/include" NO_DEFAULT_PATH)
    if(NOT VGEN_CUTLASS_UTIL_INCLUDE)
      message(FATAL_ERROR "cutlass/util/packed_stride.hpp not found beside ${VGEN_CUTLASS_INCLUDE} (nvidia-cutlass's "
                          "tools/util/include): pass -DVGEN_CUTLASS_UTIL_INCLUDE=<dir>")
    endif()
  endif()
  message(STATUS "CUDA backend: nvcc ${CMAKE_CUDA_COMPILER_VERSION}, targets ${VGEN_CUDA_ARCHS}, "
                 "cuDNN ${CUDNN_LIBRARY}, cuDNN frontend ${VGEN_CUDNN_FRONTEND_INCLUDE}, CUTLASS ${VGEN_CUTLASS_INCLUDE}")

  file(GLOB_RECURSE VGEN_CUDA_SOURCES CONFIGURE_DEPENDS
       ${PROJECT_SOURCE_DIR}/src/backends/cuda/*.cu ${PROJECT_SOURCE_DIR}/src/backends/cuda/*.cpp)
endif()

function(vgen_link_cuda target)
  if(NOT VGEN_WITH_CUDA)
    return()
  endif()
  target_compile_definitions(${target} PUBLIC VGEN_WITH_CUDA=1)
  # fmt 9's consteval format strings do not compile under nvcc in C++20 mode.
  target_compile_definitions(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:FMT_USE_CONSTEXPR=1>)
  target_include_directories(${target} SYSTEM PRIVATE ${CUDNN_INCLUDE_DIR} ${VGEN_CUDNN_FRONTEND_INCLUDE} ${NCCL_INCLUDE_DIR}
                             ${VGEN_CUTLASS_INCLUDE} ${VGEN_CUTLASS_UTIL_INCLUDE})
  target_link_libraries(${target} PUBLIC CUDA::cudart CUDA::cublasLt CUDA::cublas CUDA::nvrtc ${CUDNN_LIBRARY} ${NCCL_LIBRARY})
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:${VGEN_CUDA_GENCODE} --expt-relaxed-constexpr -lineinfo -Xcompiler=-fopenmp>)
  set_target_properties(${target} PROPERTIES CUDA_SEPARABLE_COMPILATION OFF)
endfunction()
