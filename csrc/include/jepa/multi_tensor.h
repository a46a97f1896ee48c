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

}  // namespace jepa
