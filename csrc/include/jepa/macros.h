// Portability macros shared by the host (g++/clang++) and device (nvcc) code of jepa._C.
#pragma once

// JEPA_HD marks element math that is compiled for both the CPU and the GPU.
// Under nvcc it expands to `__host__ __device__`; under a plain C++ compiler to nothing,
// so the same header compiles with g++ for the CPU path and the host unit test.
#if defined(__CUDACC__)
#define JEPA_HD __host__ __device__
#define JEPA_FORCEINLINE __forceinline__
#else
#define JEPA_HD
#if defined(__GNUC__) || defined(__clang__)
#define JEPA_FORCEINLINE inline __attribute__((always_inline))
#else
#define JEPA_FORCEINLINE inline
#endif
#endif

// JEPA_TARGET_CLONES: on x86-64 Linux (glibc) with GCC >= 12 or clang >= 14, compile a hot CPU loop twice
// (baseline x86-64 and x86-64-v3 = AVX2/FMA/F16C) and pick one at load time (ifunc), so the wheel
// stays portable but uses wide vectors where the CPU has them. Elsewhere it is empty.
// Define JEPA_NO_TARGET_CLONES to turn it off.
#include <cstddef>  // defines __GLIBC__ where glibc is the C library (target_clones needs its ifunc support)

#if !defined(JEPA_NO_TARGET_CLONES) && !defined(__CUDACC__) && defined(__x86_64__) && defined(__linux__) && \
    defined(__GLIBC__) &&                                                                                   \
    ((defined(__clang__) && __clang_major__ >= 14) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 12))
#define JEPA_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#define JEPA_HAS_TARGET_CLONES 1
#else
#define JEPA_TARGET_CLONES
#define JEPA_HAS_TARGET_CLONES 0
#endif
