// CPU fused unscale: g <- g * inv_scale over every gradient of a TensorTable, and "was any element inf or
// NaN" from the same pass (torch needs one TensorIterator pass per tensor for the same job).
//
// Layout and threading follow the CPU EMA (csrc/ema_cpu.cpp): the tensors form one virtual index space
// (jepa/multi_tensor.h); a small total runs on the calling thread, a large one is cut into chunks that
// the pool's threads claim from an atomic counter. Each thread ORs branch-free non-finite flags on the
// raw bits (jepa/amp_math.h) and publishes one bool at the end, so the hot loop has no branch and no
// shared write. float32 is a plain loop the compiler vectorizes (target_clones: baseline x86-64 and
// x86-64-v3); float16 and bfloat16 use AVX2/F16C intrinsics where the CPU has them, else portable code.
// Every element gets the same instruction sequence wherever a chunk boundary falls, so results do not
// depend on the thread count.
#include "unscale_cpu.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>

#include "jepa/amp_math.h"
#include "jepa/dtype.h"
#include "jepa/multi_tensor.h"
#include "cpu_features.h"
#include "thread_pool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define JEPA_UNSCALE_X86_PATH 1
#else
#define JEPA_UNSCALE_X86_PATH 0
#endif

namespace jepa {
namespace cpu {

namespace {

// Same reasoning as the EMA (ema_cpu.cpp): one core nearly saturates DRAM bandwidth on the 2-core
// machine this was tuned on and waking a pool worker costs tens of microseconds, so a second thread is
// only worth it from ~1M elements; chunks of total / (8 * threads) clamped to [16K, 1M] keep the
// threads balanced when a core is busy elsewhere.
constexpr std::int64_t kMinElementsPerThread = std::int64_t{1} << 19;
constexpr std::int64_t kMinChunkElements = std::int64_t{16} * 1024;
constexpr std::int64_t kMaxChunkElements = std::int64_t{1} << 20;
constexpr std::int64_t kChunksPerThread = 8;

// A span kernel unscales (or, with kCheckOnly, only checks) n elements at p and returns true when one of
// them was non-finite.
using SpanFn = bool (*)(void* p, std::int64_t n, float inv);

JEPA_TARGET_CLONES bool span_f32_scale(float* __restrict p, std::int64_t n, float inv) {
  std::uint32_t flag = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const float v = p[i];
    flag |= f32_nonfinite_flag(float_as_bits(v));
    p[i] = v * inv;
  }
  return flag != 0;
}

JEPA_TARGET_CLONES bool span_f32_check(const float* __restrict p, std::int64_t n) {
  std::uint32_t flag = 0;
  for (std::int64_t i = 0; i < n; ++i) flag |= f32_nonfinite_flag(float_as_bits(p[i]));
  return flag != 0;
}

// 16-bit storage: the check-only pass is the same for float16 and bfloat16 up to the flag function.
JEPA_TARGET_CLONES bool span_f16_check(const std::uint16_t* __restrict p, std::int64_t n) {
  std::uint16_t flag = 0;
  for (std::int64_t i = 0; i < n; ++i) flag = static_cast<std::uint16_t>(flag | f16_nonfinite_flag(p[i]));
  return flag != 0;
}

JEPA_TARGET_CLONES bool span_bf16_check(const std::uint16_t* __restrict p, std::int64_t n) {
  std::uint16_t flag = 0;
  for (std::int64_t i = 0; i < n; ++i) flag = static_cast<std::uint16_t>(flag | bf16_nonfinite_flag(p[i]));
  return flag != 0;
}

bool span_bf16_scale_portable(std::uint16_t* __restrict p, std::int64_t n, float inv) {
  std::uint16_t flag = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint16_t h = p[i];
    flag = static_cast<std::uint16_t>(flag | bf16_nonfinite_flag(h));
    p[i] = float_to_bf16_bits(bf16_bits_to_float(h) * inv);
  }
  return flag != 0;
}

// float16 without vector conversions: a native half type where the compiler has one, else the portable
// integer conversions of jepa/dtype.h.
bool span_f16_scale_portable(std::uint16_t* __restrict p, std::int64_t n, float inv) {
  std::uint16_t flag = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::uint16_t h = p[i];
    flag = static_cast<std::uint16_t>(flag | f16_nonfinite_flag(h));
#if defined(__FLT16_MANT_DIG__) && !defined(JEPA_NO_FLOAT16)
    _Float16 a;
    std::memcpy(&a, &h, 2);
    const _Float16 r = static_cast<_Float16>(static_cast<float>(a) * inv);
    std::memcpy(p + i, &r, 2);
#else
    p[i] = float_to_fp16_bits_portable(fp16_bits_to_float_portable(h) * inv);
#endif
  }
  return flag != 0;
}

