# Resolves SUTRA_ENABLE_CUDA (AUTO/ON/OFF) into SUTRA_WITH_CUDA.
#
# CUDA is built when both nvcc and cuBLASLt's headers are found. They come from the CUDA toolkit
# when it ships cuBLAS, otherwise from the `nvidia-cublas` wheel (CUDA 13 layout: nvidia/cu13/include
# and nvidia/cu13/lib/libcublasLt.so.13) installed for the Python interpreter that runs the build. AUTO falls back to a CPU-only build, ON fails, OFF never looks.
#
# Sets: SUTRA_WITH_CUDA, SUTRA_CUBLASLT_SOURCE ("toolkit" or "wheel"), SUTRA_CUDA_RPATH,
#       sutra::cublasLt (headers and the soname to load, nothing linked), CMAKE_CUDA_ARCHITECTURES.

string(TOUPPER "${SUTRA_ENABLE_CUDA}" _sutra_cuda_mode)
if(NOT _sutra_cuda_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "SUTRA_ENABLE_CUDA must be AUTO, ON or OFF, got '${SUTRA_ENABLE_CUDA}'")
endif()

set(SUTRA_WITH_CUDA OFF)

# In AUTO, a missing piece disables CUDA with a status line; in ON it stops the configure.
macro(_sutra_cuda_unavailable reason)
  if(_sutra_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "SUTRA_ENABLE_CUDA=ON but ${reason}")
  endif()
  message(STATUS "sutra: building without CUDA (${reason})")
  return()
endmacro()

if(_sutra_cuda_mode STREQUAL "OFF")
  message(STATUS "sutra: building without CUDA (SUTRA_ENABLE_CUDA=OFF)")
  return()
endif()

# check_language only looks on PATH and CUDACXX; also try the usual toolkit locations so that a
# toolkit which is installed but not on PATH is still found.
if(NOT DEFINED CMAKE_CUDA_COMPILER AND NOT DEFINED ENV{CUDACXX})
  file(GLOB _sutra_versioned_cuda_bins LIST_DIRECTORIES true "/usr/local/cuda-*/bin")
  list(SORT _sutra_versioned_cuda_bins COMPARE NATURAL ORDER DESCENDING)
  find_program(SUTRA_NVCC nvcc
    HINTS ENV CUDA_HOME ENV CUDA_PATH
    PATH_SUFFIXES bin
    PATHS /usr/local/cuda/bin ${_sutra_versioned_cuda_bins})
  if(SUTRA_NVCC)
    set(ENV{CUDACXX} "${SUTRA_NVCC}")
  endif()
endif()

include(CheckLanguage)
check_language(CUDA)
if(NOT CMAKE_CUDA_COMPILER)
  _sutra_cuda_unavailable("no working nvcc was found (set CUDACXX or put nvcc on PATH)")
endif()

get_filename_component(_sutra_nvcc_dir "${CMAKE_CUDA_COMPILER}" DIRECTORY)
get_filename_component(CUDAToolkit_ROOT "${_sutra_nvcc_dir}" DIRECTORY)
find_package(CUDAToolkit QUIET)
if(NOT CUDAToolkit_FOUND)
  _sutra_cuda_unavailable("the CUDA toolkit next to ${CMAKE_CUDA_COMPILER} is incomplete")
endif()

# cuBLASLt: the toolkit's headers first, else the nvidia-cublas wheel's. Nothing links it: the
# engine loads libcublasLt.so.<major> when it is first used (cpp/src/engine/cublaslt.cc), so the
# module imports on machines without it. The RUNPATH below is where that load looks first.
set(_sutra_cublas_soname "libcublasLt.so.${CUDAToolkit_VERSION_MAJOR}")
set(SUTRA_CUDA_RPATH "$ORIGIN/../nvidia/cu${CUDAToolkit_VERSION_MAJOR}/lib")
add_library(sutra_cublaslt_headers INTERFACE)
add_library(sutra::cublasLt ALIAS sutra_cublaslt_headers)
target_compile_definitions(sutra_cublaslt_headers INTERFACE
  SUTRA_CUBLASLT_SONAME="${_sutra_cublas_soname}")
if(TARGET CUDA::cublasLt)
  target_include_directories(sutra_cublaslt_headers INTERFACE ${CUDAToolkit_INCLUDE_DIRS})
  set(SUTRA_CUBLASLT_SOURCE "toolkit")
  list(APPEND SUTRA_CUDA_RPATH "${CUDAToolkit_LIBRARY_DIR}")
else()
  # `nvidia` is a namespace package (no __init__.py): walk its search path instead of __file__.
  execute_process(
    COMMAND "${Python_EXECUTABLE}" -c "
import importlib.util, os
spec = importlib.util.find_spec('nvidia')
for root in (spec.submodule_search_locations if spec else []):
    base = os.path.join(root, 'cu${CUDAToolkit_VERSION_MAJOR}')
    if os.path.isfile(os.path.join(base, 'include', 'cublasLt.h')):
        print(base, end='')
        break
"
    OUTPUT_VARIABLE _sutra_cublas_wheel_dir
    RESULT_VARIABLE _sutra_probe_result
    ERROR_QUIET)
  if(NOT _sutra_probe_result EQUAL 0 OR NOT _sutra_cublas_wheel_dir)
    _sutra_cuda_unavailable("cuBLASLt's headers were found neither in the CUDA toolkit nor in the \
nvidia-cublas wheel of ${Python_EXECUTABLE} (pip install nvidia-cublas, then build with --no-build-isolation)")
  endif()
  target_include_directories(sutra_cublaslt_headers INTERFACE "${_sutra_cublas_wheel_dir}/include")
  set(SUTRA_CUBLASLT_SOURCE "wheel (${_sutra_cublas_wheel_dir})")
endif()

if(SUTRA_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES "${SUTRA_CUDA_ARCHITECTURES}")
else()
  # Real code for A100 and for H100 with its sm_90a-only instructions; PTX of sm_90 for newer GPUs.
  set(CMAKE_CUDA_ARCHITECTURES "80-real;90a-real;90-virtual")
endif()
# Static cudart: the module then needs no libcudart.so and imports on machines with no driver;
# every runtime call reports cudaErrorNoDevice / cudaErrorInsufficientDriver instead.
set(CMAKE_CUDA_RUNTIME_LIBRARY Static)
set(CMAKE_CUDA_STANDARD 17)
set(CMAKE_CUDA_STANDARD_REQUIRED ON)
enable_language(CUDA)

set(SUTRA_WITH_CUDA ON)
message(STATUS "sutra: building with CUDA ${CUDAToolkit_VERSION} for ${CMAKE_CUDA_ARCHITECTURES}; "
               "cuBLASLt from ${SUTRA_CUBLASLT_SOURCE}")
