#include "nibble/io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <new>
#include <unordered_set>

#include "io/io_common.h"

namespace nibble {
namespace io {

using internal::BadFormat;
using internal::Printable;

// ---------------------------------------------------------------------------
// ggml types.

namespace {

// Block and type sizes are those of ggml's type_traits (ggml.c) and the block
// structs of ggml-common.h. gguf-py 0.19 agrees on all of them except Q8_1,
// for which it still lists 40 bytes (two floats); ggml's block_q8_1 holds two
// halves and 32 quants: 36 bytes. Q8_1 is an activation format that no model
// file stores; we follow ggml, the runtime that loads the files.
constexpr GgmlTypeInfo kGgmlTypes[] = {
    {GgmlType::kF32, "F32", 1, 4},
    {GgmlType::kF16, "F16", 1, 2},
    {GgmlType::kQ4_0, "Q4_0", 32, 18},
    {GgmlType::kQ4_1, "Q4_1", 32, 20},
    {GgmlType::kQ5_0, "Q5_0", 32, 22},
    {GgmlType::kQ5_1, "Q5_1", 32, 24},
    {GgmlType::kQ8_0, "Q8_0", 32, 34},
    {GgmlType::kQ8_1, "Q8_1", 32, 36},
    {GgmlType::kQ2_K, "Q2_K", 256, 84},
    {GgmlType::kQ3_K, "Q3_K", 256, 110},
    {GgmlType::kQ4_K, "Q4_K", 256, 144},
    {GgmlType::kQ5_K, "Q5_K", 256, 176},
    {GgmlType::kQ6_K, "Q6_K", 256, 210},
    {GgmlType::kQ8_K, "Q8_K", 256, 292},
    {GgmlType::kIQ2_XXS, "IQ2_XXS", 256, 66},
    {GgmlType::kIQ2_XS, "IQ2_XS", 256, 74},
    {GgmlType::kIQ3_XXS, "IQ3_XXS", 256, 98},
    {GgmlType::kIQ1_S, "IQ1_S", 256, 50},
    {GgmlType::kIQ4_NL, "IQ4_NL", 32, 18},
    {GgmlType::kIQ3_S, "IQ3_S", 256, 110},
    {GgmlType::kIQ2_S, "IQ2_S", 256, 82},
    {GgmlType::kIQ4_XS, "IQ4_XS", 256, 136},
    {GgmlType::kI8, "I8", 1, 1},
    {GgmlType::kI16, "I16", 1, 2},
    {GgmlType::kI32, "I32", 1, 4},
    {GgmlType::kI64, "I64", 1, 8},
    {GgmlType::kF64, "F64", 1, 8},
    {GgmlType::kIQ1_M, "IQ1_M", 256, 56},
    {GgmlType::kBF16, "BF16", 1, 2},
    {GgmlType::kTQ1_0, "TQ1_0", 256, 54},
    {GgmlType::kTQ2_0, "TQ2_0", 256, 66},
    {GgmlType::kMXFP4, "MXFP4", 32, 17},
    {GgmlType::kNVFP4, "NVFP4", 64, 36},
    {GgmlType::kQ1_0, "Q1_0", 128, 18},
};

}  // namespace

const GgmlTypeInfo* FindGgmlType(uint32_t id) {
  for (const GgmlTypeInfo& row : kGgmlTypes) {
    if (static_cast<uint32_t>(row.type) == id) return &row;
  }
  return nullptr;
}

const GgmlTypeInfo& GgmlTypeTraits(GgmlType type) {
  const GgmlTypeInfo* row = FindGgmlType(static_cast<uint32_t>(type));
  // Every enumerator has a row; an out-of-range cast is a caller bug.
  return row != nullptr ? *row : kGgmlTypes[0];
}

const char* GgmlTypeName(GgmlType type) {
  const GgmlTypeInfo* row = FindGgmlType(static_cast<uint32_t>(type));
  return row != nullptr ? row->name : "unknown";
}

const std::vector<GgmlType>& AllGgmlTypes() {
  static const std::vector<GgmlType>* all = [] {
    auto* v = new std::vector<GgmlType>();
    for (const GgmlTypeInfo& row : kGgmlTypes) v->push_back(row.type);
    return v;
  }();
  return *all;
}

bool GgmlTypeToKernel(GgmlType type, DType* out) {
  switch (type) {
    case GgmlType::kF32:
      *out = DType::kF32;
      return true;
    case GgmlType::kF16:
      *out = DType::kF16;
      return true;
    case GgmlType::kBF16:
      *out = DType::kBF16;
      return true;
    default:
      return false;
  }
}

GgmlType KernelToGgmlType(DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return GgmlType::kF16;
    case DType::kBF16:
      return GgmlType::kBF16;
    case DType::kF32:
    default:
      return GgmlType::kF32;
  }
}

bool GgmlTensorByteSize(GgmlType type, const std::vector<int64_t>& ne,
                        int64_t* elements, uint64_t* bytes) {
  const GgmlTypeInfo* row = FindGgmlType(static_cast<uint32_t>(type));
  if (row == nullptr || ne.empty() || ne.size() > kGgufMaxDims) return false;
  uint64_t n = 1;
  for (int64_t d : ne) {
    if (d < 1) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
    if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return false;
    }
  }
  if (static_cast<uint64_t>(ne[0]) % row->block_size != 0) return false;
  uint64_t b;
  if (__builtin_mul_overflow(n / row->block_size, uint64_t{row->type_size},
                             &b)) {
    return false;
  }
  *elements = static_cast<int64_t>(n);
  *bytes = b;
  return true;
}