#if JEPA_UNSCALE_X86_PATH
#define JEPA_UNSCALE_F16C_TARGET __attribute__((target("avx2,fma,f16c")))

// 8 halves: OR the non-finite flags of the inputs into *flag, return the products rounded to half (RNE).
JEPA_UNSCALE_F16C_TARGET inline __m128i f16x8_scale(const std::uint16_t* p, __m256 vinv, __m128i* flag) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  *flag = _mm_or_si128(*flag, _mm_add_epi16(_mm_and_si128(h, _mm_set1_epi16(0x7FFF)), _mm_set1_epi16(0x0400)));
  return _mm256_cvtps_ph(_mm256_mul_ps(_mm256_cvtph_ps(h), vinv), _MM_FROUND_TO_NEAREST_INT);
}

// The top bit of any 16-bit lane of the flag vector set <=> non-finite seen (movemask: odd bytes).
JEPA_UNSCALE_F16C_TARGET inline bool any_top16(__m128i flag) { return (_mm_movemask_epi8(flag) & 0xAAAA) != 0; }

// The tail goes through the same vector code on a zero-padded copy (zeros are finite), so every element
// sees exactly the same arithmetic wherever a chunk ends.
JEPA_UNSCALE_F16C_TARGET bool span_f16_scale_f16c(std::uint16_t* __restrict p, std::int64_t n, float inv) {
  const __m256 vinv = _mm256_set1_ps(inv);
  __m128i flag = _mm_setzero_si128();
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm_storeu_si128(reinterpret_cast<__m128i*>(p + i), f16x8_scale(p + i, vinv, &flag));
  if (i < n) {
    alignas(16) std::uint16_t pad[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    const std::size_t rest = static_cast<std::size_t>(n - i);
    std::memcpy(pad, p + i, rest * 2);
    _mm_store_si128(reinterpret_cast<__m128i*>(pad), f16x8_scale(pad, vinv, &flag));
    std::memcpy(p + i, pad, rest * 2);
  }
  return any_top16(flag);
}

// 8 bfloat16 -> float32 (exact: shift left 16), times inv, back with round-to-nearest-even and NaN ->
// 0x7FC0 (jepa::float_to_bf16_bits on 8 lanes); the result is 8 x uint32 holding bf16 bits.
JEPA_UNSCALE_F16C_TARGET inline __m256i bf16x8_scale(__m128i h, __m256 vinv) {
  const __m256 x = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  const __m256i u = _mm256_castps_si256(_mm256_mul_ps(x, vinv));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256i is_nan =
      _mm256_cmpgt_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7FFFFFFF)), _mm256_set1_epi32(0x7F800000));
  return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), is_nan);
}

JEPA_UNSCALE_F16C_TARGET inline void bf16x16_scale(std::uint16_t* p, __m256 vinv, __m256i* flag) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  *flag = _mm256_or_si256(*flag,
                          _mm256_add_epi16(_mm256_and_si256(h, _mm256_set1_epi16(0x7FFF)), _mm256_set1_epi16(0x0080)));
  const __m256i lo = bf16x8_scale(_mm256_castsi256_si128(h), vinv);
  const __m256i hi = bf16x8_scale(_mm256_extracti128_si256(h, 1), vinv);
  // packus works within 128-bit lanes: [lo0 hi0 lo1 hi1] -> reorder the 64-bit quarters to [lo0 lo1 hi0 hi1]
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8));
}

JEPA_UNSCALE_F16C_TARGET bool span_bf16_scale_avx2(std::uint16_t* __restrict p, std::int64_t n, float inv) {
  const __m256 vinv = _mm256_set1_ps(inv);
  __m256i flag = _mm256_setzero_si256();
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) bf16x16_scale(p + i, vinv, &flag);
  if (i < n) {
    alignas(32) std::uint16_t pad[16] = {};
    const std::size_t rest = static_cast<std::size_t>(n - i);
    std::memcpy(pad, p + i, rest * 2);
    bf16x16_scale(pad, vinv, &flag);
    std::memcpy(p + i, pad, rest * 2);
  }
  return (_mm256_movemask_epi8(flag) & static_cast<int>(0xAAAAAAAAu)) != 0;
}

#endif

bool avx2_path() { return cpu_avx2_fma_f16c(); }

