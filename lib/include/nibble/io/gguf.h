// Strict, memory-mapped reader of one GGUF file (versions 2 and 3,
// little-endian), plus the ggml type table and the metadata containers that
// the GGUF writer (nibble/io/gguf_writer.h) shares.
//
// Layout (docs/formats.md):
//   "GGUF" u32 version u64 n_tensors u64 n_kv
//   n_kv x { string key, u32 value_type, value }
//   n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type,
//                 u64 offset }
//   zero padding to general.alignment (default 32), then the data section.
//   string = u64 length + bytes (no terminator).
//
// Every rule is checked by GgufFile::Open() (see ParseGgufHeader for the list)
// before a single tensor byte is handed out. Every rejection is a Status with
// code kBadFormat whose message names the file, the key or tensor, and the
// byte offset (also in Status::offset()), counted from the first byte of the
// file. Nothing here throws.
#ifndef NIBBLE_IO_GGUF_H_
#define NIBBLE_IO_GGUF_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "nibble/status.h"
#include "nibble/types.h"

namespace nibble {
namespace io {

// ---------------------------------------------------------------------------
// ggml tensor types.

// Every ggml type a GGUF file may hold today (ggml.h, enum ggml_type). Ids 4,
// 5 (Q4_2, Q4_3), 31-33 (Q4_0_4_4 ...) and 36-38 (IQ4_NL_4_4 ...) were removed
// from ggml and are rejected as unknown, as ggml does.
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ8_1 = 9,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
  kNVFP4 = 40,
  kQ1_0 = 41,
};

// One row of the type table: `block_size` elements are stored in
// `type_size` bytes (1 and the element size for the plain types).
struct GgmlTypeInfo {
  GgmlType type;
  const char* name;  // gguf-py's spelling: "F32", "Q8_0", "IQ2_XXS", ...
  uint32_t block_size;
  uint32_t type_size;
};

// The row for a type id read from a file; nullptr when the id is unknown.
const GgmlTypeInfo* FindGgmlType(uint32_t id);
// The row for a known type (every enumerator has one).
const GgmlTypeInfo& GgmlTypeTraits(GgmlType type);
const char* GgmlTypeName(GgmlType type);
// Every known type, in id order.
const std::vector<GgmlType>& AllGgmlTypes();

// F32, F16 and BF16 map to the kernels' DType (the types nibble quantizes);
// false for every other type (they are copied through).
bool GgmlTypeToKernel(GgmlType type, DType* out);
GgmlType KernelToGgmlType(DType dtype);

// Element count and byte size of a tensor with dimensions `ne` (ggml order,
// ne[0] = row length). False when `ne` is empty or has more than
// kGgufMaxDims entries, an entry < 1, the element count exceeds INT64_MAX,
// ne[0] is not a multiple of the block size, or the byte size overflows 64
// bits.
bool GgmlTensorByteSize(GgmlType type, const std::vector<int64_t>& ne,
                        int64_t* elements, uint64_t* bytes);

// ---------------------------------------------------------------------------
// Limits (ggml's gguf.cpp where it has one).

constexpr uint32_t kGgufDefaultAlignment = 32;
// GGML_MAX_NAME is 64 including the terminating NUL.
constexpr size_t kGgufMaxTensorName = 63;
constexpr size_t kGgufMaxDims = 4;
// GGUF_MAX_STRING_LENGTH and GGUF_MAX_ARRAY_ELEMENTS.
constexpr uint64_t kGgufMaxStringBytes = uint64_t{1} << 30;
constexpr uint64_t kGgufMaxArrayElements = uint64_t{1} << 30;

// Keys the reader or `convert` interprets.
constexpr const char* kGgufKeyAlignment = "general.alignment";
constexpr const char* kGgufKeyFileType = "general.file_type";
constexpr const char* kGgufKeyQuantizationVersion =
    "general.quantization_version";

// ---------------------------------------------------------------------------
// Metadata.

namespace internal {
class GgufParser;  // lib/src/io/gguf.cc
}  // namespace internal

// Metadata value types (the u32 written before each value).
enum class GgufType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};