std::string NeToString(const std::vector<int64_t>& ne) {
  std::string s = "[";
  for (size_t i = 0; i < ne.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(ne[i]);
  }
  return s + "]";
}

// ---------------------------------------------------------------------------
// Value types.

namespace {

struct TypeRow {
  const char* name;
  size_t size;
};

constexpr TypeRow kGgufTypes[] = {
    {"u8", 1},  {"i8", 1},  {"u16", 2},  {"i16", 2},    {"u32", 4},
    {"i32", 4}, {"f32", 4}, {"bool", 1}, {"string", 0}, {"array", 0},
    {"u64", 8}, {"i64", 8}, {"f64", 8},
};
constexpr uint32_t kGgufTypeCount = 13;

uint64_t LoadLe(const char* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = n; i-- > 0;) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

void StoreLe(uint64_t v, size_t n, std::string* out) {
  for (size_t i = 0; i < n; ++i) {
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
}

uint64_t AlignUp(uint64_t x, uint64_t alignment) {
  // alignment is a power of two <= 2^31 and x < 2^63: no overflow.
  return (x + alignment - 1) & ~(alignment - 1);
}

std::string TypeDescription(GgufType type, GgufType element) {
  if (type == GgufType::kArray) {
    return std::string("array of ") + GgufTypeName(element);
  }
  return GgufTypeName(type);
}

}  // namespace

const char* GgufTypeName(GgufType type) {
  const uint32_t id = static_cast<uint32_t>(type);
  return id < kGgufTypeCount ? kGgufTypes[id].name : "unknown";
}

bool ParseGgufType(uint32_t id, GgufType* type) {
  if (id >= kGgufTypeCount) return false;
  *type = static_cast<GgufType>(id);
  return true;
}

size_t GgufScalarSize(GgufType type) {
  const uint32_t id = static_cast<uint32_t>(type);
  return id < kGgufTypeCount ? kGgufTypes[id].size : 0;
}

// ---------------------------------------------------------------------------
// The parser.

namespace internal {

// The bytes of a GGUF file: either in memory, or read with pread through a
// window buffer (so a file truncated while it is validated gives a read
// error, never SIGBUS). Every Read is preceded by a check against left().
class ByteSource {
 public:
  ByteSource(const uint8_t* data, uint64_t size) : mem_(data), size_(size) {}
  ByteSource(int fd, uint64_t size) : fd_(fd), size_(size) {}

  uint64_t size() const { return size_; }
  uint64_t pos() const { return pos_; }
  uint64_t left() const { return size_ - pos_; }
  // errno of a failed read; kShrank when the file ended early.
  int error() const { return err_; }
  static constexpr int kShrank = -1;

  // Copies the next n <= left() bytes. False on a read error.
  bool Read(void* dst, uint64_t n) {
    if (n > left()) {
      err_ = kShrank;
      return false;
    }
    if (n == 0) return true;
    if (mem_ != nullptr) {
      std::memcpy(dst, mem_ + pos_, static_cast<size_t>(n));
      pos_ += n;
      return true;
    }
    uint8_t* out = static_cast<uint8_t*>(dst);
    while (n > 0) {
      if (pos_ >= buf_start_ && pos_ < buf_start_ + buf_len_) {
        const uint64_t k = std::min<uint64_t>(n, buf_start_ + buf_len_ - pos_);
        std::memcpy(out, buf_.data() + (pos_ - buf_start_),
                    static_cast<size_t>(k));
        out += k;
        pos_ += k;
        n -= k;
        continue;
      }
      if (n >= kWindow) {
        if (!PreadAll(out, n, pos_)) return false;
        pos_ += n;
        return true;
      }
      const uint64_t want = std::min<uint64_t>(kWindow, left());
      if (buf_.size() < kWindow) buf_.resize(kWindow);
      if (!PreadAll(buf_.data(), want, pos_)) return false;
      buf_start_ = pos_;
      buf_len_ = want;
    }
    return true;
  }

  // Appends the next n <= left() bytes to *out.
  bool Append(std::string* out, uint64_t n) {
    const size_t old = out->size();
    out->resize(old + static_cast<size_t>(n));
    return Read(&(*out)[old], n);
  }

 private:
  static constexpr uint64_t kWindow = 1 << 20;

  bool PreadAll(uint8_t* dst, uint64_t n, uint64_t at) {
    while (n > 0) {
      const size_t chunk = static_cast<size_t>(std::min<uint64_t>(n, 1 << 30));
      ssize_t r = pread(fd_, dst, chunk, static_cast<off_t>(at));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) {
        err_ = errno;
        return false;
      }
      if (r == 0) {
        err_ = kShrank;
        return false;
      }
      dst += r;
      at += static_cast<uint64_t>(r);
      n -= static_cast<uint64_t>(r);
    }
    return true;
  }

  const uint8_t* mem_ = nullptr;
  int fd_ = -1;
  uint64_t size_ = 0;
  uint64_t pos_ = 0;
  std::vector<uint8_t> buf_;
  uint64_t buf_start_ = 0;
  uint64_t buf_len_ = 0;
  int err_ = 0;
};

// Parses and validates GGUF structures from a ByteSource. `code` is
// kBadFormat for files (messages "<file>: <what> (byte N)") and
// kInvalidArgument for GgufKv::FromRaw (offsets count from the value).
class GgufParser {
 public:
  GgufParser(ByteSource* src, const std::string& file, StatusCode code)
      : src_(src), file_(file), code_(code) {}

