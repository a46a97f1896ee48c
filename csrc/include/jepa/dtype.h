// Element types of the raw buffers passed to jepa._C, and float16/bfloat16 <-> float32 conversions.
#pragma once

#include <cstdint>
#include <cstring>

#include "jepa/macros.h"

namespace jepa {

// Dtype codes shared with Python (jepa/ops/_native.py reads them from jepa._C.DTYPE_*).
enum DType : int {
  kFloat32 = 0,
  kFloat16 = 1,
  kBFloat16 = 2,
};
constexpr int kNumDTypes = 3;

inline bool dtype_valid(int code) { return code >= 0 && code < kNumDTypes; }

inline int dtype_size(int code) {
  switch (code) {
    case kFloat32: return 4;
    case kFloat16: return 2;
    case kBFloat16: return 2;
    default: return 0;
  }
}

inline const char* dtype_name(int code) {
  switch (code) {
    case kFloat32: return "float32";
    case kFloat16: return "float16";
    case kBFloat16: return "bfloat16";
    default: return "invalid";
  }
}

JEPA_HD JEPA_FORCEINLINE std::uint32_t float_as_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
#endif
}

JEPA_HD JEPA_FORCEINLINE float bits_as_float(std::uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
#endif
}

// bfloat16 is the top half of a float32: widening is exact.
JEPA_HD JEPA_FORCEINLINE float bf16_bits_to_float(std::uint16_t h) {
  return bits_as_float(static_cast<std::uint32_t>(h) << 16);
}

// float32 -> bfloat16 with round-to-nearest-even; NaN stays a (quiet) NaN. Same as c10::BFloat16.
JEPA_HD JEPA_FORCEINLINE std::uint16_t float_to_bf16_bits(float f) {
  const std::uint32_t u = float_as_bits(f);
  const std::uint32_t rounded = u + (((u >> 16) & 1u) + 0x7FFFu);
  const bool is_nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return is_nan ? static_cast<std::uint16_t>(0x7FC0u) : static_cast<std::uint16_t>(rounded >> 16);
}

// IEEE binary16 -> float32, exact, portable integer code (used where no native half type exists).
JEPA_HD inline float fp16_bits_to_float_portable(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  std::uint32_t exp = (h >> 10) & 0x1Fu;
  std::uint32_t mant = h & 0x3FFu;
  std::uint32_t bits;
  if (exp == 0x1Fu) {  // inf / nan
    bits = sign | 0x7F800000u | (mant << 13) | (mant ? 0x00400000u : 0u);
  } else if (exp != 0) {  // normal
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {  // signed zero
    bits = sign;
  } else {  // subnormal: value = mant * 2^-24
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | (static_cast<std::uint32_t>(112 - e) << 23) | ((mant & 0x3FFu) << 13);
  }
  return bits_as_float(bits);
}

// float32 -> IEEE binary16 with round-to-nearest-even, overflow to inf, NaN kept NaN.
JEPA_HD inline std::uint16_t float_to_fp16_bits_portable(float f) {
  const std::uint32_t u = float_as_bits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return static_cast<std::uint16_t>(sign | 0x7E00u);  // nan
  if (a >= 0x477FF000u) return static_cast<std::uint16_t>(sign | 0x7C00u);  // >= 65520: rounds to inf
  if (a < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
    if (a < 0x33000000u) return sign;  // < 2^-25: rounds to zero (2^-25 itself is a tie to even 0)
    const std::uint32_t e = a >> 23;  // 102..112
    const std::uint32_t m = (a & 0x7FFFFFu) | 0x800000u;
    const std::uint32_t shift = 126u - e;  // 14..24 so that result = m >> shift in units of 2^-24
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  // normal: rebias exponent (127 -> 15) and round the 13 dropped mantissa bits to nearest even
  const std::uint32_t rebased = a - 0x38000000u;  // exponent - 112
  const std::uint32_t r = (rebased + 0x0FFFu + ((rebased >> 13) & 1u)) >> 13;
  return static_cast<std::uint16_t>(sign | r);
}

}  // namespace jepa
