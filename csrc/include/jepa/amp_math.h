// Element math of loss scaling (jepa.amp.GradScaler), shared by the CPU loop (csrc/amp/unscale_cpu.cpp)
// and the CUDA kernels (kernels/cuda/unscale.cu). The reference is torch's
// _amp_foreach_non_finite_check_and_unscale_ / _amp_update_scale_ (aten/src/ATen/native/cpu/AmpGradScalerKernels.cpp).
#pragma once

#include <cstdint>

#include "jepa/dtype.h"
#include "jepa/macros.h"

namespace jepa {

// Non-finite (inf or NaN) tests on the raw bits: the exponent field is all ones. Integer tests need no
// float conversion and vectorize to a max/or reduction. The magnitude bits are compared with the
// exponent mask, so both signs of inf and every NaN payload count.
JEPA_HD JEPA_FORCEINLINE bool f32_bits_nonfinite(std::uint32_t u) { return (u & 0x7FFFFFFFu) >= 0x7F800000u; }
JEPA_HD JEPA_FORCEINLINE bool f16_bits_nonfinite(std::uint16_t h) { return (h & 0x7FFFu) >= 0x7C00u; }
JEPA_HD JEPA_FORCEINLINE bool bf16_bits_nonfinite(std::uint16_t h) { return (h & 0x7FFFu) >= 0x7F80u; }

// The same tests as branch-free flags for OR-reductions over many elements: adding the distance from the
// largest finite magnitude to the sign position carries into the top bit exactly when the magnitude is
// >= the exponent mask (no overflow: 0x7FFFFFFF + 0x00800000 < 2^32). Nonzero top bit <=> non-finite.
// Plain and/add/or, so a loop over them vectorizes on any SIMD level (no unsigned max needed).
JEPA_HD JEPA_FORCEINLINE std::uint32_t f32_nonfinite_flag(std::uint32_t u) {
  return ((u & 0x7FFFFFFFu) + 0x00800000u) & 0x80000000u;
}
JEPA_HD JEPA_FORCEINLINE std::uint16_t f16_nonfinite_flag(std::uint16_t h) {
  return static_cast<std::uint16_t>(((h & 0x7FFFu) + 0x0400u) & 0x8000u);
}
JEPA_HD JEPA_FORCEINLINE std::uint16_t bf16_nonfinite_flag(std::uint16_t h) {
  return static_cast<std::uint16_t>(((h & 0x7FFFu) + 0x0080u) & 0x8000u);
}

// One unscaled gradient element, in float32 (also for float16/bfloat16 storage, rounded once on store).
// inv_scale == 1 returns the value untouched, as torch does (its GradScaler checks for inf with a dummy
// inv_scale of 1 before fused optimizers; callers may then skip the store altogether).
JEPA_HD JEPA_FORCEINLINE float unscale_value(float v, float inv_scale) { return inv_scale == 1.0f ? v : v * inv_scale; }

// The scale update of a dynamic loss scaler after one iteration (torch._amp_update_scale_):
//   found_inf != 0 (NaN counts as nonzero): scale <- scale * backoff_factor, tracker <- 0;
//   else tracker + 1 == growth_interval:    scale <- scale * growth_factor when that is finite, tracker <- 0;
//   else:                                   tracker <- tracker + 1.
// Products are formed in double and rounded once to float32, as torch does on CPU and CUDA.
JEPA_HD inline void update_scale(float* scale, std::int32_t* growth_tracker, float found_inf, double growth_factor,
                                 double backoff_factor, std::int64_t growth_interval) {
  if (found_inf != 0.0f) {
    *scale = static_cast<float>(static_cast<double>(*scale) * backoff_factor);
    *growth_tracker = 0;
    return;
  }
  const std::int64_t successful = static_cast<std::int64_t>(*growth_tracker) + 1;
  if (successful == growth_interval) {
    const float grown = static_cast<float>(static_cast<double>(*scale) * growth_factor);
    // Do not grow past float32's range to inf (the finite test on the bits works on host and device).
    if (!f32_bits_nonfinite(float_as_bits(grown))) *scale = grown;
    *growth_tracker = 0;
  } else {
    *growth_tracker = static_cast<std::int32_t>(successful);
  }
}

}  // namespace jepa
