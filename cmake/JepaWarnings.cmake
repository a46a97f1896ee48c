# jepa_enable_warnings(<target>): warnings on for C++ (and CUDA host code), optional -Werror.
#
#   -DJEPA_WERROR=ON   turn warnings into errors (CI)

option(JEPA_WERROR "Treat compiler warnings as errors" OFF)

function(jepa_enable_warnings target)
  if(MSVC)
    set(cxx_flags /W4)
    if(JEPA_WERROR)
      list(APPEND cxx_flags /WX)
    endif()
  else()
    set(cxx_flags -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor -Wcast-align -Wunused -Woverloaded-virtual
                  -Wnull-dereference -Wdouble-promotion -Wformat=2)
    if(JEPA_WERROR)
      list(APPEND cxx_flags -Werror)
    endif()
  endif()
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:${cxx_flags}>)

  if(CMAKE_CUDA_COMPILER)
    # nvcc's own diagnostics, plus the host compiler's warnings on the host side of .cu files.
    set(cuda_flags -Xcompiler=-Wall,-Wextra)
    if(JEPA_WERROR)
      list(APPEND cuda_flags -Werror=all-warnings -Xcompiler=-Werror)
    endif()
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:${cuda_flags}>)
  endif()
endfunction()
