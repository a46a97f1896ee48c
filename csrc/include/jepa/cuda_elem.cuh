// Device-side helpers shared by the CUDA kernels in kernels/cuda/*.cu (included only by .cu files):
// float32 load/store of the element types the kernels support (one element, or 16-byte vectors), and
// CUDA error checking.
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
// Through __ldcg/__stcg (global memory, cached in L2): pointers read from a table would otherwise be
// accessed through generic addressing.
template <typename T>
struct Elem;

template <>
struct Elem<float> {
  static __device__ __forceinline__ float load(const float* p) { return __ldcg(p); }
  static __device__ __forceinline__ void store(float* p, float v) { __stcg(p, v); }
};

template <>
struct Elem<__half> {
  static __device__ __forceinline__ float load(const __half* p) { return __half2float(__ldcg(p)); }
  static __device__ __forceinline__ void store(__half* p, float v) { __stcg(p, __float2half_rn(v)); }
};

template <>
struct Elem<__nv_bfloat16> {
  static __device__ __forceinline__ float load(const __nv_bfloat16* p) { return __bfloat162float(__ldcg(p)); }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, float v) { __stcg(p, __float2bfloat16_rn(v)); }
};

// Vec16<T>: 16 bytes of T (4 float32, 8 float16/bfloat16) moved by one vector instruction, converted to
// and from float32 like Elem<T>. The address must be 16-byte aligned: the kernels use it only where the
// host checked every buffer (TensorTable::aligned16()) and the offset is a multiple of kWidth (chunks
// start at multiples of the chunk size). The cache-hint intrinsics (__ldcg / __ldg / __stcg) pin the
// instruction: ld.global.cg.v4, ld.global.nc.v4 (read-only data), st.global.cg.v4. With plain
// dereferences nvcc emitted generic (not .global) accesses for pointers read from a table and split
// float4 stores into four 4-byte stores. Streaming data is cached in L2 only (.cg): it is touched once.
// load() may read data the same kernel writes later (each element by the same thread); ldg() only data
// no thread of the kernel writes.
template <typename T>
struct Vec16;

template <>
struct Vec16<float> {
  static constexpr int kWidth = 4;
  static __device__ __forceinline__ void unpack(const float4 v, float (&out)[kWidth]) {
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  }
  static __device__ __forceinline__ void load(const float* p, float (&out)[kWidth]) {
    unpack(__ldcg(reinterpret_cast<const float4*>(p)), out);
  }
  static __device__ __forceinline__ void ldg(const float* p, float (&out)[kWidth]) {
    unpack(__ldg(reinterpret_cast<const float4*>(p)), out);
  }
  static __device__ __forceinline__ void store(float* p, const float (&in)[kWidth]) {
    __stcg(reinterpret_cast<float4*>(p), make_float4(in[0], in[1], in[2], in[3]));
  }
};

template <>
struct Vec16<__half> {
  static constexpr int kWidth = 8;
  static __device__ __forceinline__ void load(const __half* p, float (&out)[kWidth]) {
    unpack(__ldcg(reinterpret_cast<const uint4*>(p)), out);
  }
  static __device__ __forceinline__ void ldg(const __half* p, float (&out)[kWidth]) {
    unpack(__ldg(reinterpret_cast<const uint4*>(p)), out);
  }
  static __device__ __forceinline__ void unpack(const uint4 v, float (&out)[kWidth]) {
    const __half2* h = reinterpret_cast<const __half2*>(&v);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __half22float2(h[k]);
      out[2 * k] = f.x;
      out[2 * k + 1] = f.y;
    }
  }
  static __device__ __forceinline__ void store(__half* p, const float (&in)[kWidth]) {
    uint4 v;
    __half2* h = reinterpret_cast<__half2*>(&v);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = __floats2half2_rn(in[2 * k], in[2 * k + 1]);  // round to nearest even
    __stcg(reinterpret_cast<uint4*>(p), v);
  }
};

template <>
struct Vec16<__nv_bfloat16> {
  static constexpr int kWidth = 8;
  static __device__ __forceinline__ void load(const __nv_bfloat16* p, float (&out)[kWidth]) {
    unpack(__ldcg(reinterpret_cast<const uint4*>(p)), out);
  }
  static __device__ __forceinline__ void ldg(const __nv_bfloat16* p, float (&out)[kWidth]) {
    unpack(__ldg(reinterpret_cast<const uint4*>(p)), out);
  }
  static __device__ __forceinline__ void unpack(const uint4 v, float (&out)[kWidth]) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&v);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 f = __bfloat1622float2(h[k]);
      out[2 * k] = f.x;
      out[2 * k + 1] = f.y;
    }
  }
  static __device__ __forceinline__ void store(__nv_bfloat16* p, const float (&in)[kWidth]) {
    uint4 v;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&v);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(in[2 * k], in[2 * k + 1]);  // round to nearest even
    __stcg(reinterpret_cast<uint4*>(p), v);
  }
};

}  // namespace cuda
}  // namespace jepa
