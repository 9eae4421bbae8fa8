#include "nibble/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <new>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "io/io_common.h"

namespace nibble {
namespace io {

using internal::BadFormat;
using internal::Printable;

namespace {

struct DtypeRow {
  StDtype dtype;
  const char* name;
  int bits;
};

constexpr DtypeRow kDtypes[] = {
    {StDtype::kF64, "F64", 64},
    {StDtype::kF32, "F32", 32},
    {StDtype::kF16, "F16", 16},
    {StDtype::kBF16, "BF16", 16},
    {StDtype::kI64, "I64", 64},
    {StDtype::kI32, "I32", 32},
    {StDtype::kI16, "I16", 16},
    {StDtype::kI8, "I8", 8},
    {StDtype::kU64, "U64", 64},
    {StDtype::kU32, "U32", 32},
    {StDtype::kU16, "U16", 16},
    {StDtype::kU8, "U8", 8},
    {StDtype::kBool, "BOOL", 8},
    {StDtype::kC64, "C64", 64},
    {StDtype::kF8E4M3, "F8_E4M3", 8},
    {StDtype::kF8E5M2, "F8_E5M2", 8},
    {StDtype::kF8E8M0, "F8_E8M0", 8},
    {StDtype::kF8E4M3Fnuz, "F8_E4M3FNUZ", 8},
    {StDtype::kF8E5M2Fnuz, "F8_E5M2FNUZ", 8},
    {StDtype::kF4, "F4", 4},
    {StDtype::kF6E2M3, "F6_E2M3", 6},
    {StDtype::kF6E3M2, "F6_E3M2", 6},
};

const DtypeRow& Row(StDtype dtype) {
  return kDtypes[static_cast<size_t>(dtype)];
}

}  // namespace

const char* StDtypeName(StDtype dtype) { return Row(dtype).name; }
int StDtypeBits(StDtype dtype) { return Row(dtype).bits; }

bool ParseStDtype(std::string_view name, StDtype* dtype) {
  for (const DtypeRow& row : kDtypes) {
    if (name == row.name) {
      *dtype = row.dtype;
      return true;
    }
  }
  return false;
}

bool StDtypeToKernel(StDtype dtype, DType* out) {
  switch (dtype) {
    case StDtype::kF32:
      *out = DType::kF32;
      return true;
    case StDtype::kF16:
      *out = DType::kF16;
      return true;
    case StDtype::kBF16:
      *out = DType::kBF16;
      return true;
    default:
      return false;
  }
}

bool StTensorByteSize(StDtype dtype, const std::vector<int64_t>& shape,
                      int64_t* elements, uint64_t* bytes) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (__builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) return false;
  }
  if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return false;
  }
  uint64_t bits;
  if (__builtin_mul_overflow(n, static_cast<uint64_t>(StDtypeBits(dtype)),
                             &bits)) {
    return false;
  }
  if (bits % 8 != 0) return false;
  *elements = static_cast<int64_t>(n);
  *bytes = bits / 8;
  return true;
}

std::string ShapeToString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

namespace {

using Json = nlohmann::json;

// SAX handler that validates a safetensors header as it is parsed: it keeps
// no DOM, stops at the first problem (returning false ends the parse), and
// never goes deeper than tensor entry -> array, so hostile nesting is refused
// at once.
class HeaderSax {
 public:
  HeaderSax(const char* json, size_t size, uint64_t data_size,
            const std::string& file, SafetensorsHeader* out)
      : json_(json),
        size_(size),
        data_size_(data_size),
        file_(file),
        out_(out),
        cursor_(json) {}

  const char** cursor() { return &cursor_; }
  const Status& status() const { return status_; }
  bool done() const { return state_ == State::kDone; }

