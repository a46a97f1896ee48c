// Checkpoint files in the safetensors layout: writer (parallel pwrite + CRC32C, tmp file, fsync,
// rename, directory fsync) and reader (mmap, header validation before any data is touched,
// parallel checksum verification). No libtorch: tensors are raw pointers and byte counts.
//
// File layout (https://github.com/huggingface/safetensors, "Format"):
//   [8-byte little-endian N][N bytes of JSON header, padded with spaces to a multiple of 8][data]
// The header maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the start of the data) and may hold "__metadata__", a string -> string map.
// jepa checkpoints add to __metadata__:
//   "jepa.crc32c":        CRC32C of every tensor's bytes, 8 lowercase hex digits each, separated by
//                         single spaces, in the order of the tensors' data_offsets (ties: shorter first)
//   "jepa.header_crc32c": CRC32C of the N header bytes in which these 8 hex digits are "00000000"
// (the Python side, jepa/io, writes the other jepa.* keys).
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace jepa {
namespace ckpt {

// A file that is not a valid checkpoint (truncated, corrupted, foreign, absurd header).
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A failed system call; `err` is the errno value (Python turns it into the matching OSError).
class IoError : public std::runtime_error {
 public:
  IoError(int err, const std::string& what, std::string filename)
      : std::runtime_error(what), err_(err), filename_(std::move(filename)) {}
  int err() const { return err_; }
  const std::string& filename() const { return filename_; }

 private:
  int err_;
  std::string filename_;
};

constexpr std::uint64_t kMaxHeaderBytes = 100ull << 20;  // same limit as the safetensors package
constexpr int kMaxDims = 64;
constexpr std::uint64_t kDefaultChunkBytes = 8ull << 20;

// Element size of a safetensors dtype name ("F32", "BF16", ...), 0 when unknown.
int dtype_size(const std::string& dtype);

struct WriteRequest {
  std::string path;                      // final name; the data goes to path + ".tmp-<pid>" first
  std::string header;                    // N bytes, N % 8 == 0, checksum fields hold "00000000"
  std::vector<std::uint64_t> crc_pos;    // per tensor: byte offset in `header` of its 8 hex digits
  std::int64_t header_crc_pos = -1;      // byte offset in `header` of the header CRC's 8 hex digits
  std::vector<const void*> ptrs;         // per tensor: its bytes (contiguous)
  std::vector<std::uint64_t> nbytes;     // per tensor
  std::vector<std::uint64_t> offsets;    // per tensor: data_offsets begin
  int num_threads = 0;                   // <= 0: hardware threads
  std::uint64_t chunk_bytes = kDefaultChunkBytes;
  bool durable = true;                   // fsync the file and the directory
};

struct WriteStats {
  std::uint64_t file_bytes = 0;
  int threads = 0;
  std::vector<std::uint32_t> crcs;  // per tensor, in request order
  std::uint32_t header_crc = 0;
};

// Writes the checkpoint atomically. Throws std::invalid_argument (bad request) or IoError; on any
// failure the temporary file is removed and `path` is left as it was.
WriteStats write_checkpoint(const WriteRequest& req);

struct TensorInfo {
  std::string name;
  std::string dtype;
  int elem_size = 0;
  std::vector<std::int64_t> shape;
  std::uint64_t begin = 0, end = 0;  // relative to the data start
};

struct VerifyResult {
  bool has_checksums = false;    // "jepa.crc32c" present
  bool has_header_crc = false;   // "jepa.header_crc32c" present
  bool header_ok = true;
  std::vector<std::string> bad_tensors;  // names whose bytes do not match their CRC
  int threads = 0;
};

class Reader {
 public:
  // Opens and maps `path`, parses and validates the header; throws FormatError / IoError.
  Reader(const std::string& path, bool populate);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const std::string& path() const { return path_; }
  std::uint64_t file_size() const { return size_; }
  std::uint64_t header_bytes() const { return header_len_; }
  std::uint64_t data_start() const { return 8 + header_len_; }
  unsigned char* data() const { return base_; }  // the whole file (copy-on-write private mapping)
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in data_offsets order
  const std::vector<std::pair<std::string, std::string>>& metadata() const { return metadata_; }
  bool has_metadata() const { return has_metadata_; }

  // Checks the header CRC and every tensor's CRC (threads over chunks). Throws FormatError when a
  // checksum field is malformed.
  VerifyResult verify(int num_threads, std::uint64_t chunk_bytes) const;

 private:
  std::string path_;
  int fd_ = -1;
  unsigned char* base_ = nullptr;
  std::uint64_t size_ = 0;
  std::uint64_t header_len_ = 0;
  std::vector<TensorInfo> tensors_;
  std::vector<std::pair<std::string, std::string>> metadata_;
  bool has_metadata_ = false;
};

// Copies n[i] bytes from src[i] to dst[i] for every i, on up to num_threads threads.
int parallel_copy(const std::vector<void*>& dst, const std::vector<const void*>& src,
                  const std::vector<std::uint64_t>& nbytes, int num_threads, std::uint64_t chunk_bytes);

}  // namespace ckpt
}  // namespace jepa
