// Writer and reader of checkpoint files (see checkpoint.h for the layout).
#include "checkpoint/checkpoint.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "checkpoint/crc32c.h"
#include "checkpoint/header.h"
#include "thread_pool.h"

namespace jepa {
namespace ckpt {

namespace {

constexpr char kCrcKey[] = "\"jepa.crc32c\":\"";
constexpr char kHeaderCrcKey[] = "\"jepa.header_crc32c\":\"";

[[noreturn]] void throw_errno(const char* call, const std::string& file) {
  const int err = errno;
  throw IoError(err, std::string(call) + " failed for '" + file + "': " + std::strerror(err), file);
}

int resolve_threads(int requested, std::uint64_t work_items) {
  int t = requested > 0 ? requested : hardware_threads();
  t = std::min(t, 64);
  if (work_items < static_cast<std::uint64_t>(t)) t = static_cast<int>(std::max<std::uint64_t>(work_items, 1));
  return t;
}

// Runs job(thread_index) on `threads` threads (the caller is thread 0); rethrows the first exception.
// Dedicated threads, not the shared ThreadPool: IO threads sleep in system calls, and an async save
// running for a second must not take the pool away from the training loop's CPU ops.
void run_threads(int threads, const std::function<void(int)>& job) {
  std::exception_ptr first;
  std::mutex mu;
  auto guarded = [&](int t) {
    try {
      job(t);
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu);
      if (!first) first = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<std::size_t>(threads > 0 ? threads - 1 : 0));
  try {
    for (int t = 1; t < threads; ++t) workers.emplace_back(guarded, t);
  } catch (...) {
    // could not start more threads: the ones that started (and the caller) do all the work
  }
  guarded(0);
  for (auto& w : workers) w.join();
  if (first) std::rethrow_exception(first);
}

struct Chunk {
  std::size_t tensor;
  std::uint64_t begin;  // relative to the tensor
  std::uint64_t len;
};

std::vector<Chunk> make_chunks(const std::vector<std::uint64_t>& sizes, std::uint64_t chunk_bytes) {
  std::vector<Chunk> chunks;
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    if (sizes[i] == 0) continue;
    for (std::uint64_t b = 0; b < sizes[i]; b += chunk_bytes) chunks.push_back({i, b, std::min(chunk_bytes, sizes[i] - b)});
  }
  return chunks;
}

// Folds per-chunk CRCs (chunks of one tensor are consecutive and in order) into per-tensor CRCs.
std::vector<std::uint32_t> fold_crcs(std::size_t num_tensors, const std::vector<Chunk>& chunks,
                                     const std::vector<std::uint32_t>& chunk_crcs) {
  std::vector<std::uint32_t> crcs(num_tensors, 0);
  for (std::size_t c = 0; c < chunks.size(); ++c) {
    const std::size_t t = chunks[c].tensor;
    crcs[t] = chunks[c].begin == 0 ? chunk_crcs[c] : crc32c_combine(crcs[t], chunk_crcs[c], chunks[c].len);
  }
  return crcs;
}

void put_hex(char* dst, std::uint32_t v) {
  static const char digits[] = "0123456789abcdef";
  for (int k = 7; k >= 0; --k) {
    dst[k] = digits[v & 0xFu];
    v >>= 4;
  }
}

bool parse_hex(const char* s, std::uint32_t& v) {
  v = 0;
  for (int k = 0; k < 8; ++k) {
    const char c = s[k];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= static_cast<std::uint32_t>(c - '0');
    else if (c >= 'a' && c <= 'f') v |= static_cast<std::uint32_t>(c - 'a' + 10);
    else return false;
  }
  return true;
}

void pwrite_all(int fd, const unsigned char* p, std::uint64_t n, std::uint64_t off, const std::string& file) {
  while (n > 0) {
    const std::size_t step = static_cast<std::size_t>(std::min<std::uint64_t>(n, 1ull << 30));
    const ssize_t w = ::pwrite(fd, p, step, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_errno("pwrite", file);
    }
    if (w == 0) {
      errno = EIO;
      throw_errno("pwrite", file);
    }
    p += w;
    n -= static_cast<std::uint64_t>(w);
    off += static_cast<std::uint64_t>(w);
  }
}

std::string parent_dir(const std::string& path) {
  const auto slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

WriteStats write_checkpoint(const WriteRequest& req) {
  const std::size_t n = req.ptrs.size();
  if (req.nbytes.size() != n || req.offsets.size() != n || req.crc_pos.size() != n) {
    throw std::invalid_argument("write_checkpoint: ptrs, nbytes, offsets and crc_pos must have the same length");
  }
  const std::uint64_t hlen = req.header.size();
  if (hlen == 0 || hlen % 8 != 0) {
    throw std::invalid_argument("write_checkpoint: header length must be a positive multiple of 8, got " + std::to_string(hlen));
  }
  if (req.header_crc_pos < 0 || static_cast<std::uint64_t>(req.header_crc_pos) + 8 > hlen) {
    throw std::invalid_argument("write_checkpoint: header_crc_pos out of the header");
  }
  if (req.chunk_bytes == 0) throw std::invalid_argument("write_checkpoint: chunk_bytes must be > 0");
  std::uint64_t data_len = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (req.crc_pos[i] + 8 > hlen) throw std::invalid_argument("write_checkpoint: crc_pos out of the header");
    if (req.nbytes[i] > 0 && req.ptrs[i] == nullptr) throw std::invalid_argument("write_checkpoint: null data pointer");
    data_len = std::max(data_len, req.offsets[i] + req.nbytes[i]);
  }
  const std::uint64_t total = 8 + hlen + data_len;

  const std::string tmp = req.path + ".tmp-" + std::to_string(static_cast<long long>(::getpid()));
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw_errno("open", tmp);
  WriteStats stats;
  try {
    if (::ftruncate(fd, static_cast<off_t>(total)) != 0) throw_errno("ftruncate", tmp);
    const std::vector<Chunk> chunks = make_chunks(req.nbytes, req.chunk_bytes);
    std::vector<std::uint32_t> chunk_crcs(chunks.size(), 0);
    std::atomic<std::size_t> next{0};
    std::atomic<bool> failed{false};
    const int threads = resolve_threads(req.num_threads, chunks.size());
    run_threads(threads, [&](int) {
      for (;;) {
        if (failed.load(std::memory_order_relaxed)) return;
        const std::size_t c = next.fetch_add(1, std::memory_order_relaxed);
        if (c >= chunks.size()) return;
        const Chunk& ch = chunks[c];
        const auto* src = static_cast<const unsigned char*>(req.ptrs[ch.tensor]) + ch.begin;
        try {
          chunk_crcs[c] = crc32c_extend(0, src, ch.len);  // from the tensor's memory, while it is hot in cache
          const std::uint64_t off = 8 + hlen + req.offsets[ch.tensor] + ch.begin;
          pwrite_all(fd, src, ch.len, off, tmp);
#if defined(__linux__)
          // Start the disk writeback of this chunk now (asynchronously), so the final fsync has little
          // left to do: writing to the page cache and to the disk overlap.
          if (req.durable) (void)::sync_file_range(fd, static_cast<off_t>(off), static_cast<off_t>(ch.len), SYNC_FILE_RANGE_WRITE);
#endif
        } catch (...) {
          failed.store(true);
          throw;
        }
      }
    });
    stats.threads = threads;
    stats.crcs = fold_crcs(n, chunks, chunk_crcs);
    std::string header = req.header;
    for (std::size_t i = 0; i < n; ++i) put_hex(&header[req.crc_pos[i]], stats.crcs[i]);
    std::memcpy(&header[static_cast<std::size_t>(req.header_crc_pos)], "00000000", 8);
    stats.header_crc = crc32c_extend(0, header.data(), header.size());
    put_hex(&header[static_cast<std::size_t>(req.header_crc_pos)], stats.header_crc);
    unsigned char len_le[8];
    for (int k = 0; k < 8; ++k) len_le[k] = static_cast<unsigned char>((hlen >> (8 * k)) & 0xFFu);
    // The header goes last: a file cut short before this point has no valid header.
    pwrite_all(fd, reinterpret_cast<const unsigned char*>(header.data()), hlen, 8, tmp);
    pwrite_all(fd, len_le, 8, 0, tmp);
    if (req.durable && ::fsync(fd) != 0) throw_errno("fsync", tmp);
    const int rc = ::close(fd);
    fd = -1;
    if (rc != 0) throw_errno("close", tmp);
    if (::rename(tmp.c_str(), req.path.c_str()) != 0) throw_errno("rename", req.path);
  } catch (...) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (req.durable) {
    const std::string dir = parent_dir(req.path);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {  // the file is in place; a directory that cannot be opened/fsynced is not an error
      (void)::fsync(dfd);
      ::close(dfd);
    }
  }
  stats.file_bytes = total;
  return stats;
}

Reader::Reader(const std::string& path, bool populate) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw_errno("open", path);
  try {
    struct stat st;
    if (::fstat(fd_, &st) != 0) throw_errno("fstat", path);
    if (!S_ISREG(st.st_mode)) throw FormatError("'" + path + "' is not a regular file");
    size_ = static_cast<std::uint64_t>(st.st_size);
    if (size_ < 8) {
      throw FormatError("truncated: file has " + std::to_string(size_) + " bytes, fewer than the 8-byte header length");
    }
    // Private, writable mapping: tensors handed to Python may be modified in place (copy on write);
    // the file itself is never changed.
    int flags = MAP_PRIVATE;
#ifdef MAP_POPULATE
    if (populate) flags |= MAP_POPULATE;
#else
    (void)populate;
#endif
    // Mapped read-only first: populating a writable private mapping would copy every page (a write
    // fault per page); a read-only one maps the page-cache pages themselves. Write permission is
    // added afterwards, and only pages that are really written get copied.
    void* m = ::mmap(nullptr, static_cast<std::size_t>(size_), PROT_READ, flags, fd_, 0);
    if (m == MAP_FAILED) throw_errno("mmap", path);
    base_ = static_cast<unsigned char*>(m);
    if (::mprotect(m, static_cast<std::size_t>(size_), PROT_READ | PROT_WRITE) != 0) throw_errno("mprotect", path);
    std::uint64_t hlen = 0;
    for (int k = 7; k >= 0; --k) hlen = (hlen << 8) | base_[k];
    if (hlen > size_ - 8) {
      throw FormatError("truncated: header says " + std::to_string(hlen) + " bytes, file has " + std::to_string(size_) +
                        " (" + std::to_string(size_ - 8) + " after the 8-byte length)");
    }
    if (hlen == 0) throw FormatError("header length is 0");
    if (hlen > kMaxHeaderBytes) {
      throw FormatError("header length " + std::to_string(hlen) + " exceeds the limit of " + std::to_string(kMaxHeaderBytes) + " bytes");
    }
    header_len_ = hlen;
    std::vector<TensorInfo> entries;
    parse_header(reinterpret_cast<const char*>(base_ + 8), static_cast<std::size_t>(hlen), entries, metadata_, has_metadata_);
    // Placement: sorted by offsets the tensors must tile [0, data_len) exactly (as safetensors requires).
    std::stable_sort(entries.begin(), entries.end(), [](const TensorInfo& a, const TensorInfo& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
    });
    const std::uint64_t data_len = size_ - 8 - hlen;
    std::uint64_t cursor = 0;
    for (const TensorInfo& t : entries) {
      if (t.begin != cursor) {
        throw FormatError("tensor '" + t.name + "' data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
                          "] " + (t.begin < cursor ? "overlap the previous tensor" : "leave a gap after the previous tensor") +
                          " (previous ends at " + std::to_string(cursor) + ")");
      }
      cursor = t.end;
    }
    if (cursor > data_len) {
      throw FormatError("truncated: header says " + std::to_string(hlen) + " header bytes and " + std::to_string(cursor) +
                        " data bytes (" + std::to_string(8 + hlen + cursor) + " in all), file has " + std::to_string(size_));
    }
    if (cursor < data_len) {
      throw FormatError("file has " + std::to_string(size_) + " bytes but its header accounts for " +
                        std::to_string(8 + hlen + cursor) + " (unexpected trailing bytes)");
    }
    tensors_ = std::move(entries);
    ::close(fd_);  // the mapping keeps the file's pages; no descriptor stays open per loaded checkpoint
    fd_ = -1;
  } catch (...) {
    if (base_) ::munmap(base_, static_cast<std::size_t>(size_));
    base_ = nullptr;
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    throw;
  }
}

Reader::~Reader() {
  if (base_) ::munmap(base_, static_cast<std::size_t>(size_));
  if (fd_ >= 0) ::close(fd_);
}

VerifyResult Reader::verify(int num_threads, std::uint64_t chunk_bytes) const {
  if (chunk_bytes == 0) throw std::invalid_argument("verify: chunk_bytes must be > 0");
  VerifyResult r;
  const char* hdr = reinterpret_cast<const char*>(base_ + 8);
  const std::size_t hlen = static_cast<std::size_t>(header_len_);
  const std::string* crc_text = nullptr;
  bool has_header_crc_key = false;
  for (const auto& kv : metadata_) {
    if (kv.first == "jepa.crc32c") crc_text = &kv.second;
    if (kv.first == "jepa.header_crc32c") has_header_crc_key = true;
  }
  if (has_header_crc_key) {
    r.has_header_crc = true;
    // The key occurs once as raw text: inside JSON strings every '"' is escaped.
    const char* at = static_cast<const char*>(::memmem(hdr, hlen, kHeaderCrcKey, sizeof(kHeaderCrcKey) - 1));
    const std::size_t pos = at ? static_cast<std::size_t>(at - hdr) + sizeof(kHeaderCrcKey) - 1 : hlen;
    std::uint32_t expected = 0;
    if (pos + 9 > hlen || hdr[pos + 8] != '"' || !parse_hex(hdr + pos, expected)) {
      throw FormatError("header checksum field jepa.header_crc32c is malformed");
    }
    std::string copy(hdr, hlen);
    std::memcpy(&copy[pos], "00000000", 8);
    r.header_ok = crc32c_extend(0, copy.data(), copy.size()) == expected;
  }
  if (crc_text == nullptr) return r;
  r.has_checksums = true;
  const std::string& s = *crc_text;
  const std::size_t n = tensors_.size();
  if ((n == 0 && !s.empty()) || (n > 0 && s.size() != 9 * n - 1)) {
    throw FormatError("checksum field jepa.crc32c holds " + std::to_string((s.size() + 1) / 9) + " entries for " +
                      std::to_string(n) + " tensors");
  }
  std::vector<std::uint32_t> expected(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (!parse_hex(s.data() + 9 * i, expected[i]) || (i + 1 < n && s[9 * i + 8] != ' ')) {
      throw FormatError("checksum field jepa.crc32c is malformed at entry " + std::to_string(i));
    }
  }
  std::vector<std::uint64_t> sizes(n);
  for (std::size_t i = 0; i < n; ++i) sizes[i] = tensors_[i].end - tensors_[i].begin;
  const std::vector<Chunk> chunks = make_chunks(sizes, chunk_bytes);
  std::vector<std::uint32_t> chunk_crcs(chunks.size(), 0);
  std::atomic<std::size_t> next{0};
  const int threads = resolve_threads(num_threads, chunks.size());
  const unsigned char* data = base_ + 8 + header_len_;
  run_threads(threads, [&](int) {
    for (;;) {
      const std::size_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks.size()) return;
      const Chunk& ch = chunks[c];
      chunk_crcs[c] = crc32c_extend(0, data + tensors_[ch.tensor].begin + ch.begin, ch.len);
    }
  });
  r.threads = threads;
  const std::vector<std::uint32_t> got = fold_crcs(n, chunks, chunk_crcs);
  for (std::size_t i = 0; i < n; ++i) {
    if (got[i] != expected[i]) r.bad_tensors.push_back(tensors_[i].name);
  }
  return r;
}

