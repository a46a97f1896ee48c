// jepa._C: the Python bindings of the extension. This is the one place that lists every binding.
//
// The module does not link libtorch: Python passes raw buffers (data pointer as an int, element
// count, dtype code) and, for CUDA, the stream handle as an int (torch.cuda.Stream.cuda_stream).
// Only jepa/ops calls the compute functions below; it checks devices, dtypes and contiguity first.
//
//   has_cuda() -> bool                        True when the CUDA kernels (kernels/cuda/*.cu) are compiled in
//   cuda_device_count() -> int                CUDA devices visible to the CUDA runtime (0 without CUDA)
//   build_info() -> dict                      how the module was built (cuda, archs, compiler, ...)
//   DTYPE_FLOAT32 = 0, DTYPE_FLOAT16 = 1, DTYPE_BFLOAT16 = 2      dtype codes
//   dtype_size(dtype_code: int) -> int        element size in bytes
//   class TensorTable(ptr_lists: list[list[int]], numels: list[int], dtype_code: int)
//       validated table of `depth` parallel pointer lists (for the EMA: [target_ptrs, online_ptrs]);
//       properties depth, num_tensors, total_numel, dtype_code, aligned16; numels() -> list[int];
//       device_layout() -> list[int]: the int64 words the CUDA EMA kernel reads (pointer lists, element
//       prefix sums, per-tensor chunk prefix sums)
//   class ObjectIds(objects: list)            the identities (addresses) of a list's objects, kept as ints
//       matches(objects: list) -> bool        same length and objects[i] is the i-th recorded object
//       (a plan-cache check; holds no references, so the caller must know the objects are alive)
//   ema_config() -> dict                      CPU EMA tuning: min/max_chunk_elements, min_elements_per_thread
//   ema_update(table: TensorTable, momentum: float, num_threads: int = 0) -> int
//   ema_update(target_ptrs: list[int], online_ptrs: list[int], numels: list[int], dtype_code: int,
//              momentum: float, num_threads: int = 0) -> int
//       CPU: target <- momentum * target + (1 - momentum) * online for every pair; GIL released;
//       num_threads <= 0 uses every hardware thread; returns the number of threads that ran
//   ema_update_cuda(table: TensorTable, momentum: float, stream: int, device_table: int) -> None
//       the same on CUDA device pointers, one kernel launch on `stream` (current device); `device_table`
//       is the device address of table.device_layout() (int64 words) copied there by the caller, who
//       keeps it alive: nothing is allocated, copied or synchronized; RuntimeError without CUDA
// ---- amp (loss scaling; defined in csrc/amp/amp_bindings.cpp, registered by register_amp) ----
//   unscale_config() -> dict                  CPU unscale tuning: min/max_chunk_elements, min_elements_per_thread,
//                                             avx2_half_path
//   unscale(table: TensorTable, inv_scale_ptr: int, found_inf_ptr: int, num_threads: int = 0) -> int
//       CPU, depth-1 table of gradients: g <- g * (*inv_scale_ptr) and *found_inf_ptr <- 1.0 when any element
//       was inf/NaN, one pass; inv_scale == 1 only checks; GIL released; returns the threads that ran
//   update_scale(scale_ptr: int, growth_tracker_ptr: int, found_inf_ptr: int, growth_factor: float,
//                backoff_factor: float, growth_interval: int) -> None
//       CPU: torch._amp_update_scale_'s arithmetic on a float32 scale, int32 tracker, float32 found_inf
//   unscale_cuda(table, inv_scale_ptr, found_inf_ptr, stream: int) -> None
//   update_scale_cuda(scale_ptr, growth_tracker_ptr, found_inf_ptr, growth_factor, backoff_factor,
//                     growth_interval, stream: int) -> None
//       the same on device pointers, one launch each on `stream`, no host sync; RuntimeError without CUDA
// ---- end amp ----
//
//
//   --- checkpoint IO (csrc/checkpoint/; only jepa/io calls these) ---
//   crc32c(data: buffer, crc: int = 0, impl: str = "auto"|"portable"|"hardware") -> int
//   crc32c_combine(crc_a: int, crc_b: int, len_b: int) -> int     CRC of A||B
//   crc32c_hardware() -> bool                 SSE4.2 CRC32C path available on this CPU
//   checkpoint_write(path, header: bytes, crc_pos, header_crc_pos, ptrs, nbytes, offsets,
//                    num_threads=0, chunk_bytes=8 MiB, durable=True) -> dict
//       writes a safetensors-layout file atomically (path.tmp-<pid>, parallel pwrite + CRC32C,
//       fsync, rename, directory fsync); GIL released; see csrc/checkpoint/checkpoint.h
//   class CheckpointReader(path: str, populate: bool = False)   mmap + validated header; buffer
//       protocol over the whole file; tensors() -> [(name, dtype, shape, begin, end)] in data
//       order; metadata() -> dict | None; verify(num_threads=0, chunk_bytes=8 MiB) -> dict
//   parallel_copy(dst_ptrs, src_ptrs, nbytes, num_threads=0, chunk_bytes=8 MiB) -> int
//   CheckpointFormatError (ValueError subclass): the file is not a valid checkpoint; failed system
//       calls raise OSError with errno (FileNotFoundError, ...)
// Errors: bad arguments raise ValueError (std::invalid_argument), CUDA failures RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "checkpoint/crc32c.h"
#include "ema_cpu.h"
#include "jepa/dtype.h"
#include "jepa/ema_math.h"
#include "jepa/tensor_table.h"
#include "thread_pool.h"