  void set_context(std::string ctx) { ctx_ = std::move(ctx); }

  Status ParseHeader(GgufHeader* out);
  // Reads a value of `type` at the current position into kv's type, element
  // type, count, raw bytes and string offsets.
  Status ParseValue(GgufType type, GgufKv* kv);

 private:
  int64_t Pos() const { return static_cast<int64_t>(src_->pos()); }

  Status Fail(const std::string& what, int64_t offset) const {
    if (code_ == StatusCode::kBadFormat) {
      return BadFormat(file_, ctx_ + what, offset);
    }
    Status s(code_, ctx_ + what + " (byte " + std::to_string(offset) +
                        " of the value)");
    s.WithOffset(offset);
    return s;
  }

  Status ReadError() const {
    if (src_->error() == ByteSource::kShrank) {
      return Status(StatusCode::kIoError,
                    file_ + ": file shrank while it was being read");
    }
    return IoError("cannot read " + file_, src_->error());
  }

  Status Need(uint64_t n, const std::string& what) const {
    if (n <= src_->left()) return Status::Ok();
    return Fail("file ends inside " + what + ": needs " + std::to_string(n) +
                    " bytes, " + std::to_string(src_->left()) + " left",
                Pos());
  }

  Status ReadLe(uint64_t* v, size_t n, const std::string& what) {
    Status s = Need(n, what);
    if (!s.ok()) return s;
    char b[8];
    if (!src_->Read(b, n)) return ReadError();
    *v = LoadLe(b, n);
    return Status::Ok();
  }
  Status ReadU32(uint32_t* v, const std::string& what) {
    uint64_t w = 0;
    Status s = ReadLe(&w, 4, what);
    *v = static_cast<uint32_t>(w);
    return s;
  }
  Status ReadU64(uint64_t* v, const std::string& what) {
    return ReadLe(v, 8, what);
  }

  // u64 length + bytes, the length checked against `max` and the bytes left
  // before anything is allocated. Appends the length field too when
  // `with_length` (values keep it in raw).
  Status ReadString(const std::string& what, uint64_t max, bool with_length,
                    std::string* out) {
    const int64_t at = Pos();
    uint64_t n = 0;
    Status s = ReadU64(&n, "the length of " + what);
    if (!s.ok()) return s;
    if (n > max) {
      return Fail(what + " length " + std::to_string(n) +
                      " exceeds the limit of " + std::to_string(max) + " bytes",
                  at);
    }
    if (n > src_->left()) {
      return Fail(what + " length " + std::to_string(n) + " exceeds the " +
                      std::to_string(src_->left()) + " bytes left in the file",
                  at);
    }
    if (with_length) StoreLe(n, 8, out);
    if (!src_->Append(out, n)) return ReadError();
    return Status::Ok();
  }

  Status ParseKv(uint64_t i, std::unordered_set<std::string>* keys,
                 GgufHeader* out);
  Status ParseTensorInfo(uint64_t i, std::unordered_set<std::string>* names,
                         uint64_t* expected, GgufHeader* out);