bool f32_scale(void* p, std::int64_t n, float inv) { return span_f32_scale(static_cast<float*>(p), n, inv); }
bool f32_check(void* p, std::int64_t n, float) { return span_f32_check(static_cast<const float*>(p), n); }
bool f16_check(void* p, std::int64_t n, float) { return span_f16_check(static_cast<const std::uint16_t*>(p), n); }
bool bf16_check(void* p, std::int64_t n, float) { return span_bf16_check(static_cast<const std::uint16_t*>(p), n); }
bool f16_scale(void* p, std::int64_t n, float inv) {
#if JEPA_UNSCALE_X86_PATH
  if (avx2_path()) return span_f16_scale_f16c(static_cast<std::uint16_t*>(p), n, inv);
#endif
  return span_f16_scale_portable(static_cast<std::uint16_t*>(p), n, inv);
}
bool bf16_scale(void* p, std::int64_t n, float inv) {
#if JEPA_UNSCALE_X86_PATH
  if (avx2_path()) return span_bf16_scale_avx2(static_cast<std::uint16_t*>(p), n, inv);
#endif
  return span_bf16_scale_portable(static_cast<std::uint16_t*>(p), n, inv);
}

SpanFn span_for(int dtype, bool check_only) {
  switch (dtype) {
    case kFloat32: return check_only ? &f32_check : &f32_scale;
    case kFloat16: return check_only ? &f16_check : &f16_scale;
    case kBFloat16: return check_only ? &bf16_check : &bf16_scale;
    default: throw std::invalid_argument("unscale: unsupported dtype_code " + std::to_string(dtype));
  }
}

std::int64_t chunk_elements(std::int64_t total, int threads) {
  std::int64_t chunk = total / (kChunksPerThread * std::max(1, threads));
  chunk = std::min(kMaxChunkElements, std::max(kMinChunkElements, chunk));
  return (chunk + 1023) / 1024 * 1024;
}

}  // namespace

UnscaleTuning unscale_tuning() { return UnscaleTuning{kMinChunkElements, kMaxChunkElements, kMinElementsPerThread}; }

bool unscale_avx2_path() { return avx2_path(); }

UnscaleResult unscale(const TensorTable& table, float inv_scale, int num_threads) {
  if (table.depth() != 1) {
    throw std::invalid_argument("unscale: the table must hold 1 pointer list (the gradients), got " +
                                std::to_string(table.depth()));
  }
  const std::int64_t total = table.total();
  if (total == 0) return UnscaleResult{false, 0};
  // inv_scale == 1 leaves every value as it is (unscale_value): only check, write nothing.
  const SpanFn span = span_for(table.dtype(), inv_scale == 1.0f);
  const std::int64_t esize = dtype_size(table.dtype());
  const std::int64_t* prefix = table.prefix();
  const int n = table.size();
  const std::uintptr_t* ptrs = table.ptrs(0);

  auto run_range = [&](std::int64_t begin, std::int64_t end) {
    bool found = false;
    for_each_piece(prefix, n, begin, end, [&](int ti, std::int64_t lo, std::int64_t hi) {
      found |= span(reinterpret_cast<void*>(ptrs[ti] + static_cast<std::uintptr_t>(lo * esize)), hi - lo, inv_scale);
    });
    return found;
  };

  if (num_threads <= 0) num_threads = hardware_threads();
  const std::int64_t by_size = std::max<std::int64_t>(1, total / kMinElementsPerThread);
  const int threads = static_cast<int>(std::min<std::int64_t>({static_cast<std::int64_t>(num_threads), by_size,
                                                                static_cast<std::int64_t>(ThreadPool::kMaxThreads)}));
  if (threads <= 1) return UnscaleResult{run_range(0, total), 1};

  const std::int64_t chunk = chunk_elements(total, threads);
  const std::int64_t nchunks = (total + chunk - 1) / chunk;
  std::atomic<std::int64_t> next{0};
  std::atomic<bool> any{false};
  const std::function<void(int)> job = [&](int) {
    bool found = false;
    for (;;) {
      const std::int64_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= nchunks) break;
      const std::int64_t begin = c * chunk;
      found |= run_range(begin, std::min(begin + chunk, total));
    }
    // One write per thread; the pool's join (mutex) orders it before the caller reads `any`.
    if (found) any.store(true, std::memory_order_relaxed);
  };
  const int ran = ThreadPool::instance().run(threads, job);
  return UnscaleResult{any.load(std::memory_order_relaxed), ran};
}

}  // namespace cpu
}  // namespace jepa
