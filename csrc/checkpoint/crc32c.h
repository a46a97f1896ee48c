// CRC32C (Castagnoli, reflected polynomial 0x82F63B78): the checksum of jepa checkpoints.
//
// crc32c_extend(crc, data, n) continues a finished CRC over more bytes, like zlib's crc32():
// crc32c_extend(0, "123456789", 9) == 0xE3069283. On x86-64 CPUs with SSE4.2 the hardware
// instruction runs three independent streams at once (picked at run time); elsewhere a portable
// slice-by-8 table loop runs. crc32c_combine joins the CRCs of two adjacent pieces, so threads
// can checksum chunks of one tensor independently.
#pragma once

#include <cstddef>
#include <cstdint>

namespace jepa {
namespace ckpt {

enum class CrcImpl : int { kAuto = 0, kPortable = 1, kHardware = 2 };

// True when the SSE4.2 path can run on this CPU.
bool crc32c_hardware_available();

// CRC of `data[0:n]` appended to the data whose CRC is `crc` (0 for a fresh start).
// impl=kHardware without hardware support falls back to the portable loop.
std::uint32_t crc32c_extend(std::uint32_t crc, const void* data, std::size_t n, CrcImpl impl = CrcImpl::kAuto);

// CRC of A||B from crc(A), crc(B) and the length of B in bytes.
std::uint32_t crc32c_combine(std::uint32_t crc_a, std::uint32_t crc_b, std::uint64_t len_b);

}  // namespace ckpt
}  // namespace jepa
