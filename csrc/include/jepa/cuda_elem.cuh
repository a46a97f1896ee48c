// Device-side helpers shared by the CUDA kernels in kernels/cuda/*.cu (included only by .cu files):
// float32 load/store of the element types the kernels support, and CUDA error checking.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace jepa {
namespace cuda {

// Throws std::runtime_error("<fn>: <what> failed: <CUDA message>") unless err is cudaSuccess.
inline void check(cudaError_t err, const char* fn, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string(fn) + ": " + what + " failed: " + cudaGetErrorString(err));
  }
}

// Elem<T>::load reads a T as float32; Elem<T>::store writes a float32 as T (round to nearest even).
template <typename T>
struct Elem;

template <>
struct Elem<float> {
  static __device__ __forceinline__ float load(const float* p) { return *p; }
  static __device__ __forceinline__ void store(float* p, float v) { *p = v; }
};

template <>
struct Elem<__half> {
  static __device__ __forceinline__ float load(const __half* p) { return __half2float(*p); }
  static __device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }
};

template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(*p); }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
};

}  // namespace cuda
}  // namespace jepa
