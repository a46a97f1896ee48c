// CPU multi-tensor EMA: target <- lerp(target, online, 1 - momentum) over a TensorTable.
//
// The tensors form one virtual index space (jepa/multi_tensor.h). A small total runs on the calling
// thread, tensor after tensor; a large one is cut into chunks (total / (8 * threads) elements) that
// the pool's threads claim from an atomic counter, so 2,000 tiny tensors cost one call and one big
// tensor is shared by every thread. The inner loops are plain indexable loops the compiler vectorizes (compiled for
// baseline x86-64 and x86-64-v3 via target_clones); float16 and bfloat16 use AVX2/F16C intrinsics when present.
// Results do not depend on the thread count: every element gets the same instruction sequence.
#include "ema_cpu.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "jepa/dtype.h"
#include "jepa/ema_math.h"
#include "jepa/multi_tensor.h"
#include "cpu_features.h"
#include "thread_pool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define JEPA_X86_F16C_PATH 1
#else
#define JEPA_X86_F16C_PATH 0
#endif

namespace jepa {
namespace cpu {

namespace {

// Measured on a 2-core x86-64 KVM guest (AMD EPYC, benchmarks/bench_ema_update.py): waking a
// sleeping pool worker costs tens of microseconds there, and one core alone already saturates DRAM
// bandwidth, so a second thread pays off for cache-resident totals from ~1M float32 elements (512K
// per thread); below that one thread runs. Workers sleep between calls rather than spin, so they
// never take cycles from torch's own threads. Threads claim chunks of total / (8 * threads)
// elements, clamped to [16K, 1M], so the work stays balanced when a core is busy with something else.
constexpr std::int64_t kMinElementsPerThread = std::int64_t{1} << 19;
constexpr std::int64_t kMinChunkElements = std::int64_t{16} * 1024;
constexpr std::int64_t kMaxChunkElements = std::int64_t{1} << 20;
constexpr std::int64_t kChunksPerThread = 8;

using SpanFn = void (*)(void* target, const void* online, std::int64_t n, float w);

JEPA_TARGET_CLONES void ema_span_f32(float* __restrict t, const float* __restrict o, std::int64_t n, float w) {
  for (std::int64_t i = 0; i < n; ++i) t[i] = lerp(t[i], o[i], w);
}

JEPA_TARGET_CLONES void ema_span_bf16(std::uint16_t* __restrict t, const std::uint16_t* __restrict o, std::int64_t n,
                                      float w) {
  for (std::int64_t i = 0; i < n; ++i) {
    t[i] = float_to_bf16_bits(lerp(bf16_bits_to_float(t[i]), bf16_bits_to_float(o[i]), w));
  }
}

// float16 without a vector conversion instruction: a native half type where the compiler has one,
// else the portable integer conversions of jepa/dtype.h.
void ema_span_f16_scalar(std::uint16_t* __restrict t, const std::uint16_t* __restrict o, std::int64_t n, float w) {
#if defined(__FLT16_MANT_DIG__) && !defined(JEPA_NO_FLOAT16)
  for (std::int64_t i = 0; i < n; ++i) {
    _Float16 a, b;
    std::memcpy(&a, t + i, 2);
    std::memcpy(&b, o + i, 2);
    const _Float16 r = static_cast<_Float16>(lerp(static_cast<float>(a), static_cast<float>(b), w));
    std::memcpy(t + i, &r, 2);
  }
#else
  for (std::int64_t i = 0; i < n; ++i) {
    t[i] = float_to_fp16_bits_portable(lerp(fp16_bits_to_float_portable(t[i]), fp16_bits_to_float_portable(o[i]), w));
  }
#endif
}

#if JEPA_X86_F16C_PATH
#define JEPA_F16C_TARGET __attribute__((target("avx2,fma,f16c")))

// small w: a + w * d; else b - d * (1 - w)  (jepa::lerp on 8 lanes, fused as torch's AVX2 kernel fuses it)
JEPA_F16C_TARGET inline __m128i ema_step_f16c(const std::uint16_t* tp, const std::uint16_t* op, bool small, __m256 vw,
                                              __m256 v1mw) {
  const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tp)));
  const __m256 b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(op)));
  const __m256 d = _mm256_sub_ps(b, a);
  const __m256 r = small ? _mm256_fmadd_ps(vw, d, a) : _mm256_fnmadd_ps(d, v1mw, b);
  return _mm256_cvtps_ph(r, _MM_FROUND_TO_NEAREST_INT);
}