  ByteSource* src_;
  const std::string& file_;
  StatusCode code_;
  std::string ctx_;
};

Status GgufParser::ParseValue(GgufType type, GgufKv* kv) {
  kv->type_ = type;
  kv->element_type_ = type;
  kv->count_ = 1;
  kv->raw_.clear();
  kv->string_offsets_.clear();
  std::string& raw = kv->raw_;
  if (type == GgufType::kString) {
    return ReadString("string", kGgufMaxStringBytes, true, &raw);
  }
  if (type != GgufType::kArray) {
    const size_t size = GgufScalarSize(type);
    const int64_t at = Pos();
    Status s = Need(size, std::string("the ") + GgufTypeName(type) + " value");
    if (!s.ok()) return s;
    if (!src_->Append(&raw, size)) return ReadError();
    if (type == GgufType::kBool && static_cast<unsigned char>(raw[0]) > 1) {
      return Fail("bool value is " +
                      std::to_string(static_cast<unsigned char>(raw[0])) +
                      ", not 0 or 1",
                  at);
    }
    return Status::Ok();
  }
  // Array: u32 element type, u64 count, elements.
  const int64_t type_at = Pos();
  uint32_t element_id = 0;
  Status s = ReadU32(&element_id, "the array's element type");
  if (!s.ok()) return s;
  GgufType element;
  if (!ParseGgufType(element_id, &element)) {
    return Fail("array of unknown value type " + std::to_string(element_id),
                type_at);
  }
  if (element == GgufType::kArray) {
    // ggml's reader refuses them too; llama.cpp never writes them.
    return Fail("nested arrays (arrays of arrays) are not supported", type_at);
  }
  const int64_t count_at = Pos();
  uint64_t count = 0;
  s = ReadU64(&count, "the array's element count");
  if (!s.ok()) return s;
  if (count > kGgufMaxArrayElements) {
    return Fail("array of " + std::to_string(count) +
                    " elements exceeds the limit of " +
                    std::to_string(kGgufMaxArrayElements),
                count_at);
  }
  // Strings take at least their 8-byte length each.
  const uint64_t min_size =
      element == GgufType::kString ? 8 : GgufScalarSize(element);
  if (count * min_size > src_->left()) {
    return Fail("array of " + std::to_string(count) + " " +
                    GgufTypeName(element) + " elements needs at least " +
                    std::to_string(count * min_size) + " bytes but only " +
                    std::to_string(src_->left()) + " are left in the file",
                count_at);
  }
  kv->type_ = GgufType::kArray;
  kv->element_type_ = element;
  kv->count_ = count;
  StoreLe(element_id, 4, &raw);
  StoreLe(count, 8, &raw);
  if (element == GgufType::kString) {
    for (uint64_t j = 0; j < count; ++j) {
      kv->string_offsets_.push_back(raw.size());
      s = ReadString("string element " + std::to_string(j), kGgufMaxStringBytes,
                     true, &raw);
      if (!s.ok()) return s;
    }
    return Status::Ok();
  }
  const int64_t first = Pos();
  if (!src_->Append(&raw, count * min_size)) return ReadError();
  if (element == GgufType::kBool) {
    for (uint64_t j = 0; j < count; ++j) {
      const unsigned char b = static_cast<unsigned char>(raw[12 + j]);
      if (b > 1) {
        return Fail("bool element " + std::to_string(j) + " is " +
                        std::to_string(b) + ", not 0 or 1",
                    first + static_cast<int64_t>(j));
      }
    }
  }
  return Status::Ok();
}

Status GgufParser::ParseKv(uint64_t i, std::unordered_set<std::string>* keys,
                           GgufHeader* out) {
  const int64_t kv_at = Pos();
  ctx_ = "key-value pair " + std::to_string(i) + ": ";
  GgufKv kv;
  Status s = ReadString("key", kGgufMaxStringBytes, false, &kv.key_);
  if (!s.ok()) return s;
  if (kv.key_.empty()) return Fail("empty key", kv_at);
  ctx_ = "key '" + Printable(kv.key_) + "': ";
  if (kv.key_.find('\0') != std::string::npos) {
    return Fail("key contains a NUL byte", kv_at);
  }
  if (!keys->insert(kv.key_).second) return Fail("duplicate key", kv_at);
  kv.offset_ = kv_at;
  const int64_t type_at = Pos();
  uint32_t type_id = 0;
  s = ReadU32(&type_id, "the value type");
  if (!s.ok()) return s;
  GgufType type;
  if (!ParseGgufType(type_id, &type)) {
    return Fail("unknown value type " + std::to_string(type_id), type_at);
  }
  s = ParseValue(type, &kv);
  if (!s.ok()) return s;
  if (kv.key_ == kGgufKeyAlignment) {
    if (kv.type() != GgufType::kU32) {
      return Fail(
          "must be a u32, not " + TypeDescription(kv.type(), kv.element_type()),
          type_at);
    }
    uint64_t a = 0;
    kv.GetUint(&a);
    if (a == 0 || (a & (a - 1)) != 0) {
      return Fail(
          "alignment " + std::to_string(a) + " is not a non-zero power of two",
          kv.value_offset());
    }
    out->alignment = static_cast<uint32_t>(a);
  }
  out->metadata.Append(std::move(kv));
  return Status::Ok();
}

Status GgufParser::ParseTensorInfo(uint64_t i,
                                   std::unordered_set<std::string>* names,
                                   uint64_t* expected, GgufHeader* out) {
  GgufTensorInfo t;
  t.index = static_cast<size_t>(i);
  t.info_offset = Pos();
  ctx_ = "tensor info " + std::to_string(i) + ": ";
  Status s = ReadString("tensor name", kGgufMaxStringBytes, false, &t.name);
  if (!s.ok()) return s;
  if (t.name.empty()) return Fail("empty tensor name", t.info_offset);
  ctx_ = "tensor '" + Printable(t.name) + "': ";
  if (t.name.size() > kGgufMaxTensorName) {
    return Fail("name of " + std::to_string(t.name.size()) +
                    " bytes is too long (at most " +
                    std::to_string(kGgufMaxTensorName) +
                    ": ggml's GGML_MAX_NAME is 64 including the NUL)",
                t.info_offset);
  }
  if (t.name.find('\0') != std::string::npos) {
    return Fail("name contains a NUL byte", t.info_offset);
  }
  if (!names->insert(t.name).second) {
    return Fail("duplicate tensor name", t.info_offset);
  }
  const int64_t dims_at = Pos();
  uint32_t n_dims = 0;
  s = ReadU32(&n_dims, "n_dims");
  if (!s.ok()) return s;
  if (n_dims < 1 || n_dims > kGgufMaxDims) {
    return Fail("n_dims is " + std::to_string(n_dims) + ", not in 1..4",
                dims_at);
  }
  uint64_t elements = 1;
  for (uint32_t j = 0; j < n_dims; ++j) {
    const int64_t dim_at = Pos();
    uint64_t d = 0;
    s = ReadU64(&d, "ne[" + std::to_string(j) + "]");
    if (!s.ok()) return s;
    if (d == 0) {
      return Fail(
          "ne[" + std::to_string(j) + "] is 0 (every dimension must be >= 1)",
          dim_at);
    }
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Fail("ne[" + std::to_string(j) + "] = " + std::to_string(d) +
                      " exceeds INT64_MAX",
                  dim_at);
    }
    t.ne.push_back(static_cast<int64_t>(d));
    if (__builtin_mul_overflow(elements, d, &elements) ||
        elements > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return Fail("element count of ne " + NeToString(t.ne) +
                      " overflows (more than INT64_MAX elements)",
                  dim_at);
    }
  }
  t.n_elements = static_cast<int64_t>(elements);
  const int64_t type_at = Pos();
  uint32_t type_id = 0;
  s = ReadU32(&type_id, "the ggml type");
  if (!s.ok()) return s;
  const GgmlTypeInfo* row = FindGgmlType(type_id);
  if (row == nullptr) {
    return Fail("unknown ggml type " + std::to_string(type_id), type_at);
  }
  t.type = row->type;
  if (static_cast<uint64_t>(t.ne[0]) % row->block_size != 0) {
    return Fail("row length ne[0] = " + std::to_string(t.ne[0]) +
                    " is not a multiple of the block size " +
                    std::to_string(row->block_size) + " of " + row->name,
                type_at);
  }
  if (__builtin_mul_overflow(elements / row->block_size,
                             uint64_t{row->type_size}, &t.byte_size)) {
    return Fail("byte size of ne " + NeToString(t.ne) + " of " + row->name +
                    " overflows 64 bits",
                type_at);
  }
  const int64_t offset_at = Pos();
  s = ReadU64(&t.offset, "the data offset");
  if (!s.ok()) return s;
  const uint64_t a = out->alignment;
  if (t.offset % a != 0) {
    return Fail("data offset " + std::to_string(t.offset) +
                    " is not a multiple of the alignment " + std::to_string(a),
                offset_at);
  }
  if (t.offset != *expected) {
    const GgufTensorInfo* prev = i > 0 ? &out->tensors.back() : nullptr;
    if (prev != nullptr && t.offset < prev->offset) {
      return Fail("data offset " + std::to_string(t.offset) +
                      " lies before tensor '" + Printable(prev->name) +
                      "' at " + std::to_string(prev->offset) +
                      ": tensors must be stored in the order of their infos",
                  offset_at);
    }
    if (t.offset < *expected) {
      return Fail("data offset " + std::to_string(t.offset) +
                      " overlaps tensor '" + Printable(prev->name) +
                      "' (bytes [" + std::to_string(prev->offset) + ", " +
                      std::to_string(prev->offset + prev->byte_size) +
                      ") of the data section)",
                  offset_at);
    }
    return Fail("data offset " + std::to_string(t.offset) +
                    " leaves a hole: bytes [" + std::to_string(*expected) +
                    ", " + std::to_string(t.offset) +
                    ") of the data section belong to no tensor (only padding "
                    "to the alignment may separate tensors)",
                offset_at);
  }
  // A first bound (the exact one needs the end of the header): both terms at
  // most the file size (< 2^63), so the sums below cannot overflow.
  const uint64_t size = src_->size();
  if (t.byte_size > size || t.offset > size - t.byte_size) {
    return Fail(std::to_string(t.byte_size) + " bytes (ne " + NeToString(t.ne) +
                    " of " + row->name + ") at data offset " +
                    std::to_string(t.offset) +
                    " extend past the end of the file (" +
                    std::to_string(size) + " bytes)",
                offset_at);
  }
  *expected = AlignUp(t.offset + t.byte_size, a);
  out->tensors.push_back(std::move(t));
  return Status::Ok();
}