// "u8", "i8", ..., "f32", "bool", "string", "array", "u64", "i64", "f64".
const char* GgufTypeName(GgufType type);
// False for ids above 12.
bool ParseGgufType(uint32_t id, GgufType* type);
// Bytes of one value of a fixed-size type; 0 for kString and kArray.
size_t GgufScalarSize(GgufType type);

// One key-value pair, kept as the exact bytes that follow its type field in
// the file (`raw()`), so that a writer reproduces it byte for byte:
//   scalar:  the value (bool: one byte, 0 or 1);
//   string:  u64 length + bytes;
//   array:   u32 element type, u64 count, then the elements (strings as
//            above, one after the other).
// Copyable and movable; immutable once built (GgufMetadata::Set replaces a
// whole pair).
class GgufKv {
 public:
  GgufKv() = default;

  // Builders. The key is checked when the pair is written (non-empty, no
  // NUL, at most kGgufMaxStringBytes).
  static GgufKv U8(std::string key, uint8_t v);
  static GgufKv I8(std::string key, int8_t v);
  static GgufKv U16(std::string key, uint16_t v);
  static GgufKv I16(std::string key, int16_t v);
  static GgufKv U32(std::string key, uint32_t v);
  static GgufKv I32(std::string key, int32_t v);
  static GgufKv F32(std::string key, float v);
  static GgufKv Bool(std::string key, bool v);
  static GgufKv String(std::string key, std::string_view v);
  static GgufKv U64(std::string key, uint64_t v);
  static GgufKv I64(std::string key, int64_t v);
  static GgufKv F64(std::string key, double v);
  static GgufKv StringArray(std::string key, const std::vector<std::string>& v);
  // An array of `count` fixed-size elements of `element_type`, stored
  // little-endian at `data` (count x GgufScalarSize bytes). kInvalidArgument
  // for kString/kArray elements, a bool byte other than 0/1, or more than
  // kGgufMaxArrayElements elements.
  static Status Array(std::string key, GgufType element_type, const void* data,
                      uint64_t count, GgufKv* out);
  // A pair from the bytes that follow the type field in a file, validated
  // exactly as the reader validates them (kInvalidArgument naming the key
  // otherwise; trailing bytes are refused).
  static Status FromRaw(std::string key, GgufType type, std::string raw,
                        GgufKv* out);

  const std::string& key() const { return key_; }
  GgufType type() const { return type_; }  // kArray for arrays
  // The element type of an array; type() for a scalar.
  GgufType element_type() const { return element_type_; }
  bool is_array() const { return type_ == GgufType::kArray; }
  // Element count of an array; 1 for a scalar.
  uint64_t count() const { return count_; }
  // The value bytes as stored in the file (see above).
  const std::string& raw() const { return raw_; }
  // File offset of the key's length field (the start of the pair); -1 for a
  // pair that was built rather than read.
  int64_t offset() const { return offset_; }
  // File offsets of the type field and of the value (raw()[0]); -1 when
  // built.
  int64_t type_offset() const;
  int64_t value_offset() const;

  // Typed access to the scalar (i == 0) or to array element i. False when
  // i >= count() or the element type does not fit the accessor:
  //   GetUint:  u8/u16/u32/u64, and i8..i64 holding a value >= 0;
  //   GetInt:   any integer type whose value fits int64 (u64 <= INT64_MAX);
  //   GetFloat: f32 (widened exactly) and f64;
  //   GetBool:  bool;
  //   GetString: string (a view into raw(), valid while this object lives).
  bool GetUint(uint64_t* v, uint64_t i = 0) const;
  bool GetInt(int64_t* v, uint64_t i = 0) const;
  bool GetFloat(double* v, uint64_t i = 0) const;
  bool GetBool(bool* v, uint64_t i = 0) const;
  bool GetString(std::string_view* v, uint64_t i = 0) const;
  // The little-endian bytes of fixed-size element i (GgufScalarSize of
  // element_type()); empty for strings or i >= count().
  std::string_view ElementBytes(uint64_t i = 0) const;

