// A validated table of raw tensor buffers: `depth` parallel lists of n data pointers (e.g. targets and
// onlines) with one element count per tensor and one dtype. Built once from Python (pointers are ints
// taken from torch.Tensor.data_ptr()), reused by the CPU and CUDA multi-tensor ops.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "jepa/dtype.h"
#include "jepa/multi_tensor.h"

namespace jepa {

class TensorTable {
 public:
  // ptrs[k][i]: data pointer of tensor i in list k; numels[i]: its element count (same in every list).
  // Throws std::invalid_argument on inconsistent sizes, negative counts, null or misaligned pointers.
  TensorTable(std::vector<std::vector<std::uintptr_t>> ptrs, const std::vector<std::int64_t>& numels, int dtype)
      : ptrs_(std::move(ptrs)), dtype_(dtype) {
    if (!dtype_valid(dtype)) {
      throw std::invalid_argument("TensorTable: dtype_code=" + std::to_string(dtype) +
                                  " is not one of 0 (float32), 1 (float16), 2 (bfloat16)");
    }
    if (ptrs_.empty()) throw std::invalid_argument("TensorTable: needs at least one pointer list");
    const std::size_t n = numels.size();
    if (n > static_cast<std::size_t>(INT32_MAX - 1)) throw std::invalid_argument("TensorTable: too many tensors");
    for (std::size_t k = 0; k < ptrs_.size(); ++k) {
      if (ptrs_[k].size() != n) {
        throw std::invalid_argument("TensorTable: pointer list " + std::to_string(k) + " has " +
                                    std::to_string(ptrs_[k].size()) + " entries but numels has " + std::to_string(n));
      }
    }
    const std::uintptr_t align = static_cast<std::uintptr_t>(dtype_size(dtype));
    aligned16_ = true;
    prefix_.resize(n + 1);
    prefix_[0] = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const std::int64_t c = numels[i];
      if (c < 0) throw std::invalid_argument("TensorTable: numels[" + std::to_string(i) + "]=" + std::to_string(c) + " is negative");
      if (c > 0) {
        for (std::size_t k = 0; k < ptrs_.size(); ++k) {
          const std::uintptr_t p = ptrs_[k][i];
          if (p == 0) {
            throw std::invalid_argument("TensorTable: pointer list " + std::to_string(k) + " entry " + std::to_string(i) +
                                        " is null for a tensor of " + std::to_string(c) + " elements");
          }
          if (p % align != 0) {
            throw std::invalid_argument("TensorTable: pointer list " + std::to_string(k) + " entry " + std::to_string(i) +
                                        " is not aligned to its element size " + std::to_string(align));
          }
          if (p % 16 != 0) aligned16_ = false;
        }
      }
      if (prefix_[i] > INT64_MAX - c) throw std::invalid_argument("TensorTable: total element count overflows int64");
      prefix_[i + 1] = prefix_[i] + c;
    }
  }

  int depth() const { return static_cast<int>(ptrs_.size()); }
  int size() const { return static_cast<int>(prefix_.size()) - 1; }
  int dtype() const { return dtype_; }
  std::int64_t total() const { return prefix_.back(); }
  const std::int64_t* prefix() const { return prefix_.data(); }
  const std::uintptr_t* ptrs(int k) const { return ptrs_[static_cast<std::size_t>(k)].data(); }
  std::int64_t numel(int i) const { return prefix_[static_cast<std::size_t>(i) + 1] - prefix_[static_cast<std::size_t>(i)]; }

  // True when every non-empty buffer starts at a 16-byte boundary: the CUDA kernels then load and store
  // 16-byte vectors (torch's allocations are 512-byte aligned; views at odd offsets are not).
  bool aligned16() const { return aligned16_; }

  // The layout the CUDA EMA kernel reads from device memory, as int64 words: the `depth` pointer lists
  // (n each), the element prefix sums (n + 1) and the per-tensor chunk prefix sums (n + 1) for this
  // dtype's chunk size (jepa/multi_tensor.h). Python copies it to the device once per table (torch
  // memory, an asynchronous copy), so the CUDA code never allocates or synchronizes.
  std::vector<std::int64_t> device_layout() const {
    const std::size_t n = prefix_.size() - 1;
    std::vector<std::int64_t> out(ptrs_.size() * n + 2 * (n + 1));
    std::size_t pos = 0;
    for (const auto& list : ptrs_) {
      for (std::uintptr_t p : list) out[pos++] = static_cast<std::int64_t>(p);
    }
    for (std::int64_t v : prefix_) out[pos++] = v;
    fill_chunk_prefix(prefix_.data(), static_cast<int>(n), chunk_elements(dtype_size(dtype_)), out.data() + pos);
    return out;
  }

 private:
  std::vector<std::vector<std::uintptr_t>> ptrs_;
  std::vector<std::int64_t> prefix_;
  int dtype_;
  bool aligned16_ = true;
};

}  // namespace jepa