Status GgufParser::ParseHeader(GgufHeader* out) {
  *out = GgufHeader();
  const uint64_t size = src_->size();
  ctx_.clear();
  if (size < 4) {
    return Fail("too short to be GGUF (" + std::to_string(size) + " bytes)", 0);
  }
  char magic[4];
  if (!src_->Read(magic, 4)) return ReadError();
  if (std::memcmp(magic, "GGUF", 4) != 0) {
    char hex[16];
    std::snprintf(hex, sizeof(hex), "%02x %02x %02x %02x",
                  static_cast<unsigned char>(magic[0]),
                  static_cast<unsigned char>(magic[1]),
                  static_cast<unsigned char>(magic[2]),
                  static_cast<unsigned char>(magic[3]));
    return Fail(std::string("not a GGUF file: magic bytes are ") + hex +
                    ", expected 47 47 55 46 (\"GGUF\")",
                0);
  }
  uint32_t version = 0;
  Status s = ReadU32(&version, "the GGUF header (version)");
  if (!s.ok()) return s;
  const uint32_t swapped = __builtin_bswap32(version);
  if (version != 2 && version != 3) {
    if (swapped >= 1 && swapped <= 3) {
      char hex[16];
      std::snprintf(hex, sizeof(hex), "0x%08x", version);
      return Fail(std::string("version field reads ") + hex +
                      ", which is version " + std::to_string(swapped) +
                      " byte-swapped: a big-endian GGUF file (only "
                      "little-endian files are supported)",
                  4);
    }
    return Fail("GGUF version " + std::to_string(version) +
                    " is not supported (only versions 2 and 3)",
                4);
  }
  out->version = version;
  uint64_t n_tensors = 0, n_kv = 0;
  s = ReadU64(&n_tensors, "the GGUF header (n_tensors)");
  if (s.ok()) s = ReadU64(&n_kv, "the GGUF header (n_kv)");
  if (!s.ok()) return s;
  // Bound both counts by what the rest of the file can hold before any
  // allocation depends on them: a pair takes at least 8 (key length) + 1
  // (key) + 4 (type) + 1 (value) bytes, a tensor info 8 + 1 (name) + 4
  // (n_dims) + 8 (ne[0]) + 4 (type) + 8 (offset). Nothing is reserved from
  // them either: vectors grow as entries actually parse.
  constexpr uint64_t kMinKv = 14, kMinInfo = 33;
  const uint64_t left = src_->left();
  if (n_tensors > left / kMinInfo) {
    return Fail("n_tensors " + std::to_string(n_tensors) +
                    " cannot fit: a tensor info takes at least 33 bytes and "
                    "only " +
                    std::to_string(left) + " bytes follow the header",
                8);
  }
  if (n_kv > left / kMinKv) {
    return Fail("n_kv " + std::to_string(n_kv) +
                    " cannot fit: a key-value pair takes at least 14 bytes "
                    "and only " +
                    std::to_string(left) + " bytes follow the header",
                16);
  }
  if (n_tensors * kMinInfo + n_kv * kMinKv > left) {
    return Fail("n_tensors " + std::to_string(n_tensors) + " and n_kv " +
                    std::to_string(n_kv) + " cannot both fit in the " +
                    std::to_string(left) + " bytes that follow the header",
                8);
  }
  std::unordered_set<std::string> keys;
  for (uint64_t i = 0; i < n_kv; ++i) {
    s = ParseKv(i, &keys, out);
    if (!s.ok()) return s;
  }
  std::unordered_set<std::string> names;
  uint64_t expected = 0;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    s = ParseTensorInfo(i, &names, &expected, out);
    if (!s.ok()) return s;
  }
  ctx_.clear();
  out->header_size = src_->pos();
  out->data_offset = AlignUp(out->header_size, out->alignment);
  for (GgufTensorInfo& t : out->tensors) {
    t.data_offset = out->data_offset + t.offset;
    if (t.data_offset > size || t.byte_size > size - t.data_offset) {
      // The offset field: after name, n_dims, ne and the type.
      const int64_t offset_at = t.info_offset + 8 +
                                static_cast<int64_t>(t.name.size()) + 4 +
                                8 * static_cast<int64_t>(t.ne.size()) + 4;
      return Fail("tensor '" + Printable(t.name) + "': bytes [" +
                      std::to_string(t.data_offset) + ", " +
                      std::to_string(t.data_offset + t.byte_size) +
                      ") of the file lie past its end (" +
                      std::to_string(size) + " bytes; data section at " +
                      std::to_string(out->data_offset) + ")",
                  offset_at);
    }
  }
  if (out->tensors.empty()) {
    if (size > out->data_offset) {
      return Fail(std::to_string(size - out->data_offset) +
                      " bytes after the header of a file without tensors "
                      "(its data section would start at byte " +
                      std::to_string(out->data_offset) + ")",
                  static_cast<int64_t>(out->data_offset));
    }
    return Status::Ok();
  }
  const GgufTensorInfo& last = out->tensors.back();
  const uint64_t end = last.data_offset + last.byte_size;
  const uint64_t padded = AlignUp(end, out->alignment);
  if (size > padded) {
    return Fail(
        std::to_string(size - padded) + " bytes after the last tensor '" +
            Printable(last.name) + "' (its data ends at byte " +
            std::to_string(end) + ", its padding to the alignment " +
            std::to_string(out->alignment) + " at " + std::to_string(padded) +
            "; the file has " + std::to_string(size) + " bytes)",
        static_cast<int64_t>(padded));
  }
  return Status::Ok();
}

}  // namespace internal

