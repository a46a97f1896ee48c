// A schema-driven JSON reader for safetensors headers: it builds only tensor entries and metadata
// strings (memory bounded by the header size), skips unknown fields without allocating, and
// limits nesting depth, so random bytes or hostile headers cannot crash it or blow up memory.
#include "checkpoint/header.h"

#include <cstdint>
#include <cstdio>
#include <unordered_set>

namespace jepa {
namespace ckpt {

namespace {

constexpr int kMaxSkipDepth = 64;

class Parser {
 public:
  Parser(const char* p, std::size_t n) : p_(p), n_(n) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError("invalid header JSON at byte " + std::to_string(i_) + ": " + what);
  }

  void ws() {
    while (i_ < n_ && (p_[i_] == ' ' || p_[i_] == '\t' || p_[i_] == '\n' || p_[i_] == '\r')) ++i_;
  }
  bool at_end() const { return i_ >= n_; }
  char peek() {
    if (i_ >= n_) fail("unexpected end of header");
    return p_[i_];
  }
  void expect(char c) {
    ws();
    if (peek() != c) fail(std::string("expected '") + c + "', found " + describe(p_[i_]));
    ++i_;
  }
  bool consume(char c) {
    ws();
    if (i_ < n_ && p_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  static std::string describe(char c) {
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7F) return std::string("'") + c + "'";
    char buf[16];
    std::snprintf(buf, sizeof buf, "byte 0x%02x", u);
    return buf;
  }

  static void put_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  std::uint32_t hex4() {
    if (n_ - i_ < 4) fail("truncated \\u escape");
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = p_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<std::uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<std::uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<std::uint32_t>(c - 'A' + 10);
      else fail("bad hex digit in \\u escape");
    }
    return v;
  }

  // Validates one UTF-8 sequence starting at i_ (first byte >= 0x80) and appends it.
  void utf8_seq(std::string* out) {
    const auto b0 = static_cast<unsigned char>(p_[i_]);
    int len;
    std::uint32_t cp;
    if (b0 >= 0xC2 && b0 <= 0xDF) { len = 2; cp = b0 & 0x1Fu; }
    else if (b0 >= 0xE0 && b0 <= 0xEF) { len = 3; cp = b0 & 0x0Fu; }
    else if (b0 >= 0xF0 && b0 <= 0xF4) { len = 4; cp = b0 & 0x07u; }
    else fail("invalid UTF-8 in string");
    if (n_ - i_ < static_cast<std::size_t>(len)) fail("truncated UTF-8 sequence");
    for (int k = 1; k < len; ++k) {
      const auto b = static_cast<unsigned char>(p_[i_ + static_cast<std::size_t>(k)]);
      if ((b & 0xC0u) != 0x80u) fail("invalid UTF-8 in string");
      cp = (cp << 6) | (b & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
      fail("invalid UTF-8 in string");
    }
    if (out) out->append(p_ + i_, static_cast<std::size_t>(len));
    i_ += static_cast<std::size_t>(len);
  }

  // Reads a JSON string; out == nullptr skips it.
  void string(std::string* out) {
    expect('"');
    for (;;) {
      if (i_ >= n_) fail("unterminated string");
      const auto c = static_cast<unsigned char>(p_[i_]);
      if (c == '"') {
        ++i_;
        return;
      }
      if (c < 0x20) fail("control character in string");
      if (c == '\\') {
        ++i_;
        if (i_ >= n_) fail("unterminated escape");
        const char e = p_[i_++];
        char r;
        switch (e) {
          case '"': r = '"'; break;
          case '\\': r = '\\'; break;
          case '/': r = '/'; break;
          case 'b': r = '\b'; break;
          case 'f': r = '\f'; break;
          case 'n': r = '\n'; break;
          case 'r': r = '\r'; break;
          case 't': r = '\t'; break;
          case 'u': {
            std::uint32_t cp = hex4();
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (n_ - i_ < 6 || p_[i_] != '\\' || p_[i_ + 1] != 'u') fail("unpaired surrogate in \\u escape");
              i_ += 2;
              const std::uint32_t lo = hex4();
              if (lo < 0xDC00 || lo > 0xDFFF) fail("unpaired surrogate in \\u escape");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
              fail("unpaired surrogate in \\u escape");
            }
            if (out) put_utf8(*out, cp);
            continue;
          }
          default: fail("bad escape \\" + describe(e));
        }
        if (out) out->push_back(r);
        continue;
      }
      if (c >= 0x80) {
        utf8_seq(out);
        continue;
      }
      if (out) out->push_back(static_cast<char>(c));
      ++i_;
    }
  }

