# Optional CUDA support for jepa._C.
#
#   -DJEPA_CUDA=AUTO (default)  build the kernels in kernels/cuda when a working CUDA toolkit is found
#   -DJEPA_CUDA=ON              require CUDA (configure fails without a working toolkit)
#   -DJEPA_CUDA=OFF             CPU-only module, CUDA is not looked for
#   -DJEPA_CUDA_ARCHS="80;90"   GPU architectures (CMAKE_CUDA_ARCHITECTURES syntax, e.g. "80;90a" or "native");
#                              without -D, the JEPA_CUDA_ARCHS environment variable, else "80;90" (pip passes
#                              the environment variable as -D through pyproject.toml, on every build)
#
# Sets JEPA_WITH_CUDA (ON/OFF) and, when ON, enables the CUDA language. AUTO checks the compiler with
# check_language(CUDA) (which compiles and links a tiny CUDA program), so a broken or partial toolkit
# gives a CPU-only build instead of a failed one. CUDA 13 dropped sm_70 and older.

set(JEPA_CUDA "AUTO" CACHE STRING "Build the CUDA kernels: AUTO, ON or OFF")
set_property(CACHE JEPA_CUDA PROPERTY STRINGS AUTO ON OFF)
if(DEFINED ENV{JEPA_CUDA_ARCHS} AND NOT "$ENV{JEPA_CUDA_ARCHS}" STREQUAL "")
  set(_jepa_archs_default "$ENV{JEPA_CUDA_ARCHS}")
else()
  set(_jepa_archs_default "80;90")
endif()
set(JEPA_CUDA_ARCHS "${_jepa_archs_default}" CACHE STRING "CUDA architectures of the kernels (e.g. 80;90)")

string(TOUPPER "${JEPA_CUDA}" _jepa_cuda_mode)
if(_jepa_cuda_mode STREQUAL "TRUE" OR _jepa_cuda_mode STREQUAL "YES" OR _jepa_cuda_mode STREQUAL "1")
  set(_jepa_cuda_mode ON)
elseif(_jepa_cuda_mode STREQUAL "FALSE" OR _jepa_cuda_mode STREQUAL "NO" OR _jepa_cuda_mode STREQUAL "0")
  set(_jepa_cuda_mode OFF)
endif()
if(NOT _jepa_cuda_mode MATCHES "^(AUTO|ON|OFF)$")
  message(FATAL_ERROR "JEPA_CUDA must be AUTO, ON or OFF, got '${JEPA_CUDA}'")
endif()

# _jepa_check_cuda_archs(<nvcc> <archs> <ok_var> <why_var>): can this nvcc build these architectures?
# CUDA >= 11.8 is needed for sm_90, and CUDA 13 dropped sm_70 and older. "native"/"all*" are not checked.
function(_jepa_check_cuda_archs nvcc archs ok_var why_var)
  set(${ok_var} TRUE PARENT_SCOPE)
  execute_process(COMMAND "${nvcc}" --version OUTPUT_VARIABLE _out RESULT_VARIABLE _rc ERROR_QUIET)
  if(NOT _rc EQUAL 0 OR NOT _out MATCHES "release ([0-9]+)\\.([0-9]+)")
    set(${ok_var} FALSE PARENT_SCOPE)
    set(${why_var} "could not run '${nvcc} --version'" PARENT_SCOPE)
    return()
  endif()
  set(_ver "${CMAKE_MATCH_1}.${CMAKE_MATCH_2}")
  foreach(_arch IN LISTS archs)
    if(NOT _arch MATCHES "^([0-9]+)")
      continue()
    endif()
    set(_num "${CMAKE_MATCH_1}")
    if(_num GREATER_EQUAL 90 AND _ver VERSION_LESS 11.8)
      set(${ok_var} FALSE PARENT_SCOPE)
      set(${why_var} "CUDA ${_ver} cannot build sm_${_num} (needs CUDA >= 11.8); set JEPA_CUDA_ARCHS" PARENT_SCOPE)
      return()
    endif()
    if(_num LESS 75 AND _ver VERSION_GREATER_EQUAL 13.0)
      set(${ok_var} FALSE PARENT_SCOPE)
      set(${why_var} "CUDA ${_ver} dropped sm_${_num} (sm_75 is the oldest it builds); set JEPA_CUDA_ARCHS" PARENT_SCOPE)
      return()
    endif()
  endforeach()
endfunction()

set(JEPA_WITH_CUDA OFF)
if(NOT _jepa_cuda_mode STREQUAL "OFF")
  # The architectures must be known before the compiler check so that it compiles for them too
  # (CUDA 13's default architecture list would otherwise be used).
  # JEPA_CUDA_ARCHS decides (a CMAKE_CUDA_ARCHITECTURES left in the cache by an earlier configure would
  # otherwise keep the old list when only JEPA_CUDA_ARCHS changed).
  set(CMAKE_CUDA_ARCHITECTURES "${JEPA_CUDA_ARCHS}")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    _jepa_check_cuda_archs("${CMAKE_CUDA_COMPILER}" "${CMAKE_CUDA_ARCHITECTURES}" _jepa_archs_ok _jepa_archs_why)
    if(NOT _jepa_archs_ok)
      if(_jepa_cuda_mode STREQUAL "ON")
        message(FATAL_ERROR "JEPA_CUDA=ON: ${_jepa_archs_why}")
      endif()
      message(WARNING "jepa: ${_jepa_archs_why}; building jepa._C CPU-only (JEPA_CUDA=AUTO)")
      unset(CMAKE_CUDA_COMPILER CACHE)
      unset(CMAKE_CUDA_COMPILER)
      set(_jepa_cuda_reported TRUE)
    endif()
  endif()
  if(CMAKE_CUDA_COMPILER)
    if(NOT DEFINED CMAKE_CUDA_HOST_COMPILER AND CMAKE_CXX_COMPILER)
      set(CMAKE_CUDA_HOST_COMPILER "${CMAKE_CXX_COMPILER}")
    endif()
    enable_language(CUDA)
    set(JEPA_WITH_CUDA ON)
    message(STATUS "jepa: CUDA ${CMAKE_CUDA_COMPILER_VERSION} found (${CMAKE_CUDA_COMPILER}), "
                   "building kernels/cuda for architectures ${CMAKE_CUDA_ARCHITECTURES}")
  elseif(_jepa_cuda_mode STREQUAL "ON")
    message(FATAL_ERROR "JEPA_CUDA=ON but no working CUDA compiler was found "
                        "(set CMAKE_CUDA_COMPILER or put nvcc on PATH; JEPA_CUDA=AUTO builds CPU-only)")
  elseif(NOT _jepa_cuda_reported)
    message(STATUS "jepa: no working CUDA toolkit found, building jepa._C CPU-only (JEPA_CUDA=AUTO)")
  endif()
else()
  message(STATUS "jepa: JEPA_CUDA=OFF, building jepa._C CPU-only")
endif()