  // --- nlohmann SAX interface ---
  bool null() { return Scalar("null"); }
  bool boolean(bool) { return Scalar("a boolean"); }
  bool number_integer(Json::number_integer_t v) {
    (void)v;  // only negative numbers arrive here; others are unsigned
    return Number(false, 0, "a negative number");
  }
  bool number_unsigned(Json::number_unsigned_t v) {
    return Number(true, v, "");
  }
  bool number_float(Json::number_float_t, const std::string&) {
    return Number(false, 0, "a non-integer number");
  }
  bool string(std::string& s);
  bool binary(Json::binary_t&) { return Scalar("binary data"); }
  bool start_object(std::size_t);
  bool key(std::string& k);
  bool end_object();
  bool start_array(std::size_t);
  bool end_array();
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) {
    if (status_.ok()) {
      // position counts the bytes the lexer read, the offending one last.
      size_t pos = position > 0 ? position - 1 : 0;
      if (pos > size_) pos = size_;
      std::string what = ex.what();
      // "[json.exception.parse_error.101] parse error at line 1, column 2:
      // syntax error while parsing ..." -> keep the part after the id.
      size_t cut = what.find("] ");
      if (cut != std::string::npos) what = what.substr(cut + 2);
      status_ = BadFormat(file_, "header is not valid JSON: " + what,
                          8 + static_cast<int64_t>(pos));
    }
    return false;
  }

 private:
  enum class State {
    kTop,           // before the top-level value
    kTopObject,     // inside the top-level object, expecting a key
    kEntryValue,    // after a tensor key, expecting its object
    kEntry,         // inside a tensor entry, expecting a field name
    kDtype,         // expecting the dtype string
    kShapeValue,    // expecting the shape array
    kShape,         // inside the shape array
    kOffsetsValue,  // expecting the data_offsets array
    kOffsets,       // inside the data_offsets array
    kMetaValue,     // after "__metadata__", expecting an object
    kMeta,          // inside __metadata__, expecting a key
    kMetaString,    // expecting a metadata value
    kDone,
  };

  int64_t CursorOffset() const {
    return 8 + static_cast<int64_t>(cursor_ - json_);
  }

  bool Fail(const std::string& what, int64_t offset) {
    if (status_.ok()) status_ = BadFormat(file_, what, offset);
    return false;
  }
  bool FailEntry(const std::string& what) {
    return Fail("tensor '" + Printable(entry_.name) + "': " + what,
                entry_.header_offset);
  }

  bool Scalar(const char* type);
  bool Number(bool is_unsigned, uint64_t v, const char* type);
  bool FinishEntry();
  bool FinishTop();

  const char* json_;
  size_t size_;
  uint64_t data_size_;
  const std::string& file_;
  SafetensorsHeader* out_;
  const char* cursor_;
  Status status_;
  State state_ = State::kTop;

  std::unordered_set<std::string> names_;
  TensorInfo entry_;
  bool has_dtype_ = false, has_shape_ = false, has_offsets_ = false;
  size_t n_offsets_ = 0;
  uint64_t offsets_[2] = {0, 0};
  std::unordered_set<std::string> meta_keys_;
  std::string meta_key_;
  int64_t meta_key_offset_ = 0;
  int64_t meta_offset_ = 0;
};

bool HeaderSax::Scalar(const char* type) {
  switch (state_) {
    case State::kTop:
      return Fail(
          std::string("header is not a JSON object (found ") + type + ")", 8);
    case State::kEntryValue:
      return FailEntry(std::string("entry must be a JSON object, found ") +
                       type);
    case State::kDtype:
      return FailEntry(std::string("field 'dtype' must be a string, found ") +
                       type);
    case State::kShapeValue:
      return FailEntry(
          std::string("field 'shape' must be an array of integers, found ") +
          type);
    case State::kShape:
      return FailEntry(std::string("field 'shape' holds ") + type +
                       "; dimensions must be non-negative integers");
    case State::kOffsetsValue:
      return FailEntry(
          std::string(
              "field 'data_offsets' must be an array of two integers, found ") +
          type);
    case State::kOffsets:
      return FailEntry(std::string("field 'data_offsets' holds ") + type +
                       "; offsets must be non-negative integers");
    case State::kMetaValue:
      return Fail(std::string("__metadata__ must be an object of strings, "
                              "found ") +
                      type,
                  meta_offset_);
    case State::kMetaString:
      return Fail("__metadata__ key '" + Printable(meta_key_) +
                      "': value must be a string, found " + type,
                  meta_key_offset_);
    default:
      return Fail(std::string("unexpected ") + type + " in header",
                  CursorOffset());
  }
}