  // A non-negative JSON integer that fits in int64 (what shapes and offsets are).
  std::uint64_t uint(const char* what) {
    ws();
    if (i_ >= n_ || p_[i_] < '0' || p_[i_] > '9') fail(std::string(what) + " must be a non-negative integer");
    if (p_[i_] == '0' && i_ + 1 < n_ && p_[i_ + 1] >= '0' && p_[i_ + 1] <= '9') fail("leading zero in number");
    std::uint64_t v = 0;
    while (i_ < n_ && p_[i_] >= '0' && p_[i_] <= '9') {
      const auto d = static_cast<std::uint64_t>(p_[i_] - '0');
      if (v > (static_cast<std::uint64_t>(INT64_MAX) - d) / 10) fail(std::string(what) + " is too large");
      v = v * 10 + d;
      ++i_;
    }
    if (i_ < n_ && (p_[i_] == '.' || p_[i_] == 'e' || p_[i_] == 'E')) fail(std::string(what) + " must be an integer");
    return v;
  }

  void literal(const char* word) {
    for (const char* w = word; *w; ++w) {
      if (i_ >= n_ || p_[i_] != *w) fail(std::string("invalid literal (expected ") + word + ")");
      ++i_;
    }
  }

  void skip_number() {
    const std::size_t start = i_;
    if (i_ < n_ && p_[i_] == '-') ++i_;
    std::size_t digits = 0;
    while (i_ < n_ && ((p_[i_] >= '0' && p_[i_] <= '9') || p_[i_] == '.' || p_[i_] == 'e' || p_[i_] == 'E' ||
                       p_[i_] == '+' || p_[i_] == '-')) {
      ++i_;
      ++digits;
    }
    if (digits == 0) {
      i_ = start;
      fail("invalid value");
    }
  }

  // Skips any JSON value without storing it (unknown fields).
  void skip_value(int depth) {
    if (depth > kMaxSkipDepth) fail("nesting deeper than " + std::to_string(kMaxSkipDepth));
    ws();
    const char c = peek();
    if (c == '"') {
      string(nullptr);
    } else if (c == '{') {
      ++i_;
      if (consume('}')) return;
      do {
        ws();
        string(nullptr);
        expect(':');
        skip_value(depth + 1);
      } while (consume(','));
      expect('}');
    } else if (c == '[') {
      ++i_;
      if (consume(']')) return;
      do skip_value(depth + 1);
      while (consume(','));
      expect(']');
    } else if (c == 't') {
      literal("true");
    } else if (c == 'f') {
      literal("false");
    } else if (c == 'n') {
      literal("null");
    } else {
      skip_number();
    }
  }

  void tensor_entry(TensorInfo& t) {
    expect('{');
    bool has_dtype = false, has_shape = false, has_offsets = false;
    if (!consume('}')) {
      do {
        ws();
        std::string key;
        string(&key);
        expect(':');
        if (key == "dtype") {
          if (has_dtype) fail("duplicate field 'dtype' in tensor '" + t.name + "'");
          ws();
          string(&t.dtype);
          has_dtype = true;
        } else if (key == "shape") {
          if (has_shape) fail("duplicate field 'shape' in tensor '" + t.name + "'");
          expect('[');
          if (!consume(']')) {
            do {
              if (t.shape.size() >= static_cast<std::size_t>(kMaxDims)) {
                fail("tensor '" + t.name + "' has more than " + std::to_string(kMaxDims) + " dimensions");
              }
              t.shape.push_back(static_cast<std::int64_t>(uint("a shape entry")));
            } while (consume(','));
            expect(']');
          }
          has_shape = true;
        } else if (key == "data_offsets") {
          if (has_offsets) fail("duplicate field 'data_offsets' in tensor '" + t.name + "'");
          expect('[');
          t.begin = uint("data_offsets[0]");
          expect(',');
          t.end = uint("data_offsets[1]");
          expect(']');
          has_offsets = true;
        } else {
          skip_value(1);
        }
      } while (consume(','));
      expect('}');
    }
    if (!has_dtype || !has_shape || !has_offsets) {
      throw FormatError("tensor '" + t.name + "' lacks " +
                        std::string(!has_dtype ? "'dtype'" : !has_shape ? "'shape'" : "'data_offsets'"));
    }
  }

