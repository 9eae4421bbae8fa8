// Streaming writer of one GGUF file (version 3 by default, little-endian).
//
// The layout is computed up front from the ordered metadata and the full
// tensor list, the header is written at once, then the tensors' bytes in list
// order, each followed by zero padding to the alignment (the last one too, as
// ggml's and gguf-py's writers do). Memory is bounded by the header and by
// what the caller passes to one call. The file appears under its final name
// only when Finish() succeeds (AtomicFile: O_EXCL temporary in the same
// directory, every write checked, fsync, rename, directory fsync); on any
// failure nothing exists under the final name.
//
// Header layout, as ggml's gguf_write_to_file and gguf-py's GGUFWriter
// produce it:
//   "GGUF" u32 version u64 n_tensors u64 n_kv
//   each pair: u64 key length, key, u32 value type, GgufKv::raw()
//   each tensor: u64 name length, name, u32 n_dims, u64 ne[n_dims],
//                u32 ggml type, u64 offset (running sum of the padded sizes)
//   zero padding to the alignment.
// A pair read by GgufFile is therefore written back byte for byte.
#ifndef NIBBLE_IO_GGUF_WRITER_H_
#define NIBBLE_IO_GGUF_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "nibble/io/atomic_file.h"
#include "nibble/io/gguf.h"
#include "nibble/status.h"

namespace nibble {
namespace io {

// One tensor to write. byte_size must equal what GgmlTensorByteSize gives
// for `type` and `ne` (ggml order: ne[0] is the row length).
struct GgufTensorSpec {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<int64_t> ne;
  uint64_t byte_size = 0;

  // The spec of a tensor read from a file (to copy it through).
  static GgufTensorSpec FromInfo(const GgufTensorInfo& t) {
    return GgufTensorSpec{t.name, t.type, t.ne, t.byte_size};
  }
};

// A spec with byte_size computed; kInvalidArgument naming the tensor when
// GgmlTensorByteSize refuses `ne` for `type`.
Status MakeGgufTensorSpec(std::string name, GgmlType type,
                          std::vector<int64_t> ne, GgufTensorSpec* out);

struct GgufWriteOptions {
  // 2 or 3 (the layouts are identical; 3 is what ggml writes today).
  uint32_t version = 3;
  // 0: general.alignment from the metadata when present, else 32. Non-zero:
  // a power of two that must equal the metadata's general.alignment, or be
  // 32 when the metadata has none (readers assume 32 without the key; the
  // writer never adds or changes a key behind the caller's back: use
  // GgufMetadata::SetU32(kGgufKeyAlignment, a)).
  uint32_t alignment = 0;
  // Replace an existing file at the final path (atomically, at Finish()).
  bool overwrite = false;
};

// Where everything goes.
struct GgufLayout {
  std::string header;  // every byte before the data section, padding included
  uint32_t alignment = kGgufDefaultAlignment;
  uint64_t header_size = 0;       // bytes before the padding
  uint64_t data_offset = 0;       // header.size()
  std::vector<uint64_t> offsets;  // per tensor, relative to the data section
  uint64_t file_size = 0;         // data_offset + sum of padded tensor sizes
};

// Validates everything and builds the header. kInvalidArgument (message names
// the key or tensor) for: a version other than 2 or 3; an empty key, a key
// with a NUL or longer than kGgufMaxStringBytes; a duplicate key; a pair whose
// raw bytes do not parse as its type (GgufKv::FromRaw); general.alignment that
// is not a u32 power of two or disagrees with `alignment`; an empty, duplicate
// or NUL-containing tensor name or one longer than kGgufMaxTensorName; an
// unknown type; `ne` refused by GgmlTensorByteSize; a byte_size that differs
// from it; a total size that overflows 64 bits.
Status BuildGgufHeader(const GgufMetadata& metadata,
                       const std::vector<GgufTensorSpec>& tensors,
                       uint32_t version, uint32_t alignment,
                       GgufLayout* layout);

class GgufWriter {
 public:
  // Validates (BuildGgufHeader), creates the temporary file (AtomicFile::
  // Create: kInvalidArgument for an existing `path` without
  // options.overwrite, kIoError for an unwritable directory) and writes the
  // header.
  static Status Create(const std::string& path, const GgufMetadata& metadata,
                       std::vector<GgufTensorSpec> tensors,
                       const GgufWriteOptions& options,
                       std::unique_ptr<GgufWriter>* out);

  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

  // Writes the whole next tensor and its padding: `name` must be the next
  // tensor of the list and `size` its byte_size (kInvalidArgument otherwise,
  // naming both). After any failure every later call returns it and the
  // temporary is gone.
  Status WriteTensor(std::string_view name, const void* bytes, uint64_t size);

  // The same in pieces: BeginTensor(name), Append() until byte_size bytes are
  // in (more is refused), then EndTensor() checks the count and writes the
  // padding.
  Status BeginTensor(std::string_view name);
  Status Append(const void* bytes, uint64_t size);
  Status EndTensor();

  // Checks that every tensor was written, then commits the file (fsync,
  // rename, directory fsync). On any failure the temporary is removed and
  // nothing exists under `path`.
  Status Finish();
  // Removes the temporary (also done by the destructor without Finish()).
  void Abort();

  const std::string& path() const { return file_->final_path(); }
  // The layout; its `header` string is released once written.
  const GgufLayout& layout() const { return layout_; }
  uint32_t alignment() const { return layout_.alignment; }
  uint64_t data_offset() const { return layout_.data_offset; }
  uint64_t file_size() const { return layout_.file_size; }

 private:
  GgufWriter() = default;
  Status Fail(Status s);
  Status WritePadding(uint64_t n);

  std::unique_ptr<AtomicFile> file_;
  std::vector<GgufTensorSpec> tensors_;
  GgufLayout layout_;
  size_t next_ = 0;         // index of the next tensor to begin
  bool in_tensor_ = false;  // between BeginTensor and EndTensor
  uint64_t written_ = 0;    // bytes of the current tensor so far
  Status error_;
};

}  // namespace io
}  // namespace nibble

#endif  // NIBBLE_IO_GGUF_WRITER_H_
