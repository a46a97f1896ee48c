// Element math of the EMA update, shared by the CPU loop (csrc/ema_cpu.cpp) and the CUDA kernel
// (kernels/cuda/ema_update.cu). All arithmetic is in float32, also for float16/bfloat16 storage.
#pragma once

#include "jepa/macros.h"

namespace jepa {

// lerp(a, b, w) = a + w * (b - a), written as torch.lerp writes it (aten/src/ATen/native/Lerp.h):
// for |w| < 0.5 start from a, otherwise from b, so that w == 0 returns a and w == 1 returns b
// exactly, and the result matches torch._foreach_lerp_ (the reference) to the last bit or one ulp.
JEPA_HD JEPA_FORCEINLINE float lerp(float a, float b, float w) {
  const float d = b - a;
  return (w < 0.5f && w > -0.5f) ? a + w * d : b - d * (1.0f - w);
}

// The EMA of a target toward an online value: m * target + (1 - m) * online == lerp(target, online, 1 - m).
// Callers compute the weight once per call as float(1.0 - m) in double precision, as torch does.
JEPA_HD JEPA_FORCEINLINE float ema_weight(double momentum) { return static_cast<float>(1.0 - momentum); }

}  // namespace jepa