bool HeaderSax::Number(bool is_unsigned, uint64_t v, const char* type) {
  if (state_ == State::kShape) {
    if (!is_unsigned) {
      return FailEntry(std::string("field 'shape' holds ") + type +
                       "; dimensions must be non-negative integers");
    }
    if (entry_.shape.size() == kMaxSafetensorsDims) {
      return FailEntry("field 'shape' has more than " +
                       std::to_string(kMaxSafetensorsDims) + " dimensions");
    }
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return FailEntry("field 'shape' holds dimension " + std::to_string(v) +
                       ", larger than 2^63-1");
    }
    entry_.shape.push_back(static_cast<int64_t>(v));
    return true;
  }
  if (state_ == State::kOffsets) {
    if (!is_unsigned) {
      return FailEntry(std::string("field 'data_offsets' holds ") + type +
                       "; offsets must be non-negative integers");
    }
    if (n_offsets_ == 2) {
      return FailEntry("field 'data_offsets' must hold exactly two integers");
    }
    offsets_[n_offsets_++] = v;
    return true;
  }
  return Scalar(is_unsigned ? "a number" : type);
}

bool HeaderSax::string(std::string& s) {
  switch (state_) {
    case State::kDtype: {
      if (!ParseStDtype(s, &entry_.dtype)) {
        return FailEntry("unknown dtype '" + Printable(s) + "'");
      }
      state_ = State::kEntry;
      return true;
    }
    case State::kMetaString:
      out_->metadata.emplace_back(std::move(meta_key_), std::move(s));
      state_ = State::kMeta;
      return true;
    default:
      return Scalar("a string");
  }
}

bool HeaderSax::start_object(std::size_t) {
  switch (state_) {
    case State::kTop:
      state_ = State::kTopObject;
      return true;
    case State::kEntryValue:
      state_ = State::kEntry;
      return true;
    case State::kMetaValue:
      state_ = State::kMeta;
      out_->has_metadata = true;
      return true;
    default:
      return Scalar("an object");
  }
}

bool HeaderSax::start_array(std::size_t) {
  switch (state_) {
    case State::kShapeValue:
      state_ = State::kShape;
      return true;
    case State::kOffsetsValue:
      state_ = State::kOffsets;
      n_offsets_ = 0;
      return true;
    default:
      return Scalar("an array");
  }
}

bool HeaderSax::end_array() {
  if (state_ == State::kShape) {
    state_ = State::kEntry;
    return true;
  }
  if (state_ == State::kOffsets) {
    if (n_offsets_ != 2) {
      return FailEntry(
          "field 'data_offsets' must hold exactly two integers, "
          "found " +
          std::to_string(n_offsets_));
    }
    state_ = State::kEntry;
    return true;
  }
  return Fail("unexpected end of array", CursorOffset());
}