 private:
  friend class internal::GgufParser;
  static GgufKv Scalar(std::string key, GgufType type, const void* le,
                       size_t n);

  std::string key_;
  GgufType type_ = GgufType::kU8;
  GgufType element_type_ = GgufType::kU8;
  uint64_t count_ = 1;
  std::string raw_;
  int64_t offset_ = -1;
  // String arrays: offset in raw_ of each element's length field.
  std::vector<uint64_t> string_offsets_;
};

// Ordered metadata (file order). The reader guarantees unique keys; the
// writer refuses duplicates. Lookups are linear (a model has a few dozen
// keys). Not thread-safe for writes.
class GgufMetadata {
 public:
  const std::vector<GgufKv>& kvs() const { return kvs_; }
  size_t size() const { return kvs_.size(); }
  bool empty() const { return kvs_.empty(); }
  const GgufKv& operator[](size_t i) const { return kvs_[i]; }

  // nullptr when no pair has this key.
  const GgufKv* Find(std::string_view key) const;
  // Appends without looking for an existing key.
  void Append(GgufKv kv) { kvs_.push_back(std::move(kv)); }
  // Replaces the pair with the same key where it stands (file order is kept;
  // llama.cpp's gguf_set_val_* moves it to the end instead) or appends it.
  void Set(GgufKv kv);
  // Set(GgufKv::U32(key, v)): for general.file_type and
  // general.quantization_version, whatever type the old value had.
  void SetU32(std::string key, uint32_t v) {
    Set(GgufKv::U32(std::move(key), v));
  }
  // False when the key is absent.
  bool Remove(std::string_view key);

 private:
  std::vector<GgufKv> kvs_;
};

// ---------------------------------------------------------------------------
// Tensors.

// One tensor of a validated file.
struct GgufTensorInfo {
  std::string name;  // 1..63 bytes, no NUL, unique
  GgmlType type = GgmlType::kF32;
  // ggml order: ne[0] is the fastest-varying dimension (the row length), so a
  // PyTorch [rows, cols] matrix has ne = {cols, rows}. 1..4 entries, each >=
  // 1; ne[0] is a multiple of the type's block size.
  std::vector<int64_t> ne;
  int64_t n_elements = 0;
  uint64_t byte_size = 0;
  // Offset of the first byte relative to the data section (as stored), and
  // from the start of the file.
  uint64_t offset = 0;
  uint64_t data_offset = 0;
  // File offset of the tensor's info record (its name's length field).
  int64_t info_offset = 0;
  // Position in the file (0-based), i.e. the index in tensors().
  size_t index = 0;

  // The dimensions in PyTorch order (ne reversed).
  std::vector<int64_t> shape() const {
    return std::vector<int64_t>(ne.rbegin(), ne.rend());
  }
};

// "[4096, 32000]" (ne order).
std::string NeToString(const std::vector<int64_t>& ne);

// A validated header: what ParseGgufHeader produces.
struct GgufHeader {
  uint32_t version = 3;
  GgufMetadata metadata;
  std::vector<GgufTensorInfo> tensors;  // file order = data order
  uint32_t alignment = kGgufDefaultAlignment;
  uint64_t header_size = 0;  // bytes up to the end of the last tensor info
  uint64_t data_offset = 0;  // header_size rounded up to alignment
};