// ---------------------------------------------------------------------------
// GgufKv.

GgufKv GgufKv::Scalar(std::string key, GgufType type, const void* le,
                      size_t n) {
  GgufKv kv;
  kv.key_ = std::move(key);
  kv.type_ = kv.element_type_ = type;
  kv.count_ = 1;
  kv.raw_.assign(static_cast<const char*>(le), n);
  return kv;
}

namespace {

template <typename T>
std::string LeBytes(T v) {
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  std::string s;
  StoreLe(bits, sizeof(T), &s);
  return s;
}

}  // namespace

#define NIBBLE_GGUF_SCALAR(Name, CType, Type)                \
  GgufKv GgufKv::Name(std::string key, CType v) {            \
    const std::string b = LeBytes(v);                        \
    return Scalar(std::move(key), Type, b.data(), b.size()); \
  }
NIBBLE_GGUF_SCALAR(U8, uint8_t, GgufType::kU8)
NIBBLE_GGUF_SCALAR(I8, int8_t, GgufType::kI8)
NIBBLE_GGUF_SCALAR(U16, uint16_t, GgufType::kU16)
NIBBLE_GGUF_SCALAR(I16, int16_t, GgufType::kI16)
NIBBLE_GGUF_SCALAR(U32, uint32_t, GgufType::kU32)
NIBBLE_GGUF_SCALAR(I32, int32_t, GgufType::kI32)
NIBBLE_GGUF_SCALAR(F32, float, GgufType::kF32)
NIBBLE_GGUF_SCALAR(U64, uint64_t, GgufType::kU64)
NIBBLE_GGUF_SCALAR(I64, int64_t, GgufType::kI64)
NIBBLE_GGUF_SCALAR(F64, double, GgufType::kF64)
#undef NIBBLE_GGUF_SCALAR

GgufKv GgufKv::Bool(std::string key, bool v) {
  const char b = v ? 1 : 0;
  return Scalar(std::move(key), GgufType::kBool, &b, 1);
}

GgufKv GgufKv::String(std::string key, std::string_view v) {
  std::string raw;
  StoreLe(v.size(), 8, &raw);
  raw.append(v.data(), v.size());
  GgufKv kv;
  kv.key_ = std::move(key);
  kv.type_ = kv.element_type_ = GgufType::kString;
  kv.raw_ = std::move(raw);
  return kv;
}