bool HeaderSax::key(std::string& k) {
  const char* start = internal::FindStringStart(json_, cursor_);
  int64_t key_offset = 8 + static_cast<int64_t>(start - json_);
  switch (state_) {
    case State::kTopObject: {
      if (k == "__metadata__") {
        if (!names_.insert(k).second) {
          return Fail("duplicate key '__metadata__'", key_offset);
        }
        meta_offset_ = key_offset;
        state_ = State::kMetaValue;
        return true;
      }
      if (!names_.insert(k).second) {
        return Fail("duplicate tensor name '" + Printable(k) + "'", key_offset);
      }
      entry_ = TensorInfo();
      entry_.name = std::move(k);
      entry_.header_offset = key_offset;
      entry_.index = out_->tensors.size();
      if (entry_.name.find('\0') != std::string::npos) {
        return FailEntry("tensor name contains a NUL character");
      }
      has_dtype_ = has_shape_ = has_offsets_ = false;
      state_ = State::kEntryValue;
      return true;
    }
    case State::kEntry: {
      bool* seen = nullptr;
      State next = State::kEntry;
      if (k == "dtype") {
        seen = &has_dtype_;
        next = State::kDtype;
      } else if (k == "shape") {
        seen = &has_shape_;
        next = State::kShapeValue;
      } else if (k == "data_offsets") {
        seen = &has_offsets_;
        next = State::kOffsetsValue;
      } else {
        return FailEntry("unexpected field '" + Printable(k) +
                         "' (allowed: dtype, shape, data_offsets)");
      }
      if (*seen) return FailEntry("field '" + k + "' given twice");
      *seen = true;
      state_ = next;
      return true;
    }
    case State::kMeta:
      if (!meta_keys_.insert(k).second) {
        return Fail("duplicate __metadata__ key '" + Printable(k) + "'",
                    key_offset);
      }
      meta_key_ = std::move(k);
      meta_key_offset_ = key_offset;
      state_ = State::kMetaString;
      return true;
    default:
      return Fail("unexpected key", key_offset);
  }
}

bool HeaderSax::end_object() {
  switch (state_) {
    case State::kEntry:
      return FinishEntry();
    case State::kMeta:
      state_ = State::kTopObject;
      return true;
    case State::kTopObject:
      return FinishTop();
    default:
      return Fail("unexpected end of object", CursorOffset());
  }
}

bool HeaderSax::FinishEntry() {
  if (!has_dtype_) return FailEntry("missing field 'dtype'");
  if (!has_shape_) return FailEntry("missing field 'shape'");
  if (!has_offsets_) return FailEntry("missing field 'data_offsets'");
  const uint64_t begin = offsets_[0], end = offsets_[1];
  if (begin > end) {
    return FailEntry("data_offsets [" + std::to_string(begin) + ", " +
                     std::to_string(end) + "] are reversed (begin > end)");
  }
  uint64_t bytes = 0;
  if (!StTensorByteSize(entry_.dtype, entry_.shape, &entry_.num_elements,
                        &bytes)) {
    // Sub-byte dtypes can also fail by not filling whole bytes.
    int64_t elements = 0;
    uint64_t ignored = 0;
    if (StTensorByteSize(StDtype::kU8, entry_.shape, &elements, &ignored)) {
      return FailEntry("shape " + ShapeToString(entry_.shape) + " of " +
                       StDtypeName(entry_.dtype) + " holds " +
                       std::to_string(elements) + " elements of " +
                       std::to_string(StDtypeBits(entry_.dtype)) +
                       " bits: not a whole number of bytes");
    }
    return FailEntry("shape " + ShapeToString(entry_.shape) + " of " +
                     StDtypeName(entry_.dtype) +
                     ": byte size overflows 64 bits");
  }
  const uint64_t held = end - begin;
  if (held != bytes) {
    return FailEntry("data_offsets [" + std::to_string(begin) + ", " +
                     std::to_string(end) + "] hold " + std::to_string(held) +
                     " bytes but shape " + ShapeToString(entry_.shape) +
                     " of " + StDtypeName(entry_.dtype) + " needs " +
                     std::to_string(bytes));
  }
  if (end > data_size_) {
    return FailEntry("data_offsets [" + std::to_string(begin) + ", " +
                     std::to_string(end) +
                     "] end past the end of the file (data section holds " +
                     std::to_string(data_size_) + " bytes)");
  }
  entry_.begin = begin;
  entry_.end = end;
  out_->tensors.push_back(std::move(entry_));
  entry_ = TensorInfo();
  state_ = State::kTopObject;
  return true;
}

