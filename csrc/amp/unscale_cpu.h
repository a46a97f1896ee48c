// CPU loss-scaling kernels of jepa._C (see unscale_cpu.cpp): fused unscale + non-finite check over a
// TensorTable of gradients, and the dynamic scale update.
#pragma once

#include <cstdint>

#include "jepa/tensor_table.h"

namespace jepa {
namespace cpu {

struct UnscaleTuning {
  std::int64_t min_chunk_elements;       // bounds of the work unit claimed by one thread at a time
  std::int64_t max_chunk_elements;
  std::int64_t min_elements_per_thread;  // below this many elements per thread, use fewer threads
};
UnscaleTuning unscale_tuning();

// Whether float16/bfloat16 buffers use the AVX2/F16C intrinsics path on this CPU.
bool unscale_avx2_path();

struct UnscaleResult {
  bool found_nonfinite;  // some element of some tensor was inf or NaN (before scaling)
  int threads;           // number of threads that ran
};

// g <- g * inv_scale for every element of every tensor of `table` (depth 1), in float32 arithmetic and
// rounded once to the storage dtype, and reports whether any element was inf/NaN, in the same pass.
// inv_scale == 1 only checks (nothing is written). Split across up to `num_threads` threads (<= 0: all
// hardware threads). Safe to call without the GIL.
UnscaleResult unscale(const TensorTable& table, float inv_scale, int num_threads);

}  // namespace cpu
}  // namespace jepa