GgufKv GgufKv::StringArray(std::string key, const std::vector<std::string>& v) {
  GgufKv kv;
  kv.key_ = std::move(key);
  kv.type_ = GgufType::kArray;
  kv.element_type_ = GgufType::kString;
  kv.count_ = v.size();
  StoreLe(static_cast<uint32_t>(GgufType::kString), 4, &kv.raw_);
  StoreLe(v.size(), 8, &kv.raw_);
  kv.string_offsets_.reserve(v.size());
  for (const std::string& s : v) {
    kv.string_offsets_.push_back(kv.raw_.size());
    StoreLe(s.size(), 8, &kv.raw_);
    kv.raw_ += s;
  }
  return kv;
}

Status GgufKv::Array(std::string key, GgufType element_type, const void* data,
                     uint64_t count, GgufKv* out) {
  const size_t size = GgufScalarSize(element_type);
  if (size == 0) {
    return Status(StatusCode::kInvalidArgument,
                  "key '" + Printable(key) + "': GgufKv::Array takes " +
                      "fixed-size elements, not " + GgufTypeName(element_type));
  }
  if (count > kGgufMaxArrayElements) {
    return Status(StatusCode::kInvalidArgument,
                  "key '" + Printable(key) + "': array of " +
                      std::to_string(count) + " elements exceeds the limit");
  }
  std::string raw;
  StoreLe(static_cast<uint32_t>(element_type), 4, &raw);
  StoreLe(count, 8, &raw);
  if (count > 0) raw.append(static_cast<const char*>(data), count * size);
  return FromRaw(std::move(key), GgufType::kArray, std::move(raw), out);
}

Status GgufKv::FromRaw(std::string key, GgufType type, std::string raw,
                       GgufKv* out) {
  if (static_cast<uint32_t>(type) >= kGgufTypeCount) {
    return Status(StatusCode::kInvalidArgument,
                  "key '" + Printable(key) + "': unknown value type " +
                      std::to_string(static_cast<uint32_t>(type)));
  }
  static const std::string kNoFile;
  internal::ByteSource src(reinterpret_cast<const uint8_t*>(raw.data()),
                           raw.size());
  internal::GgufParser parser(&src, kNoFile, StatusCode::kInvalidArgument);
  parser.set_context("key '" + Printable(key) + "': ");
  GgufKv kv;
  Status s = parser.ParseValue(type, &kv);
  if (!s.ok()) return s;
  if (src.left() != 0) {
    return Status(StatusCode::kInvalidArgument,
                  "key '" + Printable(key) +
                      "': " + std::to_string(src.left()) +
                      " bytes after the end of the value");
  }
  kv.key_ = std::move(key);
  *out = std::move(kv);
  return Status::Ok();
}

int64_t GgufKv::type_offset() const {
  return offset_ < 0 ? -1 : offset_ + 8 + static_cast<int64_t>(key_.size());
}

int64_t GgufKv::value_offset() const {
  return offset_ < 0 ? -1 : type_offset() + 4;
}

std::string_view GgufKv::ElementBytes(uint64_t i) const {
  const size_t size = GgufScalarSize(element_type_);
  if (size == 0 || i >= count_) return {};
  const size_t base = is_array() ? 12 : 0;
  return std::string_view(raw_).substr(base + static_cast<size_t>(i) * size,
                                       size);
}

bool GgufKv::GetUint(uint64_t* v, uint64_t i) const {
  int64_t sv = 0;
  switch (element_type_) {
    case GgufType::kU8:
    case GgufType::kU16:
    case GgufType::kU32:
    case GgufType::kU64: {
      std::string_view b = ElementBytes(i);
      if (b.empty()) return false;
      *v = LoadLe(b.data(), b.size());
      return true;
    }
    case GgufType::kI8:
    case GgufType::kI16:
    case GgufType::kI32:
    case GgufType::kI64:
      if (!GetInt(&sv, i) || sv < 0) return false;
      *v = static_cast<uint64_t>(sv);
      return true;
    default:
      return false;
  }
}

bool GgufKv::GetInt(int64_t* v, uint64_t i) const {
  std::string_view b = ElementBytes(i);
  if (b.empty()) return false;
  const uint64_t bits = LoadLe(b.data(), b.size());
  switch (element_type_) {
    case GgufType::kU8:
    case GgufType::kU16:
    case GgufType::kU32:
    case GgufType::kU64:
      if (bits > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return false;
      }
      *v = static_cast<int64_t>(bits);
      return true;
    case GgufType::kI8:
      *v = static_cast<int8_t>(bits);
      return true;
    case GgufType::kI16:
      *v = static_cast<int16_t>(bits);
      return true;
    case GgufType::kI32:
      *v = static_cast<int32_t>(bits);
      return true;
    case GgufType::kI64:
      *v = static_cast<int64_t>(bits);
      return true;
    default:
      return false;
  }
}

bool GgufKv::GetFloat(double* v, uint64_t i) const {
  std::string_view b = ElementBytes(i);
  if (b.empty()) return false;
  const uint64_t bits = LoadLe(b.data(), b.size());
  if (element_type_ == GgufType::kF32) {
    const uint32_t b32 = static_cast<uint32_t>(bits);
    float f;
    std::memcpy(&f, &b32, 4);
    *v = f;
    return true;
  }
  if (element_type_ == GgufType::kF64) {
    double d;
    std::memcpy(&d, &bits, 8);
    *v = d;
    return true;
  }
  return false;
}

