// Host entry points of the CUDA kernels in kernels/cuda/*.cu. Compiled only when CMake enabled CUDA
// (JEPA_WITH_CUDA); the bindings in csrc/bindings.cpp call them. Errors are thrown as
// std::runtime_error / std::invalid_argument with the CUDA error string.
#pragma once

#include <cstdint>
#include <string>

#include "jepa/tensor_table.h"

namespace jepa {
namespace cuda {

// cudart version the module was built against, e.g. 13000 for 13.0.
int runtime_version();
// Number of visible CUDA devices; 0 when there is no driver or no device (never throws).
int device_count();

// target[i] <- lerp(target[i], online[i], weight) for every tensor of the depth-2 table, in one
// kernel launch on `stream` (a cudaStream_t as an integer; 0 is the legacy default stream).
// `device_layout` is the device address of table.device_layout() copied to the current device (the
// caller owns that memory and keeps it alive); the table's pointers must be device pointers on that
// device. Nothing is allocated, copied or synchronized here: the call only enqueues the kernel.
void ema_update(const TensorTable& table, float weight, std::uintptr_t stream, std::uintptr_t device_layout);

// Loss scaling (kernels/cuda/unscale.cu). g <- g * (*inv_scale) for every tensor of the depth-1 table and
// *found_inf <- 1.0f when any element was inf/NaN, in one launch on `stream`; inv_scale and found_inf are
// device pointers (read/written on the device: no host sync). *inv_scale == 1 only checks.
void unscale(const TensorTable& table, const float* inv_scale, float* found_inf, std::uintptr_t stream);
// jepa::update_scale (jepa/amp_math.h) on device pointers, one single-thread launch on `stream`.
void update_scale(float* scale, std::int32_t* growth_tracker, const float* found_inf, double growth_factor,
                  double backoff_factor, std::int64_t growth_interval, std::uintptr_t stream);

}  // namespace cuda
}  // namespace jepa