bool HeaderSax::FinishTop() {
  state_ = State::kDone;
  std::vector<TensorInfo>& t = out_->tensors;
  std::vector<size_t>& order = out_->data_order;
  order.resize(t.size());
  for (size_t i = 0; i < t.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&t](size_t a, size_t b) {
    if (t[a].begin != t[b].begin) return t[a].begin < t[b].begin;
    if (t[a].end != t[b].end) return t[a].end < t[b].end;
    return a < b;
  });
  uint64_t expected = 0;
  const TensorInfo* prev = nullptr;
  for (size_t i : order) {
    const TensorInfo& cur = t[i];
    if (cur.begin < expected) {
      return Fail("tensor '" + Printable(cur.name) + "': data_offsets [" +
                      std::to_string(cur.begin) + ", " +
                      std::to_string(cur.end) + "] overlap tensor '" +
                      Printable(prev->name) + "' [" +
                      std::to_string(prev->begin) + ", " +
                      std::to_string(prev->end) + "]",
                  cur.header_offset);
    }
    if (cur.begin > expected) {
      return Fail("tensor '" + Printable(cur.name) + "': data_offsets [" +
                      std::to_string(cur.begin) + ", " +
                      std::to_string(cur.end) + "] leave a hole: bytes [" +
                      std::to_string(expected) + ", " +
                      std::to_string(cur.begin) +
                      ") of the data section belong to no tensor",
                  cur.header_offset);
    }
    expected = cur.end;
    prev = &cur;
  }
  if (expected != data_size_) {
    std::string what = std::to_string(data_size_ - expected) +
                       " bytes after the last tensor: data section holds " +
                       std::to_string(data_size_) + " bytes, tensors end at " +
                       std::to_string(expected);
    return Fail(
        what, 8 + static_cast<int64_t>(size_) + static_cast<int64_t>(expected));
  }
  return true;
}

}  // namespace

Status ParseSafetensorsHeader(const char* json, size_t size, uint64_t file_size,
                              const std::string& file_name,
                              SafetensorsHeader* out) {
  *out = SafetensorsHeader();
  if (file_size < 8 + static_cast<uint64_t>(size)) {
    return Status(StatusCode::kInvalidArgument,
                  file_name + ": header larger than the file");
  }
  if (size >= 3 && static_cast<unsigned char>(json[0]) == 0xef &&
      static_cast<unsigned char>(json[1]) == 0xbb &&
      static_cast<unsigned char>(json[2]) == 0xbf) {
    return BadFormat(file_name, "header starts with a UTF-8 byte order mark",
                     8);
  }
  // nlohmann's lexer takes a NUL byte for the end of the input, so text after
  // one would be ignored; JSON never holds a raw NUL, so refuse it here.
  if (const void* nul = std::memchr(json, '\0', size)) {
    return BadFormat(file_name, "header contains a NUL byte",
                     8 + (static_cast<const char*>(nul) - json));
  }
  HeaderSax sax(json, size, file_size - 8 - size, file_name, out);
  try {
    internal::TrackingIterator first(json, sax.cursor());
    internal::TrackingIterator last(json + size, sax.cursor());
    bool ok = Json::sax_parse(first, last, &sax, Json::input_format_t::json,
                              /*strict=*/true, /*ignore_comments=*/false);
    if (!ok || !sax.done()) {
      Status s = sax.status();
      if (s.ok()) s = BadFormat(file_name, "header is not valid JSON", 8);
      *out = SafetensorsHeader();
      return s;
    }
  } catch (const std::bad_alloc&) {
    *out = SafetensorsHeader();
    return Status(StatusCode::kInternal,
                  file_name + ": out of memory while parsing the header");
  } catch (const std::exception& e) {
    *out = SafetensorsHeader();
    return BadFormat(file_name,
                     std::string("header is not valid JSON: ") + e.what(), 8);
  }
  return Status::Ok();
}