// 8 halves at a time; the tail goes through the same vector code on a padded copy, so each element
// sees exactly the same arithmetic wherever a chunk boundary falls.
JEPA_F16C_TARGET void ema_span_f16_f16c(std::uint16_t* __restrict t, const std::uint16_t* __restrict o, std::int64_t n,
                                        float w) {
  const bool small = (w < 0.5f && w > -0.5f);
  const __m256 vw = _mm256_set1_ps(w);
  const __m256 v1mw = _mm256_set1_ps(1.0f - w);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(t + i), ema_step_f16c(t + i, o + i, small, vw, v1mw));
  }
  if (i < n) {
    alignas(16) std::uint16_t ta[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    alignas(16) std::uint16_t oa[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const std::size_t rest = static_cast<std::size_t>(n - i);
    std::memcpy(ta, t + i, rest * 2);
    std::memcpy(oa, o + i, rest * 2);
    _mm_store_si128(reinterpret_cast<__m128i*>(ta), ema_step_f16c(ta, oa, small, vw, v1mw));
    std::memcpy(t + i, ta, rest * 2);
  }
}

// bfloat16, 16 at a time: widen (shift), jepa::lerp fused as above, round to nearest even, NaN -> 0x7FC0
// (jepa::float_to_bf16_bits on 8 lanes). Written out because compilers vectorize the scalar loop poorly.
JEPA_F16C_TARGET inline __m256i ema_bf16x8_f32(const std::uint16_t* tp, const std::uint16_t* op, bool small, __m256 vw,
                                               __m256 v1mw) {
  const __m256 a = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(tp))), 16));
  const __m256 b = _mm256_castsi256_ps(
      _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(op))), 16));
  const __m256 d = _mm256_sub_ps(b, a);
  const __m256 r = small ? _mm256_fmadd_ps(vw, d, a) : _mm256_fnmadd_ps(d, v1mw, b);
  const __m256i u = _mm256_castps_si256(r);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256i is_nan =
      _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)), _mm256_set1_epi32(0x7F800000));
  return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), is_nan);  // 8 x uint32 holding bf16 bits
}

JEPA_F16C_TARGET inline void ema_step_bf16x16(std::uint16_t* tp, const std::uint16_t* op, bool small, __m256 vw,
                                              __m256 v1mw) {
  const __m256i lo = ema_bf16x8_f32(tp, op, small, vw, v1mw);
  const __m256i hi = ema_bf16x8_f32(tp + 8, op + 8, small, vw, v1mw);
  // packus works within 128-bit lanes: [lo0 hi0 lo1 hi1] -> reorder the 64-bit quarters to [lo0 lo1 hi0 hi1]
  const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(tp), packed);
}

JEPA_F16C_TARGET void ema_span_bf16_avx2(std::uint16_t* __restrict t, const std::uint16_t* __restrict o, std::int64_t n,
                                         float w) {
  const bool small = (w < 0.5f && w > -0.5f);
  const __m256 vw = _mm256_set1_ps(w);
  const __m256 v1mw = _mm256_set1_ps(1.0f - w);
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) ema_step_bf16x16(t + i, o + i, small, vw, v1mw);
  if (i < n) {  // same vector code on a padded copy: results do not depend on where a chunk ends
    alignas(32) std::uint16_t ta[16] = {};
    alignas(32) std::uint16_t oa[16] = {};
    const std::size_t rest = static_cast<std::size_t>(n - i);
    std::memcpy(ta, t + i, rest * 2);
    std::memcpy(oa, o + i, rest * 2);
    ema_step_bf16x16(ta, oa, small, vw, v1mw);
    std::memcpy(t + i, ta, rest * 2);
  }
}

#endif

