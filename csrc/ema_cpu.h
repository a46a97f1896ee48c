// CPU multi-tensor EMA update (see ema_cpu.cpp).
#pragma once

#include <cstdint>

#include "jepa/tensor_table.h"

namespace jepa {
namespace cpu {

struct EmaTuning {
  std::int64_t min_chunk_elements;       // bounds of the work unit claimed by one thread at a time
  std::int64_t max_chunk_elements;
  std::int64_t min_elements_per_thread;  // below this many elements per thread, use fewer threads
};
EmaTuning ema_tuning();

// Chunk size for `total` elements on `threads` threads: total / (8 * threads) clamped to the bounds.
std::int64_t chunk_elements(std::int64_t total, int threads);

// Whether float16/bfloat16 buffers use the AVX2/FMA/F16C intrinsics path on this CPU.
bool avx2_vector_path();

// target <- momentum * target + (1 - momentum) * online for every tensor of `table` (depth 2:
// list 0 = targets, list 1 = onlines), split across up to `num_threads` threads (<= 0: all hardware
// threads). Safe to call without the GIL. Returns the number of threads that ran.
int ema_update(const TensorTable& table, double momentum, int num_threads);

}  // namespace cpu
}  // namespace jepa
