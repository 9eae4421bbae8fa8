// Streaming writer of one safetensors file, and the shard plan of a sharded
// checkpoint.
//
// The header (8-byte length + JSON) is written first, from the full tensor
// list given up front; then the tensors' bytes in that order. The writer
// never holds more than what the caller passes to one call, so memory is
// bounded by the caller's largest tensor. The file appears under its final
// name only when Finish() succeeds (see AtomicFile).
//
// Header layout, as the reference (Rust) writer produces it: compact JSON,
// `__metadata__` first when given (even if empty), then the tensors in the
// given order as {"dtype":..,"shape":[..],"data_offsets":[b,e]} with
// contiguous offsets from 0; spaces pad the JSON to a multiple of 8 bytes so
// the data section starts 8-byte aligned. (The reference writer sorts the
// tensors by dtype alignment then name; we keep the caller's order.)
#ifndef NIBBLE_IO_SAFETENSORS_WRITER_H_
#define NIBBLE_IO_SAFETENSORS_WRITER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "nibble/io/atomic_file.h"
#include "nibble/io/safetensors.h"
#include "nibble/status.h"

namespace nibble {
namespace io {

// One tensor to write. byte_size must equal product(shape) x dtype size.
struct TensorSpec {
  std::string name;
  StDtype dtype = StDtype::kF32;
  std::vector<int64_t> shape;
  uint64_t byte_size = 0;
};

// Builds the padded header JSON (without the 8-byte length) for `tensors` in
// order. kInvalidArgument for an empty or duplicate name, "__metadata__" as a
// tensor name, invalid UTF-8 or a NUL in a name or metadata string, a
// duplicate metadata key, a shape with a negative entry or more than 8
// dimensions, a byte_size that does not match the shape, or a header of
// kMaxSafetensorsHeader bytes or more. `with_metadata` writes `__metadata__`
// even when `metadata` is empty.
Status BuildSafetensorsHeader(const std::vector<TensorSpec>& tensors,
                              const Metadata& metadata, bool with_metadata,
                              std::string* header);

class SafetensorsWriter {
 public:
  // Validates the list (see BuildSafetensorsHeader), creates the temporary
  // file (AtomicFile::Create: kInvalidArgument for an existing `path` without
  // `overwrite`, kIoError for an unwritable directory) and writes the header.
  static Status Create(const std::string& path, std::vector<TensorSpec> tensors,
                       Metadata metadata, bool overwrite,
                       std::unique_ptr<SafetensorsWriter>* out);

  // Writes the whole next tensor: `name` must be the next tensor of the list
  // and `size` its byte_size (kInvalidArgument otherwise, naming both).
  Status WriteTensor(std::string_view name, const void* bytes, uint64_t size);

  // The same in pieces: BeginTensor(name), Append() until byte_size bytes
  // are in (more is refused), then EndTensor() checks the count.
  Status BeginTensor(std::string_view name);
  Status Append(const void* bytes, uint64_t size);
  Status EndTensor();

  // Checks that every tensor was written, then commits the file. On any
  // failure the temporary is removed and nothing exists under `path`.
  Status Finish();
  // Removes the temporary (also done by the destructor without Finish()).
  void Abort();

  const std::string& path() const { return file_->final_path(); }
  uint64_t header_size() const { return header_size_; }  // N, padded
  // Total size of the finished file: 8 + N + sum of byte sizes.
  uint64_t file_size() const { return 8 + header_size_ + data_size_; }

 private:
  SafetensorsWriter() = default;
  Status Fail(Status s);

  std::unique_ptr<AtomicFile> file_;
  std::vector<TensorSpec> tensors_;
  uint64_t header_size_ = 0;
  uint64_t data_size_ = 0;
  size_t next_ = 0;         // index of the next tensor to begin
  bool in_tensor_ = false;  // between BeginTensor and EndTensor
  uint64_t written_ = 0;    // bytes of the current tensor so far
  Status error_;
};

// Sharded output, as Hugging Face splits it (huggingface_hub
// split_torch_state_dict_into_shards): tensors in the given order fill a
// shard until the next one would push it past `max_shard_bytes` (counting
// tensor bytes only, not headers); a tensor larger than the limit gets a
// shard of its own. One shard is named "model.safetensors" (and needs no
// index); N > 1 shards "model-00001-of-0000N.safetensors" (5 digits, more
// when N > 99999).
struct ShardPlan {
  std::vector<std::string> file_names;
  std::vector<std::vector<size_t>> tensors;  // indices into the input list
  uint64_t total_size = 0;                   // sum of all byte sizes
};

// kInvalidArgument when max_shard_bytes is 0 or names repeat. An empty list
// gives one empty "model.safetensors".
Status PlanShards(const std::vector<TensorSpec>& tensors,
                  uint64_t max_shard_bytes, ShardPlan* plan);

// The content of model.safetensors.index.json for `plan`, as transformers
// writes it (json.dumps(indent=2, sort_keys=True) + "\n", ASCII-escaped):
// {"metadata": {"total_size": BYTES}, "weight_map": {name: file, ...}} with
// the names sorted.
Status ShardIndexJson(const std::vector<TensorSpec>& tensors,
                      const ShardPlan& plan, std::string* json);

}  // namespace io
}  // namespace nibble

#endif  // NIBBLE_IO_SAFETENSORS_WRITER_H_