// ---------------------------------------------------------------------------

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) {
    munmap(const_cast<uint8_t*>(map_), static_cast<size_t>(file_size_));
  }
  if (fd_ >= 0) close(fd_);
}

Status SafetensorsFile::Open(const std::string& path,
                             std::unique_ptr<SafetensorsFile>* out) {
  out->reset();
  std::unique_ptr<SafetensorsFile> f(new (std::nothrow) SafetensorsFile());
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
  if (size < 8) {
    return BadFormat(path,
                     "too short to be safetensors (" + std::to_string(size) +
                         " bytes; the 8-byte header length is missing)",
                     0);
  }
  uint8_t len_bytes[8];
  ssize_t got = pread(f->fd_, len_bytes, 8, 0);
  if (got != 8) {
    return internal::IoError("cannot read " + path, got < 0 ? errno : EIO);
  }
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | len_bytes[i];
  if (n >= kMaxSafetensorsHeader) {
    return BadFormat(path,
                     "header length " + std::to_string(n) +
                         " is not below the limit of " +
                         std::to_string(kMaxSafetensorsHeader) + " bytes",
                     0);
  }
  if (n > size - 8) {
    return BadFormat(path,
                     "header length " + std::to_string(n) +
                         " exceeds the file (" + std::to_string(size) +
                         " bytes, so at most " + std::to_string(size - 8) + ")",
                     0);
  }
  if (size > std::numeric_limits<size_t>::max()) {
    return Status(StatusCode::kUnsupported, path + ": file too large to map");
  }
  void* map = mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED,
                   f->fd_, 0);
  if (map == MAP_FAILED) return internal::IoError("cannot map " + path, errno);
  f->map_ = static_cast<const uint8_t*>(map);
  f->file_size_ = size;
  f->header_size_ = n;
  // The header is read with pread, not from the mapping: a file truncated
  // during validation then gives a read error instead of SIGBUS.
  std::string header;
  try {
    header.resize(static_cast<size_t>(n));
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal, path + ": out of memory");
  }
  size_t done = 0;
  while (done < n) {
    ssize_t r = pread(f->fd_, &header[done], static_cast<size_t>(n) - done,
                      static_cast<off_t>(8 + done));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      return internal::IoError("cannot read the header of " + path,
                               r < 0 ? errno : EIO);
    }
    done += static_cast<size_t>(r);
  }
  Status s = ParseSafetensorsHeader(header.data(), header.size(), size, path,
                                    &f->header_);
  if (!s.ok()) return s;
  try {
    f->by_name_.reserve(f->header_.tensors.size());
    for (size_t i = 0; i < f->header_.tensors.size(); ++i) {
      f->by_name_.emplace(f->header_.tensors[i].name, i);
    }
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal, path + ": out of memory");
  }
  *out = std::move(f);
  return Status::Ok();
}

const TensorInfo* SafetensorsFile::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &header_.tensors[it->second];
}

Status SafetensorsFile::CheckSize() const {
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

Status SafetensorsFile::TensorData(const TensorInfo& tensor,
                                   const uint8_t** data) const {
  *data = nullptr;
  const std::vector<TensorInfo>& t = header_.tensors;
  if (tensor.index >= t.size() || t[tensor.index].name != tensor.name ||
      t[tensor.index].begin != tensor.begin ||
      t[tensor.index].end != tensor.end) {
    return Status(StatusCode::kInvalidArgument,
                  path_ + ": tensor '" + Printable(tensor.name) +
                      "' does not belong to this file");
  }
  Status s = CheckSize();
  if (!s.ok()) return s;
  *data = map_ + data_offset() + tensor.begin;
  return Status::Ok();
}

const uint8_t* SafetensorsFile::data(const TensorInfo& tensor) const {
  const uint8_t* p = nullptr;
  return TensorData(tensor, &p).ok() ? p : nullptr;
}

}  // namespace io
}  // namespace nibble