// Validates a whole GGUF file held in memory (`size` bytes, the file's size);
// `file_name` is used in messages. Exposed for the fuzz targets and tests;
// GgufFile::Open() runs the same checks reading the file with pread. The
// rules, in the order they are checked:
//  - at least 4 bytes, magic "GGUF"; version 2 or 3 (1 and > 3 refused; a
//    version whose bytes read swapped as 1..3 is a big-endian file: refused
//    as such); the 24-byte header complete;
//  - n_tensors and n_kv no larger than the bytes left can hold (a pair needs
//    at least 14 bytes, a tensor info 33), checked before anything is
//    allocated from them;
//  - every pair: key of 1..2^30 bytes that fit in the file, no NUL, unique;
//    a known value type; strings of at most 2^30 bytes and arrays of at most
//    2^30 elements, never longer than the bytes left; bool bytes 0 or 1;
//    arrays of any type but arrays (nested arrays are refused, as ggml does);
//  - general.alignment, if present: a u32 (not an array), non-zero, a power of
//    two (default 32);
//  - every tensor info: a name of 1..63 bytes without NUL, unique; n_dims 1..4;
//    every ne >= 1 and <= INT64_MAX; the element count and byte size without
//    overflow (element count <= INT64_MAX); a known ggml type; ne[0] a
//    multiple of the type's block size; an offset that is a multiple of the
//    alignment and equals the end of the previous tensor rounded up to the
//    alignment (0 for the first): tensors are stored in info order,
//    contiguous up to padding, so overlaps, holes and reordering are refused;
//  - the data section starts at the end of the infos rounded up to the
//    alignment; every tensor ends inside the file;
//  - nothing after the last tensor but its padding to the alignment (the
//    padding may be absent or cut short); a file without tensors ends at most
//    at the aligned start of the data section.
// Padding bytes are not required to be zero. Strings are not required to be
// UTF-8 (they are copied through as bytes).
Status ParseGgufHeader(const uint8_t* data, size_t size,
                       const std::string& file_name, GgufHeader* out);

// A GGUF file opened read-only and mapped into memory (PROT_READ,
// MAP_SHARED; the file is never opened for writing). Not copyable; movable
// only through the unique_ptr Open() returns. All const members are safe to
// call from several threads at once.
//
// Truncation while mapped: as SafetensorsFile, TensorData() re-checks the
// size with fstat() and refuses (kIoError) when the file has become shorter
// than at Open(); the header is read with pread, never through the mapping.
class GgufFile {
 public:
  // Opens and validates `path` (see ParseGgufHeader), then maps it.
  // Errors: kIoError (open/stat/read/mmap failed, not a regular file),
  // kBadFormat (contents: a file shorter than 4 bytes is "too short to be
  // GGUF"), kInternal (out of memory). `path` as given is the file name used
  // in messages.
  static Status Open(const std::string& path, std::unique_ptr<GgufFile>* out);

  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint64_t file_size() const { return file_size_; }
  uint32_t version() const { return header_.version; }
  uint32_t alignment() const { return header_.alignment; }
  uint64_t header_size() const { return header_.header_size; }
  uint64_t data_offset() const { return header_.data_offset; }
  const GgufHeader& header() const { return header_; }

  const GgufMetadata& metadata() const { return header_.metadata; }
  // Tensors in file order (which is also their data order).
  const std::vector<GgufTensorInfo>& tensors() const { return header_.tensors; }
  // nullptr when no tensor has this name.
  const GgufTensorInfo* Find(std::string_view name) const;

  // `tensor` is one of tensors() (or a copy of one). Sets *data to its first
  // byte (byte_size bytes, valid while this object lives; aligned to
  // alignment() when that is at most the page size). kInvalidArgument when
  // `tensor` is not one of tensors(); kIoError when the file is now shorter
  // than at Open().
  Status TensorData(const GgufTensorInfo& tensor, const uint8_t** data) const;
  // Same check; nullptr on failure (use TensorData for the message).
  const uint8_t* data(const GgufTensorInfo& tensor) const;

  // fstat() the file again: kIoError when it shrank since Open().
  Status CheckSize() const;

 private:
  GgufFile() = default;

  std::string path_;
  int fd_ = -1;
  const uint8_t* map_ = nullptr;
  uint64_t file_size_ = 0;
  GgufHeader header_;
  std::unordered_map<std::string_view, size_t> by_name_;
};

}  // namespace io
}  // namespace nibble

#endif  // NIBBLE_IO_GGUF_H_
