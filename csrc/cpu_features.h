// Which CPU vector paths jepa._C may use (shared by the EMA and the loss-scaling loops).
#pragma once

namespace jepa {

// True when the AVX2 + FMA + F16C loops may run: an x86-64 GCC/Clang build on a CPU that has them,
// and JEPA_CPU_DISABLE_AVX2 unset or "0" (the tests set it to cover the portable loops on AVX2
// machines). Decided once per process.
bool cpu_avx2_fma_f16c();

}  // namespace jepa
