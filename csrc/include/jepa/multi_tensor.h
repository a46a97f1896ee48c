// Multi-tensor layout shared by the CPU loop and the CUDA kernel (apex multi_tensor_apply style):
// n tensors are concatenated into one virtual index space [0, prefix[n]) where tensor i owns
// [prefix[i], prefix[i+1]). Work is split in fixed-size chunks of that space, so thousands of tiny
// tensors cost one dispatch and big tensors are split across workers.
#pragma once

#include <cstdint>

#include "jepa/macros.h"

namespace jepa {

// Index of the tensor that owns virtual element `idx` (0 <= idx < prefix[n]): the largest i with
// prefix[i] <= idx. Empty tensors (prefix[i] == prefix[i+1]) are never returned.
JEPA_HD inline int locate_tensor(const std::int64_t* prefix, int n, std::int64_t idx) {
  int lo = 0, hi = n;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (prefix[mid] <= idx) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// Calls fn(tensor_index, begin, end) for each piece of the virtual range [begin, end), where
// [begin, end) are element offsets inside that tensor. Pieces come in increasing order.
template <typename Fn>
JEPA_HD inline void for_each_piece(const std::int64_t* prefix, int n, std::int64_t begin, std::int64_t end, Fn&& fn) {
  if (begin >= end) return;
  int ti = locate_tensor(prefix, n, begin);
  while (begin < end && ti < n) {
    const std::int64_t t0 = prefix[ti];
    const std::int64_t t1 = prefix[ti + 1];
    const std::int64_t stop = end < t1 ? end : t1;
    if (stop > begin) fn(ti, begin - t0, stop - t0);
    begin = stop > begin ? stop : begin;
    ++ti;
  }
}

// ---- per-tensor chunks (the CUDA kernels) ----
// Each tensor is cut into ceil(numel / chunk) chunks that start at multiples of `chunk` elements inside
// the tensor, so a chunk keeps the alignment of its tensor's address (16-byte vector loads stay legal)
// and no chunk straddles two tensors. chunk_prefix[i] counts the chunks of tensors 0..i-1
// (chunk_prefix[n] = all of them); empty tensors have none.

// Bytes of one chunk of the CUDA kernels: 8192 float32 or 16384 float16/bfloat16 elements.
constexpr std::int64_t kCudaChunkBytes = 32768;

JEPA_HD inline std::int64_t chunk_elements(int element_size) { return kCudaChunkBytes / element_size; }

JEPA_HD inline std::int64_t chunk_count(std::int64_t numel, std::int64_t chunk) { return (numel + chunk - 1) / chunk; }

// chunk_prefix[0..n] from the element prefix sums prefix[0..n].
JEPA_HD inline void fill_chunk_prefix(const std::int64_t* prefix, int n, std::int64_t chunk, std::int64_t* chunk_prefix) {
  chunk_prefix[0] = 0;
  for (int i = 0; i < n; ++i) chunk_prefix[i + 1] = chunk_prefix[i] + chunk_count(prefix[i + 1] - prefix[i], chunk);
}

struct ChunkRange {
  int tensor;          // which tensor
  std::int64_t begin;  // first element, inside the tensor (a multiple of the chunk size)
  std::int64_t end;    // one past the last element, inside the tensor
};

// Chunk c (0 <= c < chunk_prefix[n]): its tensor (the largest i with chunk_prefix[i] <= c, never an
// empty tensor) and its element range inside that tensor.
JEPA_HD inline ChunkRange locate_chunk(const std::int64_t* chunk_prefix, const std::int64_t* prefix, int n, std::int64_t c,
                                       std::int64_t chunk) {
  ChunkRange r;
  r.tensor = locate_tensor(chunk_prefix, n, c);
  const std::int64_t numel = prefix[r.tensor + 1] - prefix[r.tensor];
  r.begin = (c - chunk_prefix[r.tensor]) * chunk;
  r.end = r.begin + chunk < numel ? r.begin + chunk : numel;
  return r;
}

// The end of the part of [begin, end) that whole vectors of `width` elements cover, starting at begin
// (begin itself must be vector-aligned): [begin, vector_end) is loaded in vectors, the rest one by one.
JEPA_HD inline std::int64_t vector_end(std::int64_t begin, std::int64_t end, std::int64_t width) {
  return begin + ((end - begin) / width) * width;
}

}  // namespace jepa
