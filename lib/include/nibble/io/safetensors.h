// Strict, memory-mapped reader of one safetensors file.
//
// Layout (little-endian): u64 N, N bytes of UTF-8 JSON (an object), then the
// data section. Every rule of docs/formats.md is checked by Open() before a
// single tensor byte is handed out; see SafetensorsFile::Open for the list.
// Every rejection is a Status with code kBadFormat whose message names the
// file, the tensor or key, and the byte offset (also in Status::offset()).
// Offsets are counted from the first byte of the file.
//
// Nothing here throws.
#ifndef NIBBLE_IO_SAFETENSORS_H_
#define NIBBLE_IO_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "nibble/status.h"
#include "nibble/types.h"

namespace nibble {
namespace io {

// Element types of the safetensors format (names as written in the header).
enum class StDtype : uint8_t {
  kF64,
  kF32,
  kF16,
  kBF16,
  kI64,
  kI32,
  kI16,
  kI8,
  kU64,
  kU32,
  kU16,
  kU8,
  kBool,
  kC64,
  kF8E4M3,
  kF8E5M2,
  kF8E8M0,
  kF8E4M3Fnuz,
  kF8E5M2Fnuz,
  kF4,
  kF6E2M3,
  kF6E3M2,
};

// "F16", "F8_E4M3", "F6_E2M3", ...
const char* StDtypeName(StDtype dtype);
// Exact, case-sensitive match of the header names. False when unknown.
bool ParseStDtype(std::string_view name, StDtype* dtype);
// Bits per element: 64, 32, 16, 8, 6 (F6_*), 4 (F4). C64 is 64, BOOL 8.
int StDtypeBits(StDtype dtype);
// The kernels' DType for F32, F16 and BF16 (the dtypes nibble quantizes);
// false for every other dtype (they are copied through).
bool StDtypeToKernel(StDtype dtype, DType* out);

// Byte size of a tensor: product(shape) x bits / 8, with every product checked
// for overflow. An empty shape is a scalar (one element). Fails (false) on a
// negative dimension, overflow of int64, or a bit count that is not a whole
// number of bytes (sub-byte dtypes). Sets *elements and *bytes on success.
bool StTensorByteSize(StDtype dtype, const std::vector<int64_t>& shape,
                      int64_t* elements, uint64_t* bytes);

// "[8, 8]"
std::string ShapeToString(const std::vector<int64_t>& shape);

// The largest header the reader accepts (the reference reader's limit).
constexpr uint64_t kMaxSafetensorsHeader = 100000000;
// The most dimensions a tensor may have.
constexpr size_t kMaxSafetensorsDims = 8;

// One tensor of a validated header.
struct TensorInfo {
  std::string name;
  StDtype dtype = StDtype::kF32;
  std::vector<int64_t> shape;  // every entry >= 0; empty = scalar
  int64_t num_elements = 0;
  // Byte range relative to the start of the data section: [begin, end).
  uint64_t begin = 0;
  uint64_t end = 0;
  // File offset of the opening quote of the tensor's key in the header.
  int64_t header_offset = 0;
  // Position in the header (0-based), i.e. the index in tensors().
  size_t index = 0;

  uint64_t byte_size() const { return end - begin; }
};

// Ordered `__metadata__` (header order); keys are unique.
using Metadata = std::vector<std::pair<std::string, std::string>>;

// A validated header: what ParseSafetensorsHeader produces.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // header order
  std::vector<size_t> data_order;   // indices into tensors, by ascending begin
  Metadata metadata;
  bool has_metadata = false;  // `__metadata__` was present (maybe empty)
};

// Validates a header held in memory: `json` is the N header bytes (which start
// at file offset 8), `file_size` the size of the whole file; `file_name` is
// used in messages. Exposed for the fuzz targets and for tests; Open() uses it.
// The rules, in the order they are checked:
//  - UTF-8 JSON (no BOM, no comments; whitespace and trailing spaces allowed);
//    a syntax error reports the byte where the parser stopped;
//  - the value is an object; keys unique at every level (duplicate tensor
//    names, fields or metadata keys are rejected);
//  - `__metadata__`, if present, is an object whose values are all strings;
//  - every other key is a tensor name (any string without a NUL byte)
//    whose value is an object with exactly `dtype` (a known name), `shape`
//    (at most 8 non-negative integers) and `data_offsets` (two non-negative
//    integers, begin <= end);
//  - end - begin equals product(shape) x dtype size (overflow-checked);
//  - end lies inside the data section (file_size - 8 - N);
//  - sorted by begin (then end), the ranges start at 0, are contiguous (no
//    overlap, no hole), and the last end equals the data section's length.
// Alignment is not required (the reference reader does not require it).
Status ParseSafetensorsHeader(const char* json, size_t size, uint64_t file_size,
                              const std::string& file_name,
                              SafetensorsHeader* out);

// A safetensors file opened read-only and mapped into memory (PROT_READ,
// MAP_SHARED; the file is never opened for writing). Not copyable; movable
// only through the unique_ptr Open() returns. All const members are safe to
// call from several threads at once.
//
// Truncation while mapped (bad-inputs #18): the mapping covers the size seen
// at Open(). TensorData() and data() re-check the size with fstat() before
// handing out a pointer and refuse (kIoError / nullptr) when the file has
// become shorter than at Open(). A truncation between that check and the
// caller's reads still raises SIGBUS; handling SIGBUS is left to the tool
// (issue 6). Changes to the bytes without a size change are not detected.
class SafetensorsFile {
 public:
  // Opens, maps and validates `path`. Checks, before reading the header:
  // file of at least 8 bytes ("too short to be safetensors"), N below
  // kMaxSafetensorsHeader and N <= file size - 8 (so nothing is allocated from
  // an unchecked length); then everything ParseSafetensorsHeader checks.
  // Errors: kIoError (open/stat/read/mmap failed), kBadFormat (contents).
  // `path` as given is the file name used in messages.
  static Status Open(const std::string& path,
                     std::unique_ptr<SafetensorsFile>* out);

  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  uint64_t header_size() const { return header_size_; }  // N
  uint64_t data_offset() const { return 8 + header_size_; }
  uint64_t data_size() const { return file_size_ - 8 - header_size_; }

  // Tensors in header order.
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  // Indices into tensors() in data order (ascending begin): the order in
  // which a streaming reader touches the file sequentially.
  const std::vector<size_t>& data_order() const { return header_.data_order; }
  const Metadata& metadata() const { return header_.metadata; }
  bool has_metadata() const { return header_.has_metadata; }

  // nullptr when no tensor has this name.
  const TensorInfo* Find(std::string_view name) const;

  // `tensor` is one of tensors() (or a copy of one). Sets *data to its first
  // byte (byte_size() bytes, valid while this object lives; not aligned in
  // general: the format does not require it). kInvalidArgument when `tensor` is
  // not one of tensors(); kIoError when the file is now shorter than at Open()
  // (it was truncated while mapped).
  Status TensorData(const TensorInfo& tensor, const uint8_t** data) const;
  // Same check; nullptr on failure (use TensorData for the message). A
  // zero-byte tensor gets a valid, non-dereferenceable pointer.
  const uint8_t* data(const TensorInfo& tensor) const;

  // fstat() the file again: kIoError when it shrank since Open().
  Status CheckSize() const;

 private:
  SafetensorsFile() = default;

  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  uint64_t file_size_ = 0;
  uint64_t header_size_ = 0;
  SafetensorsHeader header_;
  std::unordered_map<std::string_view, size_t> by_name_;
};

}  // namespace io
}  // namespace nibble

#endif  // NIBBLE_IO_SAFETENSORS_H_