#if defined(JEPA_WITH_CUDA)
#include "jepa/cuda_ops.h"
#endif

#ifndef JEPA_CUDA_ARCHS_STR
#define JEPA_CUDA_ARCHS_STR ""
#endif

namespace py = pybind11;

// ---- amp (loss scaling): csrc/amp/amp_bindings.cpp ----
namespace jepa {
void register_amp(py::module_& m);
}  // namespace jepa
// ---- end amp ----

namespace {

using jepa::TensorTable;

// Addresses of a list's objects: checking that a list still holds the same objects costs one pointer
// comparison per item (used by jepa/ops/_native.py to reuse validated tensor tables).
class ObjectIds {
 public:
  explicit ObjectIds(py::list objects) {
    const Py_ssize_t n = PyList_GET_SIZE(objects.ptr());
    ids_.reserve(static_cast<std::size_t>(n));
    for (Py_ssize_t i = 0; i < n; ++i) ids_.push_back(PyList_GET_ITEM(objects.ptr(), i));
  }
  bool matches(py::list objects) const {
    const Py_ssize_t n = PyList_GET_SIZE(objects.ptr());
    if (static_cast<std::size_t>(n) != ids_.size()) return false;
    for (Py_ssize_t i = 0; i < n; ++i) {
      if (PyList_GET_ITEM(objects.ptr(), i) != ids_[static_cast<std::size_t>(i)]) return false;
    }
    return true;
  }
  std::size_t size() const { return ids_.size(); }

