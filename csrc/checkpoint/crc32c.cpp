// CRC32C: portable slice-by-8 loop, SSE4.2 three-stream loop (runtime-dispatched), and combining
// of adjacent pieces by multiplication with x^(8n) modulo the polynomial (GF(2) arithmetic).
#include "checkpoint/crc32c.h"

#include <array>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <nmmintrin.h>
#define JEPA_CRC_X86 1
#else
#define JEPA_CRC_X86 0
#endif

namespace jepa {
namespace ckpt {

namespace {

constexpr std::uint32_t kPoly = 0x82F63B78u;  // reflected Castagnoli polynomial

struct Tables {
  std::uint32_t t[8][256];
  std::uint32_t x2n[32];  // x^(2^k) mod P, reflected (bit 31 is x^0)
};

// a(x) * b(x) mod P in the reflected representation.
std::uint32_t multmodp(std::uint32_t a, std::uint32_t b) {
  std::uint32_t m = 1u << 31;
  std::uint32_t p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1u) ? (b >> 1) ^ kPoly : b >> 1;
  }
  return p;
}

Tables make_tables() {
  Tables tb{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ kPoly : c >> 1;
    tb.t[0][i] = c;
  }
  for (int k = 1; k < 8; ++k) {
    for (int i = 0; i < 256; ++i) tb.t[k][i] = (tb.t[k - 1][i] >> 8) ^ tb.t[0][tb.t[k - 1][i] & 0xFFu];
  }
  std::uint32_t p = 1u << 30;  // x^1
  tb.x2n[0] = p;
  for (int k = 1; k < 32; ++k) tb.x2n[k] = p = multmodp(p, p);
  return tb;
}

const Tables& tables() {
  static const Tables tb = make_tables();
  return tb;
}

// x^(n * 2^k) mod P
std::uint32_t x2nmodp(std::uint64_t n, unsigned k) {
  const Tables& tb = tables();
  std::uint32_t p = 1u << 31;  // x^0
  while (n) {
    if (n & 1u) p = multmodp(tb.x2n[k & 31u], p);
    n >>= 1;
    ++k;
  }
  return p;
}

// Raw (not inverted) state update, portable.
std::uint32_t update_portable(std::uint32_t c, const unsigned char* p, std::size_t n) {
  const Tables& tb = tables();
  const bool little_endian = [] {
    const std::uint16_t one = 1;
    unsigned char b;
    std::memcpy(&b, &one, 1);
    return b == 1;
  }();
  if (little_endian) {
    while (n >= 8) {
      std::uint64_t w;
      std::memcpy(&w, p, 8);
      w ^= c;
      c = tb.t[7][w & 0xFFu] ^ tb.t[6][(w >> 8) & 0xFFu] ^ tb.t[5][(w >> 16) & 0xFFu] ^ tb.t[4][(w >> 24) & 0xFFu] ^
          tb.t[3][(w >> 32) & 0xFFu] ^ tb.t[2][(w >> 40) & 0xFFu] ^ tb.t[1][(w >> 48) & 0xFFu] ^ tb.t[0][w >> 56];
      p += 8;
      n -= 8;
    }
  }
  while (n--) c = (c >> 8) ^ tb.t[0][(c ^ *p++) & 0xFFu];
  return c;
}

#if JEPA_CRC_X86
__attribute__((target("sse4.2"))) std::uint32_t update_serial_hw(std::uint32_t c, const unsigned char* p,
                                                                std::size_t n) {
  while (n && (reinterpret_cast<std::uintptr_t>(p) & 7u)) {
    c = _mm_crc32_u8(c, *p++);
    --n;
  }
  std::uint64_t c64 = c;
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    c64 = _mm_crc32_u64(c64, w);
    p += 8;
    n -= 8;
  }
  c = static_cast<std::uint32_t>(c64);
  while (n--) c = _mm_crc32_u8(c, *p++);
  return c;
}

// The crc32 instruction has a latency of 3 cycles and a throughput of 1 per cycle: three
// independent streams keep it busy. Finished CRCs of the three thirds are then combined.
__attribute__((target("sse4.2"))) std::uint32_t extend_hw(std::uint32_t crc, const unsigned char* p, std::size_t n) {
  constexpr std::size_t kMinSplit = 8192;  // below this the two combines cost more than they save
  if (n < kMinSplit) return ~update_serial_hw(~crc, p, n);
  const std::size_t third = (n / 3) & ~static_cast<std::size_t>(7);
  const unsigned char* a = p;
  const unsigned char* b = p + third;
  const unsigned char* c = p + 2 * third;
  std::uint64_t ra = ~crc, rb = 0xFFFFFFFFu, rc = 0xFFFFFFFFu;
  for (std::size_t i = 0; i < third; i += 8) {
    std::uint64_t wa, wb, wc;
    std::memcpy(&wa, a + i, 8);
    std::memcpy(&wb, b + i, 8);
    std::memcpy(&wc, c + i, 8);
    ra = _mm_crc32_u64(ra, wa);
    rb = _mm_crc32_u64(rb, wb);
    rc = _mm_crc32_u64(rc, wc);
  }
  const std::size_t rest = n - 3 * third;
  const std::uint32_t rc_end = update_serial_hw(static_cast<std::uint32_t>(rc), c + third, rest);
  const std::uint32_t crc_a = ~static_cast<std::uint32_t>(ra);
  const std::uint32_t crc_b = ~static_cast<std::uint32_t>(rb);
  const std::uint32_t crc_c = ~rc_end;
  return crc32c_combine(crc32c_combine(crc_a, crc_b, third), crc_c, third + rest);
}
#endif

}  // namespace

bool crc32c_hardware_available() {
#if JEPA_CRC_X86
  static const bool ok = __builtin_cpu_supports("sse4.2");
  return ok;
#else
  return false;
#endif
}

std::uint32_t crc32c_extend(std::uint32_t crc, const void* data, std::size_t n, CrcImpl impl) {
  const auto* p = static_cast<const unsigned char*>(data);
  if (n == 0) return crc;
#if JEPA_CRC_X86
  if (impl != CrcImpl::kPortable && crc32c_hardware_available()) return extend_hw(crc, p, n);
#else
  (void)impl;
#endif
  return ~update_portable(~crc, p, n);
}

std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t len_b) {
  return multmodp(x2nmodp(len_b, 3), crc_a) ^ crc_b;
}

}  // namespace ckpt
}  // namespace jepa
