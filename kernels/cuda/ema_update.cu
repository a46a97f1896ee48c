// CUDA multi-tensor EMA: target <- lerp(target, online, w) with w = 1 - momentum, over every tensor of a
// TensorTable in ONE kernel launch (apex multi_tensor_apply style, with the table in device memory).
//
// Every tensor is cut into chunks of kCudaChunkBytes that start at multiples of the chunk size inside
// the tensor (csrc/include/jepa/multi_tensor.h). Each block takes chunks (grid-stride), finds the tensor
// of a chunk by a binary search over the per-tensor chunk prefix sums (jepa::locate_chunk, tested on the
// host) and updates it: when every buffer of the table is 16-byte aligned (checked on the host,
// TensorTable::aligned16()), with 16-byte vector loads and stores (kUnroll vectors of target and online
// in flight per thread) and the last < 16 bytes of the tensor one element at a time; otherwise one
// element at a time. Element math is jepa::lerp (jepa/ema_math.h) in float32, rounded once.
//
// The table lives in memory the caller (jepa/ops/_native.py) allocated through torch and filled with an
// asynchronous copy: this file allocates, copies and frees nothing, so it never synchronizes the device.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "jepa/cuda_elem.cuh"
#include "jepa/cuda_ops.h"
#include "jepa/dtype.h"
#include "jepa/ema_math.h"
#include "jepa/multi_tensor.h"

namespace jepa {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;                 // vectors (or elements) in flight per thread
constexpr std::int64_t kMaxBlocks = 8192;  // grid-stride beyond this

// View of TensorTable::device_layout() in device memory: n target pointers, n online pointers,
// n + 1 element prefix sums, n + 1 chunk prefix sums.
struct DeviceTable {
  const std::uintptr_t* targets;
  const std::uintptr_t* onlines;
  const std::int64_t* prefix;
  const std::int64_t* chunk_prefix;
  int n;
  std::int64_t chunks;
};

template <typename T, bool kVectorized>
__global__ void __launch_bounds__(kThreads) ema_update_kernel(DeviceTable table, float w) {
  const std::int64_t chunk = chunk_elements(static_cast<int>(sizeof(T)));
  for (std::int64_t c = blockIdx.x; c < table.chunks; c += gridDim.x) {
    const ChunkRange r = locate_chunk(table.chunk_prefix, table.prefix, table.n, c, chunk);
    T* __restrict__ t = reinterpret_cast<T*>(table.targets[r.tensor]);
    const T* __restrict__ o = reinterpret_cast<const T*>(table.onlines[r.tensor]);
    std::int64_t scalar_begin = r.begin;
    if constexpr (kVectorized) {
      constexpr int kWidth = Vec16<T>::kWidth;
      const std::int64_t vend = vector_end(r.begin, r.end, kWidth);
      const std::int64_t nvec = (vend - r.begin) / kWidth;
      T* __restrict__ tv = t + r.begin;
      const T* __restrict__ ov = o + r.begin;
      // Consecutive threads take consecutive 16-byte vectors; kUnroll of them are loaded before use.
      for (std::int64_t base = threadIdx.x; base < nvec; base += std::int64_t{kThreads} * kUnroll) {
        float a[kUnroll][kWidth];
        float b[kUnroll][kWidth];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const std::int64_t v = base + std::int64_t{u} * kThreads;
          if (v < nvec) {
            Vec16<T>::load(tv + v * kWidth, a[u]);
            Vec16<T>::ldg(ov + v * kWidth, b[u]);  // the onlines are only read
          }
        }
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const std::int64_t v = base + std::int64_t{u} * kThreads;
          if (v < nvec) {
            float out[kWidth];
#pragma unroll
            for (int k = 0; k < kWidth; ++k) out[k] = lerp(a[u][k], b[u][k], w);
            Vec16<T>::store(tv + v * kWidth, out);
          }
        }
      }
      scalar_begin = vend;
    }
    // The tail (fewer than one vector), or the whole chunk when some buffer is not 16-byte aligned.
    for (std::int64_t base = scalar_begin + threadIdx.x; base < r.end; base += std::int64_t{kThreads} * kUnroll) {
      float a[kUnroll];
      float b[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t i = base + std::int64_t{u} * kThreads;
        if (i < r.end) {
          a[u] = Elem<T>::load(t + i);
          b[u] = Elem<T>::load(o + i);
        }
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const std::int64_t i = base + std::int64_t{u} * kThreads;
        if (i < r.end) Elem<T>::store(t + i, lerp(a[u], b[u], w));
      }
    }
  }
}

template <typename T>
void launch(const DeviceTable& dt, bool vectorized, float w, cudaStream_t s) {
  const unsigned blocks = static_cast<unsigned>(dt.chunks < kMaxBlocks ? dt.chunks : kMaxBlocks);
  if (vectorized) {
    ema_update_kernel<T, true><<<blocks, kThreads, 0, s>>>(dt, w);
  } else {
    ema_update_kernel<T, false><<<blocks, kThreads, 0, s>>>(dt, w);
  }
}

}  // namespace

int runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) return 0;
  return v;
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no device / no driver" error
    return 0;
  }
  return n;
}

void ema_update(const TensorTable& table, float weight, std::uintptr_t stream, std::uintptr_t device_layout) {
  if (table.depth() != 2) throw std::invalid_argument("ema_update_cuda: the table must hold 2 pointer lists");
  if (table.total() == 0) return;
  if (device_layout == 0 || device_layout % alignof(std::int64_t) != 0) {
    throw std::invalid_argument("ema_update_cuda: device_table must be the 8-byte aligned device address of "
                                "TensorTable.device_layout()");
  }
  const int n = table.size();
  const auto* words = reinterpret_cast<const std::int64_t*>(device_layout);
  DeviceTable dt;
  dt.targets = reinterpret_cast<const std::uintptr_t*>(words);
  dt.onlines = reinterpret_cast<const std::uintptr_t*>(words + n);
  dt.prefix = words + 2 * static_cast<std::int64_t>(n);
  dt.chunk_prefix = words + 3 * static_cast<std::int64_t>(n) + 1;
  dt.n = n;
  // The chunk count from the host copy of the table (the same numbers as the device layout's).
  dt.chunks = 0;
  const std::int64_t chunk = chunk_elements(dtype_size(table.dtype()));
  for (int i = 0; i < n; ++i) dt.chunks += chunk_count(table.numel(i), chunk);
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  const bool vec = table.aligned16();
  switch (table.dtype()) {
    case kFloat32: launch<float>(dt, vec, weight, s); break;
    case kFloat16: launch<__half>(dt, vec, weight, s); break;
    case kBFloat16: launch<__nv_bfloat16>(dt, vec, weight, s); break;
    default: throw std::invalid_argument("ema_update_cuda: unsupported dtype_code " + std::to_string(table.dtype()));
  }
  check(cudaGetLastError(), "ema_update_cuda", "kernel launch");
}

}  // namespace cuda
}  // namespace jepa