int parallel_copy(const std::vector<void*>& dst, const std::vector<const void*>& src,
                  const std::vector<std::uint64_t>& nbytes, int num_threads, std::uint64_t chunk_bytes) {
  if (dst.size() != src.size() || dst.size() != nbytes.size()) {
    throw std::invalid_argument("parallel_copy: dst, src and nbytes must have the same length");
  }
  if (chunk_bytes == 0) throw std::invalid_argument("parallel_copy: chunk_bytes must be > 0");
  for (std::size_t i = 0; i < dst.size(); ++i) {
    if (nbytes[i] > 0 && (dst[i] == nullptr || src[i] == nullptr)) throw std::invalid_argument("parallel_copy: null pointer");
  }
  const std::vector<Chunk> chunks = make_chunks(nbytes, chunk_bytes);
  std::atomic<std::size_t> next{0};
  const int threads = resolve_threads(num_threads, chunks.size());
  run_threads(threads, [&](int) {
    for (;;) {
      const std::size_t c = next.fetch_add(1, std::memory_order_relaxed);
      if (c >= chunks.size()) return;
      const Chunk& ch = chunks[c];
      std::memcpy(static_cast<unsigned char*>(dst[ch.tensor]) + ch.begin,
                  static_cast<const unsigned char*>(src[ch.tensor]) + ch.begin, static_cast<std::size_t>(ch.len));
    }
  });
  return threads;
}

}  // namespace ckpt
}  // namespace jepa