void span_f32(void* t, const void* o, std::int64_t n, float w) {
  ema_span_f32(static_cast<float*>(t), static_cast<const float*>(o), n, w);
}
void span_bf16(void* t, const void* o, std::int64_t n, float w) {
#if JEPA_X86_F16C_PATH
  if (cpu_avx2_fma_f16c()) {
    ema_span_bf16_avx2(static_cast<std::uint16_t*>(t), static_cast<const std::uint16_t*>(o), n, w);
    return;
  }
#endif
  ema_span_bf16(static_cast<std::uint16_t*>(t), static_cast<const std::uint16_t*>(o), n, w);
}
void span_f16(void* t, const void* o, std::int64_t n, float w) {
#if JEPA_X86_F16C_PATH
  if (cpu_avx2_fma_f16c()) {
    ema_span_f16_f16c(static_cast<std::uint16_t*>(t), static_cast<const std::uint16_t*>(o), n, w);
    return;
  }
#endif
  ema_span_f16_scalar(static_cast<std::uint16_t*>(t), static_cast<const std::uint16_t*>(o), n, w);
}

SpanFn span_for(int dtype) {
  switch (dtype) {
    case kFloat32: return &span_f32;
    case kFloat16: return &span_f16;
    case kBFloat16: return &span_bf16;
    default: throw std::invalid_argument("ema_update: unsupported dtype_code " + std::to_string(dtype));
  }
}

}  // namespace

EmaTuning ema_tuning() { return EmaTuning{kMinChunkElements, kMaxChunkElements, kMinElementsPerThread}; }

std::int64_t chunk_elements(std::int64_t total, int threads) {
  std::int64_t chunk = total / (kChunksPerThread * std::max(1, threads));
  chunk = std::min(kMaxChunkElements, std::max(kMinChunkElements, chunk));
  return (chunk + 1023) / 1024 * 1024;
}

bool avx2_vector_path() { return cpu_avx2_fma_f16c(); }

int ema_update(const TensorTable& table, double momentum, int num_threads) {
  if (table.depth() != 2) {
    throw std::invalid_argument("ema_update: the table must hold 2 pointer lists (targets, onlines), got " +
                                std::to_string(table.depth()));
  }
  if (!(momentum >= 0.0 && momentum <= 1.0)) {
    throw std::invalid_argument("ema_update: momentum=" + std::to_string(momentum) + " must be in [0, 1]");
  }
  const std::int64_t total = table.total();
  if (total == 0) return 0;
  const float w = ema_weight(momentum);
  const SpanFn span = span_for(table.dtype());
  const std::int64_t esize = dtype_size(table.dtype());
  const std::int64_t* prefix = table.prefix();
  const int n = table.size();
  const std::uintptr_t* tp = table.ptrs(0);
  const std::uintptr_t* op = table.ptrs(1);

  auto run_range = [&](std::int64_t begin, std::int64_t end) {
    for_each_piece(prefix, n, begin, end, [&](int ti, std::int64_t lo, std::int64_t hi) {
      span(reinterpret_cast<void*>(tp[ti] + static_cast<std::uintptr_t>(lo * esize)),
           reinterpret_cast<const void*>(op[ti] + static_cast<std::uintptr_t>(lo * esize)), hi - lo, w);
    });
  };

  if (num_threads <= 0) num_threads = hardware_threads();
  const std::int64_t by_size = std::max<std::int64_t>(1, total / kMinElementsPerThread);
  const int threads = static_cast<int>(std::min<std::int64_t>({static_cast<std::int64_t>(num_threads), by_size,
                                                                static_cast<std::int64_t>(ThreadPool::kMaxThreads)}));
  if (threads <= 1) {
    run_range(0, total);
    return 1;
  }
  const std::int64_t chunk = chunk_elements(total, threads);
  const std::int64_t nchunks = (total + chunk - 1) / chunk;
  std::atomic<std::int64_t> next{0};
  const std::function<void(int)> job = [&](int) {
    for (;;) {
      const std::int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= nchunks) return;
      const std::int64_t begin = c * chunk;
      run_range(begin, std::min(begin + chunk, total));
    }
  };
  return ThreadPool::instance().run(threads, job);
}

}  // namespace cpu
}  // namespace jepa
