// Python bindings of the loss-scaling kernels (listed in csrc/bindings.cpp's header comment, which calls
// register_amp). Pointers arrive as ints (torch.Tensor.data_ptr()); jepa/ops/amp.py checks devices,
// dtypes and shapes first, this file re-checks what a wrong int could break (null, alignment, ranges).
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "jepa/amp_math.h"
#include "jepa/tensor_table.h"
#include "thread_pool.h"
#include "unscale_cpu.h"

#if defined(JEPA_WITH_CUDA)
#include "jepa/cuda_ops.h"
#endif

namespace py = pybind11;

namespace jepa {

namespace {

template <typename T>
T* checked_ptr(std::uintptr_t p, const char* fn, const char* name) {
  if (p == 0) throw std::invalid_argument(std::string(fn) + ": " + name + " is a null pointer");
  if (p % alignof(T) != 0) {
    throw std::invalid_argument(std::string(fn) + ": " + name + " is not aligned to " + std::to_string(alignof(T)) +
                                " bytes");
  }
  return reinterpret_cast<T*>(p);
}

void check_update_args(double growth_factor, double backoff_factor, std::int64_t growth_interval, const char* fn) {
  // What the arithmetic needs; jepa.amp.GradScaler enforces its stricter ranges (growth > 1, backoff < 1).
  if (!(growth_factor > 0.0 && growth_factor < HUGE_VAL)) {
    throw std::invalid_argument(std::string(fn) + ": growth_factor=" + std::to_string(growth_factor) +
                                " must be a finite number > 0");
  }
  if (!(backoff_factor > 0.0 && backoff_factor < HUGE_VAL)) {
    throw std::invalid_argument(std::string(fn) + ": backoff_factor=" + std::to_string(backoff_factor) +
                                " must be a finite number > 0");
  }
  if (growth_interval < 1 || growth_interval > INT32_MAX) {
    throw std::invalid_argument(std::string(fn) + ": growth_interval=" + std::to_string(growth_interval) +
                                " must be in [1, 2**31 - 1]");
  }
}

int cpu_unscale(const TensorTable& table, std::uintptr_t inv_scale_ptr, std::uintptr_t found_inf_ptr, int num_threads) {
  const float* inv_scale = checked_ptr<const float>(inv_scale_ptr, "unscale", "inv_scale_ptr");
  float* found_inf = checked_ptr<float>(found_inf_ptr, "unscale", "found_inf_ptr");
  if (table.depth() != 1) throw std::invalid_argument("unscale: the table must hold 1 pointer list (the gradients)");
  py::gil_scoped_release release;
  const cpu::UnscaleResult r = cpu::unscale(table, *inv_scale, num_threads);
  if (r.found_nonfinite) *found_inf = 1.0f;  // never cleared: the flag accumulates over calls, as torch's
  return r.threads;
}

void cpu_update_scale(std::uintptr_t scale_ptr, std::uintptr_t tracker_ptr, std::uintptr_t found_inf_ptr,
                      double growth_factor, double backoff_factor, std::int64_t growth_interval) {
  check_update_args(growth_factor, backoff_factor, growth_interval, "update_scale");
  float* scale = checked_ptr<float>(scale_ptr, "update_scale", "scale_ptr");
  auto* tracker = checked_ptr<std::int32_t>(tracker_ptr, "update_scale", "growth_tracker_ptr");
  const float* found_inf = checked_ptr<const float>(found_inf_ptr, "update_scale", "found_inf_ptr");
  update_scale(scale, tracker, *found_inf, growth_factor, backoff_factor, growth_interval);
}

void cuda_unscale(const TensorTable& table, std::uintptr_t inv_scale_ptr, std::uintptr_t found_inf_ptr,
                  std::uintptr_t stream) {
  const float* inv_scale = checked_ptr<const float>(inv_scale_ptr, "unscale_cuda", "inv_scale_ptr");
  float* found_inf = checked_ptr<float>(found_inf_ptr, "unscale_cuda", "found_inf_ptr");
  if (table.depth() != 1) throw std::invalid_argument("unscale_cuda: the table must hold 1 pointer list (the gradients)");
#if defined(JEPA_WITH_CUDA)
  py::gil_scoped_release release;
  cuda::unscale(table, inv_scale, found_inf, stream);
#else
  (void)inv_scale;
  (void)found_inf;
  (void)stream;
  throw std::runtime_error("unscale_cuda: jepa._C was built without CUDA (has_cuda() is False)");
#endif
}

void cuda_update_scale(std::uintptr_t scale_ptr, std::uintptr_t tracker_ptr, std::uintptr_t found_inf_ptr,
                       double growth_factor, double backoff_factor, std::int64_t growth_interval, std::uintptr_t stream) {
  check_update_args(growth_factor, backoff_factor, growth_interval, "update_scale_cuda");
  float* scale = checked_ptr<float>(scale_ptr, "update_scale_cuda", "scale_ptr");
  auto* tracker = checked_ptr<std::int32_t>(tracker_ptr, "update_scale_cuda", "growth_tracker_ptr");
  const float* found_inf = checked_ptr<const float>(found_inf_ptr, "update_scale_cuda", "found_inf_ptr");
#if defined(JEPA_WITH_CUDA)
  py::gil_scoped_release release;
  cuda::update_scale(scale, tracker, found_inf, growth_factor, backoff_factor, growth_interval, stream);
#else
  (void)scale;
  (void)tracker;
  (void)found_inf;
  (void)stream;
  throw std::runtime_error("update_scale_cuda: jepa._C was built without CUDA (has_cuda() is False)");
#endif
}

}  // namespace

void register_amp(py::module_& m) {
  m.def(
      "unscale_config",
      []() {
        const auto t = cpu::unscale_tuning();
        py::dict d;
        d["min_chunk_elements"] = t.min_chunk_elements;
        d["max_chunk_elements"] = t.max_chunk_elements;
        d["min_elements_per_thread"] = t.min_elements_per_thread;
        d["max_threads"] = ThreadPool::kMaxThreads;
        d["avx2_half_path"] = cpu::unscale_avx2_path();
        return d;
      },
      "Tuning constants of the CPU unscale (chunk size bounds, elements per thread below which fewer threads "
      "run) and whether float16/bfloat16 use the AVX2/F16C path.");

  m.def("unscale", &cpu_unscale, py::arg("table"), py::arg("inv_scale_ptr"), py::arg("found_inf_ptr"),
        py::arg("num_threads") = 0,
        "CPU fused unscale over a depth-1 TensorTable of gradients: g <- g * inv_scale (inv_scale read from the "
        "float32 at inv_scale_ptr) and *found_inf_ptr <- 1.0 when any element was inf/NaN, in one pass. "
        "inv_scale == 1 only checks. Releases the GIL; returns the number of threads that ran.");

  m.def("update_scale", &cpu_update_scale, py::arg("scale_ptr"), py::arg("growth_tracker_ptr"),
        py::arg("found_inf_ptr"), py::arg("growth_factor"), py::arg("backoff_factor"), py::arg("growth_interval"),
        "CPU dynamic loss-scale update in place (float32 scale, int32 growth tracker, float32 found_inf), "
        "the arithmetic of torch._amp_update_scale_.");

  m.def("unscale_cuda", &cuda_unscale, py::arg("table"), py::arg("inv_scale_ptr"), py::arg("found_inf_ptr"),
        py::arg("stream"),
        "CUDA fused unscale + non-finite check over a depth-1 TensorTable of device pointers, one launch on "
        "`stream`; inv_scale and found_inf are device pointers (read and written on the device, no host sync).");

  m.def("update_scale_cuda", &cuda_update_scale, py::arg("scale_ptr"), py::arg("growth_tracker_ptr"),
        py::arg("found_inf_ptr"), py::arg("growth_factor"), py::arg("backoff_factor"), py::arg("growth_interval"),
        py::arg("stream"), "CUDA dynamic loss-scale update on device pointers, one single-thread launch on `stream`.");
}

}  // namespace jepa
