// Resolving a checkpoint path: one .safetensors file, or a Hugging Face model
// directory holding model.safetensors or shards listed in
// model.safetensors.index.json. Every file is opened with SafetensorsFile
// (strict, memory-mapped, read-only) and the index is cross-checked against
// the shards before the caller sees any tensor.
//
// Nothing here throws.
#ifndef NIBBLE_IO_CHECKPOINT_H_
#define NIBBLE_IO_CHECKPOINT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "nibble/io/safetensors.h"
#include "nibble/status.h"

namespace nibble {
namespace io {

// Name of the single-file checkpoint and of the shard index in a directory.
constexpr const char* kSafetensorsSingleName = "model.safetensors";
constexpr const char* kSafetensorsIndexName = "model.safetensors.index.json";

// One tensor of a checkpoint and the shard that holds it.
struct CheckpointTensor {
  size_t shard = 0;                  // index into Checkpoint::shards()
  const TensorInfo* info = nullptr;  // owned by that shard's SafetensorsFile
};

class Checkpoint {
 public:
  enum class Layout {
    kFile,             // `path` is a safetensors file
    kDirectory,        // a directory with model.safetensors
    kShardedDirectory  // a directory with model.safetensors.index.json
  };

  // Resolves and validates `path`:
  //  - a regular file (symlinks followed) is read as safetensors when its
  //    name ends in ".safetensors" or its first bytes look like a
  //    safetensors header; a file starting with the GGUF magic gives
  //    kUnsupported (GGUF input is read elsewhere); anything else is
  //    kBadFormat "not a safetensors or GGUF checkpoint".
  //  - a directory: model.safetensors if present (as transformers prefers it),
  //    else model.safetensors.index.json, else kBadFormat "not a safetensors
  //    or GGUF checkpoint".
  // Index rules (kBadFormat naming the index, the tensor or shard, and the
  // byte offset in the index file): a JSON object with unique keys at every
  // level; `weight_map` an object of tensor name -> shard file name;
  // `metadata`, if present, an object whose `total_size`, if present, is a
  // non-negative number (it is not compared with the tensors' sizes: writers
  // disagree on what it counts). Shard names must be plain file names in the
  // directory: not empty, ".", "..", and without '/', '\\' or NUL (so nothing
  // outside the directory is read); symlinked shards are followed, as the
  // Hugging Face cache links them to blobs elsewhere. Every shard must exist
  // and pass SafetensorsFile::Open; every indexed tensor must be in the shard
  // the index names; a tensor found in two shards is rejected; and a shard
  // tensor that the index does not list is REJECTED (not warned about): a
  // converter that skipped it would silently drop weights.
  // kIoError when `path` does not exist or cannot be read.
  static Status Open(const std::string& path, std::unique_ptr<Checkpoint>* out);

  ~Checkpoint();
  Checkpoint(const Checkpoint&) = delete;
  Checkpoint& operator=(const Checkpoint&) = delete;

  Layout layout() const { return layout_; }
  // The model directory; for Layout::kFile the file's directory.
  const std::string& directory() const { return directory_; }
  // Path of the index file (Layout::kShardedDirectory), else empty.
  const std::string& index_path() const { return index_path_; }
  // metadata.total_size of the index when present (else -1).
  double index_total_size() const { return index_total_size_; }

  // Shards sorted by file name (one entry unless sharded); shard_names()[i]
  // is the file name of shards()[i] inside directory().
  const std::vector<std::unique_ptr<SafetensorsFile>>& shards() const {
    return shards_;
  }
  const std::vector<std::string>& shard_names() const { return shard_names_; }

  // Every tensor once, in a stable order: shard order, then data order
  // within the shard (each file is read front to back).
  const std::vector<CheckpointTensor>& tensors() const { return tensors_; }
  // nullptr when absent.
  const CheckpointTensor* Find(std::string_view name) const;

  // For a model directory: the names of the other regular files in it (after
  // following symlinks), sorted: config.json, tokenizer files, etc. Excludes
  // the shards, the index and every other *.safetensors file (those are in
  // unused_safetensors()). Empty for Layout::kFile.
  const std::vector<std::string>& other_files() const { return other_files_; }
  // *.safetensors files of the directory that are not part of the
  // checkpoint (e.g. consolidated.safetensors next to shards).
  const std::vector<std::string>& unused_safetensors() const {
    return unused_safetensors_;
  }
  // Subdirectories of the model directory (e.g. 1_Pooling of
  // sentence-transformers models), sorted; not inspected.
  const std::vector<std::string>& subdirectories() const {
    return subdirectories_;
  }

 private:
  Checkpoint() = default;
  Status OpenSharded();
  Status ListDirectory();

  Layout layout_ = Layout::kFile;
  std::string directory_;
  std::string index_path_;
  double index_total_size_ = -1;
  std::vector<std::unique_ptr<SafetensorsFile>> shards_;
  std::vector<std::string> shard_names_;
  std::vector<CheckpointTensor> tensors_;
  std::unordered_map<std::string_view, size_t> by_name_;
  std::vector<std::string> other_files_;
  std::vector<std::string> unused_safetensors_;
  std::vector<std::string> subdirectories_;
};

}  // namespace io
}  // namespace nibble

#endif  // NIBBLE_IO_CHECKPOINT_H_