bool GgufKv::GetBool(bool* v, uint64_t i) const {
  if (element_type_ != GgufType::kBool) return false;
  std::string_view b = ElementBytes(i);
  if (b.empty()) return false;
  *v = b[0] != 0;
  return true;
}

bool GgufKv::GetString(std::string_view* v, uint64_t i) const {
  if (element_type_ != GgufType::kString || i >= count_) return false;
  const size_t at = is_array() ? static_cast<size_t>(string_offsets_[i]) : 0;
  const uint64_t n = LoadLe(raw_.data() + at, 8);
  *v = std::string_view(raw_).substr(at + 8, static_cast<size_t>(n));
  return true;
}

// ---------------------------------------------------------------------------
// GgufMetadata.

const GgufKv* GgufMetadata::Find(std::string_view key) const {
  for (const GgufKv& kv : kvs_) {
    if (kv.key() == key) return &kv;
  }
  return nullptr;
}

void GgufMetadata::Set(GgufKv kv) {
  for (GgufKv& old : kvs_) {
    if (old.key() == kv.key()) {
      old = std::move(kv);
      return;
    }
  }
  kvs_.push_back(std::move(kv));
}

bool GgufMetadata::Remove(std::string_view key) {
  for (auto it = kvs_.begin(); it != kvs_.end(); ++it) {
    if (it->key() == key) {
      kvs_.erase(it);
      return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------
// GgufFile.

Status ParseGgufHeader(const uint8_t* data, size_t size,
                       const std::string& file_name, GgufHeader* out) {
  internal::ByteSource src(data, size);
  internal::GgufParser parser(&src, file_name, StatusCode::kBadFormat);
  try {
    Status s = parser.ParseHeader(out);
    if (!s.ok()) *out = GgufHeader();
    return s;
  } catch (const std::bad_alloc&) {
    *out = GgufHeader();
    return Status(StatusCode::kInternal,
                  file_name + ": out of memory while reading the header");
  }
}

GgufFile::~GgufFile() {
  if (map_ != nullptr) {
    munmap(const_cast<uint8_t*>(map_), static_cast<size_t>(file_size_));
  }
  if (fd_ >= 0) close(fd_);
}

Status GgufFile::Open(const std::string& path, std::unique_ptr<GgufFile>* out) {
  out->reset();
  std::unique_ptr<GgufFile> f(new (std::nothrow) GgufFile());
  if (!f) return Status(StatusCode::kInternal, "out of memory");
  f->path_ = path;
  f->fd_ = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) return internal::IoError("cannot open " + path, errno);
  struct stat st;
  if (fstat(f->fd_, &st) != 0) {
    return internal::IoError("cannot stat " + path, errno);
  }
  if (S_ISDIR(st.st_mode)) {
    return Status(StatusCode::kIoError, path + ": is a directory");
  }
  if (!S_ISREG(st.st_mode)) {
    return Status(StatusCode::kIoError, path + ": not a regular file");
  }
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (size > std::numeric_limits<size_t>::max()) {
    return Status(StatusCode::kUnsupported, path + ": file too large to map");
  }
  internal::ByteSource src(f->fd_, size);
  internal::GgufParser parser(&src, f->path_, StatusCode::kBadFormat);
  try {
    Status s = parser.ParseHeader(&f->header_);
    if (!s.ok()) return s;
    f->by_name_.reserve(f->header_.tensors.size());
    for (size_t i = 0; i < f->header_.tensors.size(); ++i) {
      f->by_name_.emplace(f->header_.tensors[i].name, i);
    }
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal,
                  path + ": out of memory while reading the header");
  }
  // size >= 24 here: the header parsed.
  void* map = mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED,
                   f->fd_, 0);
  if (map == MAP_FAILED) return internal::IoError("cannot map " + path, errno);
  f->map_ = static_cast<const uint8_t*>(map);
  f->file_size_ = size;
  *out = std::move(f);
  return Status::Ok();
}

const GgufTensorInfo* GgufFile::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

Status GgufFile::CheckSize() const {
  struct stat st;
  if (fstat(fd_, &st) != 0) {
    return internal::IoError("cannot stat " + path_, errno);
  }
  if (static_cast<uint64_t>(st.st_size) < file_size_) {
    return Status(StatusCode::kIoError,
                  path_ + ": file shrank from " + std::to_string(file_size_) +
                      " to " + std::to_string(st.st_size) +
                      " bytes while it was being read");
  }
  return Status::Ok();
}

Status GgufFile::TensorData(const GgufTensorInfo& tensor,
                            const uint8_t** data) const {
  *data = nullptr;
  const std::vector<GgufTensorInfo>& t = header_.tensors;
  if (tensor.index >= t.size() || t[tensor.index].name != tensor.name ||
      t[tensor.index].data_offset != tensor.data_offset ||
      t[tensor.index].byte_size != tensor.byte_size) {
    return Status(StatusCode::kInvalidArgument,
                  path_ + ": tensor '" + Printable(tensor.name) +
                      "' does not belong to this file");
  }
  Status s = CheckSize();
  if (!s.ok()) return s;
  *data = map_ + tensor.data_offset;
  return Status::Ok();
}

const uint8_t* GgufFile::data(const GgufTensorInfo& tensor) const {
  const uint8_t* p = nullptr;
  return TensorData(tensor, &p).ok() ? p : nullptr;
}

}  // namespace io
}  // namespace nibble