 private:
  std::vector<const PyObject*> ids_;  // compared, never dereferenced
};
using PtrList = std::vector<std::uintptr_t>;
using NumelList = std::vector<std::int64_t>;

std::shared_ptr<TensorTable> make_pair_table(PtrList targets, PtrList onlines, const NumelList& numels, int dtype) {
  if (targets.size() != numels.size() || onlines.size() != numels.size()) {
    throw std::invalid_argument("ema_update: target_ptrs, online_ptrs and numels must have the same length, got " +
                                std::to_string(targets.size()) + ", " + std::to_string(onlines.size()) + ", " +
                                std::to_string(numels.size()));
  }
  std::vector<PtrList> lists;
  lists.push_back(std::move(targets));
  lists.push_back(std::move(onlines));
  return std::make_shared<TensorTable>(std::move(lists), numels, dtype);
}

void check_momentum(double momentum) {
  if (!(momentum >= 0.0 && momentum <= 1.0)) {
    throw std::invalid_argument("ema_update: momentum=" + std::to_string(momentum) + " must be in [0, 1]");
  }
}

int cpu_ema(const TensorTable& table, double momentum, int num_threads) {
  check_momentum(momentum);
  py::gil_scoped_release release;
  return jepa::cpu::ema_update(table, momentum, num_threads);
}

void cuda_ema(const TensorTable& table, double momentum, std::uintptr_t stream, std::uintptr_t device_table) {
  check_momentum(momentum);
#if defined(JEPA_WITH_CUDA)
  if (table.depth() != 2) throw std::invalid_argument("ema_update_cuda: the table must hold 2 pointer lists");
  py::gil_scoped_release release;
  jepa::cuda::ema_update(table, jepa::ema_weight(momentum), stream, device_table);
#else
  (void)table;
  (void)stream;
  (void)device_table;
  throw std::runtime_error("ema_update_cuda: jepa._C was built without CUDA (has_cuda() is False)");
#endif
}

// ---------------------------------------------------------------- checkpoint IO (begin)
namespace ckpt_bind {

namespace ck = jepa::ckpt;

std::pair<const unsigned char*, std::size_t> contiguous_bytes(const py::buffer& data) {
  py::buffer_info info = data.request();
  std::size_t expect = static_cast<std::size_t>(info.itemsize);
  for (auto i = info.ndim; i-- > 0;) {
    if (info.shape[static_cast<std::size_t>(i)] > 1 && info.strides[static_cast<std::size_t>(i)] != static_cast<py::ssize_t>(expect)) {
      throw std::invalid_argument("crc32c: data must be a contiguous buffer");
    }
    expect *= static_cast<std::size_t>(info.shape[static_cast<std::size_t>(i)]);
  }
  return {static_cast<const unsigned char*>(info.ptr), static_cast<std::size_t>(info.size * info.itemsize)};
}

ck::CrcImpl parse_impl(const std::string& impl) {
  if (impl == "auto") return ck::CrcImpl::kAuto;
  if (impl == "portable") return ck::CrcImpl::kPortable;
  if (impl == "hardware") {
    if (!ck::crc32c_hardware_available()) throw std::invalid_argument("crc32c: impl='hardware' but this CPU lacks SSE4.2");
    return ck::CrcImpl::kHardware;
  }
  throw std::invalid_argument("crc32c: impl must be 'auto', 'portable' or 'hardware', got '" + impl + "'");
}

std::uint32_t crc_of(const py::buffer& data, std::uint32_t crc, const std::string& impl) {
  const ck::CrcImpl which = parse_impl(impl);
  py::buffer_info keep = data.request();  // holds the buffer while the GIL is released
  auto bytes = contiguous_bytes(data);
  py::gil_scoped_release release;
  return ck::crc32c_extend(crc, bytes.first, bytes.second, which);
}

py::dict write(const std::string& path, const py::bytes& header, std::vector<std::uint64_t> crc_pos,
               std::int64_t header_crc_pos, const std::vector<std::uintptr_t>& ptrs, std::vector<std::uint64_t> nbytes,
               std::vector<std::uint64_t> offsets, int num_threads, std::uint64_t chunk_bytes, bool durable) {
  ck::WriteRequest req;
  req.path = path;
  req.header = std::string(header);
  req.crc_pos = std::move(crc_pos);
  req.header_crc_pos = header_crc_pos;
  req.ptrs.reserve(ptrs.size());
  for (auto p : ptrs) req.ptrs.push_back(reinterpret_cast<const void*>(p));
  req.nbytes = std::move(nbytes);
  req.offsets = std::move(offsets);
  req.num_threads = num_threads;
  req.chunk_bytes = chunk_bytes;
  req.durable = durable;
  ck::WriteStats st;
  {
    py::gil_scoped_release release;
    st = ck::write_checkpoint(req);
  }
  py::dict d;
  d["file_bytes"] = st.file_bytes;
  d["threads"] = st.threads;
  d["crcs"] = st.crcs;
  d["header_crc"] = st.header_crc;
  return d;
}

int copy(const std::vector<std::uintptr_t>& dst, const std::vector<std::uintptr_t>& src, const std::vector<std::uint64_t>& nbytes,
         int num_threads, std::uint64_t chunk_bytes) {
  std::vector<void*> d;
  std::vector<const void*> s;
  for (auto p : dst) d.push_back(reinterpret_cast<void*>(p));
  for (auto p : src) s.push_back(reinterpret_cast<const void*>(p));
  py::gil_scoped_release release;
  return ck::parallel_copy(d, s, nbytes, num_threads, chunk_bytes);
}

void define(py::module_& m) {
  static py::exception<ck::FormatError> format_error(m, "CheckpointFormatError", PyExc_ValueError);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ck::FormatError& e) {
      PyErr_SetString(format_error.ptr(), e.what());
    } catch (const ck::IoError& e) {
      py::object err = py::module_::import("builtins").attr("OSError")(e.err(), e.what(), e.filename());
      PyErr_SetObject(PyExc_OSError, err.ptr());
    }
  });

  m.def("crc32c", &crc_of, py::arg("data"), py::arg("crc") = 0, py::arg("impl") = "auto",
        "CRC32C of a contiguous buffer, continuing `crc` (0 to start). impl: 'auto', 'portable', 'hardware'.");
  m.def("crc32c_combine", &ck::crc32c_combine, py::arg("crc_a"), py::arg("crc_b"), py::arg("len_b"),
        "CRC32C of A||B from crc(A), crc(B) and len(B).");
  m.def("crc32c_hardware", &ck::crc32c_hardware_available, "True when the SSE4.2 CRC32C path runs on this CPU.");
  m.def("checkpoint_write", &write, py::arg("path"), py::arg("header"), py::arg("crc_pos"), py::arg("header_crc_pos"),
        py::arg("ptrs"), py::arg("nbytes"), py::arg("offsets"), py::arg("num_threads") = 0,
        py::arg("chunk_bytes") = ck::kDefaultChunkBytes, py::arg("durable") = true,
        "Write a checkpoint file atomically from raw CPU buffers (GIL released). See csrc/checkpoint/checkpoint.h.");
  m.def("parallel_copy", &copy, py::arg("dst_ptrs"), py::arg("src_ptrs"), py::arg("nbytes"), py::arg("num_threads") = 0,
        py::arg("chunk_bytes") = ck::kDefaultChunkBytes, "memcpy of many CPU buffers on several threads (GIL released).");

  py::class_<ck::Reader>(m, "CheckpointReader", py::buffer_protocol(),
                         "A memory-mapped checkpoint/safetensors file with a validated header.")
      .def(py::init([](const std::string& path, bool populate) {
             py::gil_scoped_release release;
             return new ck::Reader(path, populate);
           }),
           py::arg("path"), py::arg("populate") = false)
      .def_buffer([](ck::Reader& r) {
        return py::buffer_info(r.data(), 1, py::format_descriptor<unsigned char>::format(), 1,
                               {static_cast<py::ssize_t>(r.file_size())}, {static_cast<py::ssize_t>(1)}, false);
      })
      .def_property_readonly("path", &ck::Reader::path)
      .def_property_readonly("file_size", &ck::Reader::file_size)
      .def_property_readonly("header_bytes", &ck::Reader::header_bytes)
      .def_property_readonly("data_start", &ck::Reader::data_start)
      .def("tensors",
           [](const ck::Reader& r) {
             py::list out;
             for (const auto& t : r.tensors()) out.append(py::make_tuple(t.name, t.dtype, t.shape, t.begin, t.end));
             return out;
           },
           "[(name, dtype, shape, begin, end)] in data order (offsets relative to data_start).")
      .def("metadata",
           [](const ck::Reader& r) -> py::object {
             if (!r.has_metadata()) return py::none();
             py::dict d;
             for (const auto& kv : r.metadata()) d[py::str(kv.first)] = py::str(kv.second);
             return std::move(d);
           },
           "The __metadata__ map, or None when the header has none.")
      .def("verify",
           [](const ck::Reader& r, int num_threads, std::uint64_t chunk_bytes) {
             ck::VerifyResult v;
             {
               py::gil_scoped_release release;
               v = r.verify(num_threads, chunk_bytes);
             }
             py::dict d;
             d["has_checksums"] = v.has_checksums;
             d["has_header_crc"] = v.has_header_crc;
             d["header_ok"] = v.header_ok;
             d["bad_tensors"] = v.bad_tensors;
             d["threads"] = v.threads;
             return d;
           },
           py::arg("num_threads") = 0, py::arg("chunk_bytes") = ck::kDefaultChunkBytes,
           "Check the header CRC and every tensor's CRC32C (threads over chunks; GIL released).");
}

}  // namespace ckpt_bind
// ---------------------------------------------------------------- checkpoint IO (end)

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "jepa._C: C++/CUDA kernels of jepa on raw buffers (no libtorch); see csrc/bindings.cpp";

  m.def(
      "has_cuda",
      []() {
#if defined(JEPA_WITH_CUDA)
        return true;
#else
        return false;
#endif
      },
      "True when the CUDA kernels (kernels/cuda/*.cu) were compiled into this module.");

  m.def(
      "cuda_device_count",
      []() {
#if defined(JEPA_WITH_CUDA)
        return jepa::cuda::device_count();
#else
        return 0;
#endif
      },
      "Number of CUDA devices the CUDA runtime sees (0 without CUDA support, driver or device).");

  m.def(
      "build_info",
      []() {
        py::dict d;
#if defined(JEPA_WITH_CUDA)
        d["cuda"] = true;
        d["cuda_runtime_version"] = jepa::cuda::runtime_version();
#else
        d["cuda"] = false;
        d["cuda_runtime_version"] = py::none();
#endif
        d["cuda_archs"] = std::string(JEPA_CUDA_ARCHS_STR);
#if defined(__clang__)
        d["compiler"] = std::string("clang ") + __clang_version__;
#elif defined(__GNUC__)
        d["compiler"] = std::string("gcc ") + __VERSION__;
#else
        d["compiler"] = std::string("unknown");
#endif
        d["target_clones"] = static_cast<bool>(JEPA_HAS_TARGET_CLONES);
        d["avx2_half_path"] = jepa::cpu::avx2_vector_path();
        d["hardware_threads"] = jepa::hardware_threads();
        return d;
      },
      "How this module was built: CUDA support and archs, compiler, CPU vector paths.");

  m.attr("DTYPE_FLOAT32") = static_cast<int>(jepa::kFloat32);
  m.attr("DTYPE_FLOAT16") = static_cast<int>(jepa::kFloat16);
  m.attr("DTYPE_BFLOAT16") = static_cast<int>(jepa::kBFloat16);

  m.def(
      "dtype_size",
      [](int code) {
        if (!jepa::dtype_valid(code)) throw std::invalid_argument("dtype_size: invalid dtype_code " + std::to_string(code));
        return jepa::dtype_size(code);
      },
      py::arg("dtype_code"), "Element size in bytes of a dtype code.");

  py::class_<TensorTable, std::shared_ptr<TensorTable>>(m, "TensorTable",
                                                        "Validated table of parallel lists of raw buffers "
                                                        "(data pointers as ints) with one element count per tensor.")
      .def(py::init([](std::vector<PtrList> ptr_lists, const NumelList& numels, int dtype_code) {
             return std::make_shared<TensorTable>(std::move(ptr_lists), numels, dtype_code);
           }),
           py::arg("ptr_lists"), py::arg("numels"), py::arg("dtype_code"))
      .def_property_readonly("depth", &TensorTable::depth, "Number of pointer lists.")
      .def_property_readonly("num_tensors", &TensorTable::size, "Number of tensors per list.")
      .def_property_readonly("total_numel", &TensorTable::total, "Sum of the element counts.")
      .def_property_readonly("dtype_code", &TensorTable::dtype, "Dtype code of every buffer.")
      .def_property_readonly("aligned16", &TensorTable::aligned16,
                             "True when every non-empty buffer starts at a 16-byte boundary (vector loads).")
      .def("device_layout", &TensorTable::device_layout,
           "The int64 words the CUDA EMA kernel reads from device memory: the pointer lists, the element "
           "prefix sums (n + 1) and the per-tensor chunk prefix sums (n + 1).")
      .def(
          "numels",
          [](const TensorTable& t) {
            NumelList out(static_cast<std::size_t>(t.size()));
            for (int i = 0; i < t.size(); ++i) out[static_cast<std::size_t>(i)] = t.numel(i);
            return out;
          },
          "Element count of each tensor.");

  py::class_<ObjectIds>(m, "ObjectIds", "Identities of the objects of a list (no references held).")
      .def(py::init<py::list>(), py::arg("objects"))
      .def("matches", &ObjectIds::matches, py::arg("objects"),
           "True when `objects` has the same length and the same object at every position.")
      .def("__len__", [](const ObjectIds& ids) { return ids.size(); });

  m.def(
      "ema_config",
      []() {
        const auto t = jepa::cpu::ema_tuning();
        py::dict d;
        d["min_chunk_elements"] = t.min_chunk_elements;
        d["max_chunk_elements"] = t.max_chunk_elements;
        d["min_elements_per_thread"] = t.min_elements_per_thread;
        d["max_threads"] = jepa::ThreadPool::kMaxThreads;
        return d;
      },
      "Tuning constants of the CPU EMA (chunk size bounds, elements per thread below which fewer threads run).");

  m.def("ema_update", &cpu_ema, py::arg("table"), py::arg("momentum"), py::arg("num_threads") = 0,
        "CPU EMA over a TensorTable [targets, onlines]: target <- m * target + (1 - m) * online. "
        "Releases the GIL; returns the number of threads that ran.");
  m.def(
      "ema_update",
      [](PtrList target_ptrs, PtrList online_ptrs, const NumelList& numels, int dtype_code, double momentum,
         int num_threads) {
        check_momentum(momentum);
        auto table = make_pair_table(std::move(target_ptrs), std::move(online_ptrs), numels, dtype_code);
        return cpu_ema(*table, momentum, num_threads);
      },
      py::arg("target_ptrs"), py::arg("online_ptrs"), py::arg("numels"), py::arg("dtype_code"), py::arg("momentum"),
      py::arg("num_threads") = 0,
      "CPU EMA over raw buffers: target <- m * target + (1 - m) * online. Returns the number of threads that ran.");

  m.def("ema_update_cuda", &cuda_ema, py::arg("table"), py::arg("momentum"), py::arg("stream"),
        py::arg("device_table"),
        "CUDA EMA over a TensorTable of device pointers, one launch on `stream` (an int cudaStream_t); "
        "`device_table` is the device address of table.device_layout() (owned by the caller).");

  // ---- amp (loss scaling): unscale_config, unscale, update_scale, unscale_cuda, update_scale_cuda ----
  jepa::register_amp(m);
  // ---- end amp ----
  ckpt_bind::define(m);  // checkpoint IO: crc32c*, checkpoint_write, CheckpointReader, parallel_copy
}
