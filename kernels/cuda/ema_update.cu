// CUDA multi-tensor EMA: target <- lerp(target, online, w) with w = 1 - momentum, over every tensor of a
// TensorTable in ONE kernel launch (apex multi_tensor_apply style, with the table in device memory).
//
// The tensors form one virtual index space [0, total) (csrc/include/jepa/multi_tensor.h). Each block
// takes fixed-size chunks of that space (grid-stride), finds the tensor owning the chunk start by a
// binary search over the prefix sums (jepa::locate_tensor, shared with the CPU code) and walks the
// pieces of the chunk, tensor after tensor. Element math is jepa::lerp (jepa/ema_math.h) in float32.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "jepa/cuda_elem.cuh"
#include "jepa/cuda_ops.h"
#include "jepa/dtype.h"
#include "jepa/ema_math.h"
#include "jepa/multi_tensor.h"

namespace jepa {
namespace cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 4;
constexpr std::int64_t kChunk = std::int64_t{kThreads} * kUnroll * 8;  // 8192 elements per chunk
constexpr std::int64_t kMaxBlocks = 8192;                               // grid-stride beyond this

// Layout of the table in device memory: n target pointers, n online pointers, n + 1 prefix sums.
struct DeviceTable {
  const std::uintptr_t* targets;
  const std::uintptr_t* onlines;
  const std::int64_t* prefix;
  int n;
  std::int64_t total;
};

template <typename T>
__global__ void __launch_bounds__(kThreads) ema_update_kernel(DeviceTable table, float w) {
  const std::int64_t nchunks = (table.total + kChunk - 1) / kChunk;
  for (std::int64_t c = blockIdx.x; c < nchunks; c += gridDim.x) {
    const std::int64_t begin = c * kChunk;
    const std::int64_t end = begin + kChunk < table.total ? begin + kChunk : table.total;
    int ti = locate_tensor(table.prefix, table.n, begin);
    std::int64_t pos = begin;
    while (pos < end && ti < table.n) {
      const std::int64_t t0 = table.prefix[ti];
      const std::int64_t t1 = table.prefix[ti + 1];
      const std::int64_t stop = end < t1 ? end : t1;
      if (stop > pos) {
        T* __restrict__ t = reinterpret_cast<T*>(table.targets[ti]);
        const T* __restrict__ o = reinterpret_cast<const T*>(table.onlines[ti]);
        const std::int64_t lo = pos - t0;
        const std::int64_t hi = stop - t0;
        // kUnroll independent loads in flight per thread; consecutive threads touch consecutive elements.
        for (std::int64_t base = lo + threadIdx.x; base < hi; base += std::int64_t{kThreads} * kUnroll) {
          float a[kUnroll];
          float b[kUnroll];
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            const std::int64_t i = base + std::int64_t{u} * kThreads;
            if (i < hi) {
              a[u] = Elem<T>::load(t + i);
              b[u] = Elem<T>::load(o + i);
            }
          }
#pragma unroll
          for (int u = 0; u < kUnroll; ++u) {
            const std::int64_t i = base + std::int64_t{u} * kThreads;
            if (i < hi) Elem<T>::store(t + i, lerp(a[u], b[u], w));
          }
        }
        pos = stop;
      }
      ++ti;
    }
  }
}

// Uploads the table's pointers and prefix sums to the current device once and keeps them with the
// table (synchronous copy: the copy is complete before any stream can use it).
DeviceTable device_table(const TensorTable& table) {
  int device = -1;
  check(cudaGetDevice(&device), "ema_update_cuda", "cudaGetDevice");
  const int n = table.size();
  const std::size_t ptr_bytes = static_cast<std::size_t>(n) * sizeof(std::uintptr_t);
  const std::size_t prefix_bytes = (static_cast<std::size_t>(n) + 1) * sizeof(std::int64_t);
  std::lock_guard<std::mutex> lock(table.device_mutex());
  TensorTable::DeviceCopy& copy = table.device_copy();
  if (!copy.data || copy.device != device) {
    std::vector<unsigned char> host(2 * ptr_bytes + prefix_bytes);
    std::memcpy(host.data(), table.ptrs(0), ptr_bytes);
    std::memcpy(host.data() + ptr_bytes, table.ptrs(1), ptr_bytes);
    std::memcpy(host.data() + 2 * ptr_bytes, table.prefix(), prefix_bytes);
    void* dev = nullptr;
    check(cudaMalloc(&dev, host.size()), "ema_update_cuda", "cudaMalloc");
    std::shared_ptr<void> owner(dev, [](void* p) { cudaFree(p); });  // errors at teardown are ignored
    check(cudaMemcpy(dev, host.data(), host.size(), cudaMemcpyHostToDevice), "ema_update_cuda", "cudaMemcpy");
    copy.device = device;
    copy.data = std::move(owner);
  }
  auto* base = static_cast<const unsigned char*>(copy.data.get());
  DeviceTable out;
  out.targets = reinterpret_cast<const std::uintptr_t*>(base);
  out.onlines = reinterpret_cast<const std::uintptr_t*>(base + ptr_bytes);
  out.prefix = reinterpret_cast<const std::int64_t*>(base + 2 * ptr_bytes);
  out.n = n;
  out.total = table.total();
  return out;
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

void ema_update(const TensorTable& table, float weight, std::uintptr_t stream) {
  if (table.depth() != 2) throw std::invalid_argument("ema_update_cuda: the table must hold 2 pointer lists");
  if (table.total() == 0) return;
  const DeviceTable dt = device_table(table);
  const std::int64_t nchunks = (dt.total + kChunk - 1) / kChunk;
  const unsigned blocks = static_cast<unsigned>(nchunks < kMaxBlocks ? nchunks : kMaxBlocks);
  cudaStream_t s = reinterpret_cast<cudaStream_t>(stream);
  switch (table.dtype()) {
    case kFloat32: ema_update_kernel<float><<<blocks, kThreads, 0, s>>>(dt, weight); break;
    case kFloat16: ema_update_kernel<__half><<<blocks, kThreads, 0, s>>>(dt, weight); break;
    case kBFloat16: ema_update_kernel<__nv_bfloat16><<<blocks, kThreads, 0, s>>>(dt, weight); break;
    default: throw std::invalid_argument("ema_update_cuda: unsupported dtype_code " + std::to_string(table.dtype()));
  }
  check(cudaGetLastError(), "ema_update_cuda", "kernel launch");
}

}  // namespace cuda
}  // namespace jepa