  void metadata(std::vector<std::pair<std::string, std::string>>& out) {
    expect('{');
    if (consume('}')) return;
    std::unordered_set<std::string> seen;
    do {
      ws();
      std::pair<std::string, std::string> kv;
      string(&kv.first);
      expect(':');
      ws();
      if (peek() != '"') fail("__metadata__ values must be strings (key '" + kv.first + "')");
      string(&kv.second);
      if (!seen.insert(kv.first).second) fail("duplicate __metadata__ key '" + kv.first + "'");
      out.push_back(std::move(kv));
    } while (consume(','));
    expect('}');
  }

  std::size_t pos() const { return i_; }

 private:
  const char* p_;
  std::size_t n_;
  std::size_t i_ = 0;
};

}  // namespace

int dtype_size(const std::string& d) {
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "BOOL" || d == "U8" || d == "I8" || d == "F8_E4M3" || d == "F8_E5M2") return 1;
  return 0;
}

void parse_header(const char* header, std::size_t n, std::vector<TensorInfo>& tensors,
                  std::vector<std::pair<std::string, std::string>>& metadata, bool& has_metadata) {
  Parser ps(header, n);
  ps.ws();
  if (ps.at_end() || ps.peek() != '{') throw FormatError("header does not start with a JSON object '{'");
  ps.expect('{');
  std::unordered_set<std::string> names;
  has_metadata = false;
  if (!ps.consume('}')) {
    do {
      ps.ws();
      std::string key;
      ps.string(&key);
      ps.expect(':');
      if (key == "__metadata__") {
        if (has_metadata) ps.fail("duplicate __metadata__");
        ps.metadata(metadata);
        has_metadata = true;
        continue;
      }
      if (!names.insert(key).second) ps.fail("duplicate tensor name '" + key + "'");
      TensorInfo t;
      t.name = std::move(key);
      ps.tensor_entry(t);
      t.elem_size = dtype_size(t.dtype);
      if (t.elem_size == 0) throw FormatError("tensor '" + t.name + "' has unknown dtype '" + t.dtype + "'");
      if (t.end < t.begin) {
        throw FormatError("tensor '" + t.name + "' has data_offsets [" + std::to_string(t.begin) + ", " +
                          std::to_string(t.end) + "] with end < begin");
      }
      std::uint64_t count = 1;
      for (const std::int64_t d : t.shape) {
        if (__builtin_mul_overflow(count, static_cast<std::uint64_t>(d), &count)) {
          throw FormatError("tensor '" + t.name + "' shape overflows 64 bits");
        }
      }
      std::uint64_t bytes;
      if (__builtin_mul_overflow(count, static_cast<std::uint64_t>(t.elem_size), &bytes)) {
        throw FormatError("tensor '" + t.name + "' byte size overflows 64 bits");
      }
      if (bytes != t.end - t.begin) {
        throw FormatError("tensor '" + t.name + "': shape and dtype " + t.dtype + " need " + std::to_string(bytes) +
                          " bytes, data_offsets span " + std::to_string(t.end - t.begin));
      }
      tensors.push_back(std::move(t));
    } while (ps.consume(','));
    ps.expect('}');
  }
  ps.ws();
  if (!ps.at_end()) ps.fail("unexpected bytes after the header object (only space padding may follow)");
}

}  // namespace ckpt
}  // namespace jepa
