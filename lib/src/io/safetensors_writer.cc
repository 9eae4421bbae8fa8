#include "nibble/io/safetensors_writer.h"

#include <cstdio>
#include <map>
#include <new>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "io/io_common.h"

namespace nibble {
namespace io {

using internal::Printable;

namespace {

Status Invalid(const std::string& what) {
  return Status(StatusCode::kInvalidArgument, what);
}

Status CheckText(const std::string& s, const char* what) {
  if (s.find('\0') != std::string::npos) {
    return Invalid(std::string(what) + " '" + Printable(s) +
                   "' contains a NUL byte");
  }
  if (!internal::IsValidUtf8(s)) {
    return Invalid(std::string(what) + " '" + Printable(s) +
                   "' is not valid UTF-8");
  }
  return Status::Ok();
}

}  // namespace

Status BuildSafetensorsHeader(const std::vector<TensorSpec>& tensors,
                              const Metadata& metadata, bool with_metadata,
                              std::string* header) {
  header->clear();
  try {
    std::string h = "{";
    bool first = true;
    if (with_metadata || !metadata.empty()) {
      std::unordered_set<std::string> keys;
      h += "\"__metadata__\":{";
      for (size_t i = 0; i < metadata.size(); ++i) {
        const auto& kv = metadata[i];
        Status s = CheckText(kv.first, "metadata key");
        if (s.ok()) s = CheckText(kv.second, "metadata value");
        if (!s.ok()) return s;
        if (!keys.insert(kv.first).second) {
          return Invalid("duplicate metadata key '" + Printable(kv.first) +
                         "'");
        }
        if (i) h += ',';
        internal::AppendJsonString(kv.first, &h);
        h += ':';
        internal::AppendJsonString(kv.second, &h);
      }
      h += '}';
      first = false;
    }
    std::unordered_set<std::string> names;
    uint64_t offset = 0;
    for (const TensorSpec& t : tensors) {
      if (t.name.empty()) return Invalid("empty tensor name");
      if (t.name == "__metadata__") {
        return Invalid("'__metadata__' cannot be a tensor name");
      }
      Status s = CheckText(t.name, "tensor name");
      if (!s.ok()) return s;
      if (!names.insert(t.name).second) {
        return Invalid("duplicate tensor name '" + Printable(t.name) + "'");
      }
      if (t.shape.size() > kMaxSafetensorsDims) {
        return Invalid("tensor '" + Printable(t.name) + "': shape " +
                       ShapeToString(t.shape) + " has more than " +
                       std::to_string(kMaxSafetensorsDims) + " dimensions");
      }
      int64_t elements = 0;
      uint64_t bytes = 0;
      if (!StTensorByteSize(t.dtype, t.shape, &elements, &bytes)) {
        return Invalid("tensor '" + Printable(t.name) + "': shape " +
                       ShapeToString(t.shape) + " of " + StDtypeName(t.dtype) +
                       " has no valid byte size");
      }
      if (bytes != t.byte_size) {
        return Invalid("tensor '" + Printable(t.name) + "': byte size " +
                       std::to_string(t.byte_size) + " but shape " +
                       ShapeToString(t.shape) + " of " + StDtypeName(t.dtype) +
                       " needs " + std::to_string(bytes));
      }
      uint64_t end;
      if (__builtin_add_overflow(offset, bytes, &end)) {
        return Invalid("total tensor size overflows 64 bits");
      }
      if (!first) h += ',';
      first = false;
      internal::AppendJsonString(t.name, &h);
      h += ":{\"dtype\":\"";
      h += StDtypeName(t.dtype);
      h += "\",\"shape\":[";
      for (size_t i = 0; i < t.shape.size(); ++i) {
        if (i) h += ',';
        h += std::to_string(t.shape[i]);
      }
      h += "],\"data_offsets\":[" + std::to_string(offset) + "," +
           std::to_string(end) + "]}";
      offset = end;
      if (h.size() >= kMaxSafetensorsHeader) break;
    }
    h += '}';
    h.append((8 - h.size() % 8) % 8, ' ');
    if (h.size() >= kMaxSafetensorsHeader) {
      return Invalid("safetensors header of " + std::to_string(h.size()) +
                     "+ bytes is not below the limit of " +
                     std::to_string(kMaxSafetensorsHeader));
    }
    *header = std::move(h);
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal, "out of memory building a header");
  }
  return Status::Ok();
}

Status SafetensorsWriter::Create(const std::string& path,
                                 std::vector<TensorSpec> tensors,
                                 Metadata metadata, bool overwrite,
                                 std::unique_ptr<SafetensorsWriter>* out) {
  out->reset();
  std::string header;
  Status s = BuildSafetensorsHeader(tensors, metadata, false, &header);
  if (!s.ok()) return Status(s.code(), path + ": " + s.message());
  std::unique_ptr<SafetensorsWriter> w(new SafetensorsWriter());
  s = AtomicFile::Create(path, overwrite, &w->file_);
  if (!s.ok()) return s;
  w->tensors_ = std::move(tensors);
  w->header_size_ = header.size();
  for (const TensorSpec& t : w->tensors_) w->data_size_ += t.byte_size;
  uint8_t len[8];
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(n >> (8 * i));
  s = w->file_->Write(len, 8);
  if (s.ok()) s = w->file_->Write(header.data(), header.size());
  if (!s.ok()) {
    w->file_->Abort();
    return s;
  }
  *out = std::move(w);
  return Status::Ok();
}

Status SafetensorsWriter::Fail(Status s) {
  if (error_.ok()) error_ = s;
  file_->Abort();
  return s;
}

Status SafetensorsWriter::BeginTensor(std::string_view name) {
  if (!error_.ok()) return error_;
  if (in_tensor_) {
    return Fail(Invalid(path() + ": tensor '" +
                        Printable(tensors_[next_ - 1].name) +
                        "' was not ended before '" + Printable(name) + "'"));
  }
  if (next_ >= tensors_.size()) {
    return Fail(Invalid(
        path() + ": tensor '" + Printable(name) + "' is not in the list (all " +
        std::to_string(tensors_.size()) + " tensors are written)"));
  }
  if (name != tensors_[next_].name) {
    return Fail(Invalid(path() + ": expected tensor '" +
                        Printable(tensors_[next_].name) + "' (number " +
                        std::to_string(next_) + "), got '" + Printable(name) +
                        "'"));
  }
  ++next_;
  in_tensor_ = true;
  written_ = 0;
  return Status::Ok();
}

Status SafetensorsWriter::Append(const void* bytes, uint64_t size) {
  if (!error_.ok()) return error_;
  if (!in_tensor_) return Fail(Invalid(path() + ": Append outside a tensor"));
  const TensorSpec& t = tensors_[next_ - 1];
  if (size > t.byte_size - written_) {
    return Fail(Invalid(path() + ": tensor '" + Printable(t.name) + "' gets " +
                        std::to_string(written_ + size) +
                        " bytes or more but holds " +
                        std::to_string(t.byte_size)));
  }
  Status s = file_->Write(bytes, static_cast<size_t>(size));
  if (!s.ok()) return Fail(s);
  written_ += size;
  return Status::Ok();
}

Status SafetensorsWriter::EndTensor() {
  if (!error_.ok()) return error_;
  if (!in_tensor_)
    return Fail(Invalid(path() + ": EndTensor outside a tensor"));
  const TensorSpec& t = tensors_[next_ - 1];
  if (written_ != t.byte_size) {
    return Fail(Invalid(path() + ": tensor '" + Printable(t.name) + "' got " +
                        std::to_string(written_) + " bytes but holds " +
                        std::to_string(t.byte_size)));
  }
  in_tensor_ = false;
  return Status::Ok();
}

Status SafetensorsWriter::WriteTensor(std::string_view name, const void* bytes,
                                      uint64_t size) {
  Status s = BeginTensor(name);
  if (!s.ok()) return s;
  const TensorSpec& t = tensors_[next_ - 1];
  if (size != t.byte_size) {
    return Fail(Invalid(path() + ": tensor '" + Printable(t.name) + "' given " +
                        std::to_string(size) + " bytes but holds " +
                        std::to_string(t.byte_size)));
  }
  s = Append(bytes, size);
  if (!s.ok()) return s;
  return EndTensor();
}

Status SafetensorsWriter::Finish() {
  if (!error_.ok()) return error_;
  if (in_tensor_ || next_ != tensors_.size()) {
    size_t missing = in_tensor_ ? next_ - 1 : next_;
    return Fail(
        Invalid(path() + ": tensor '" + Printable(tensors_[missing].name) +
                "' was not written (" + std::to_string(missing) + " of " +
                std::to_string(tensors_.size()) + " complete)"));
  }
  Status s = file_->Commit();
  if (!s.ok()) error_ = s;
  return s;
}

void SafetensorsWriter::Abort() {
  if (file_) file_->Abort();
}

Status PlanShards(const std::vector<TensorSpec>& tensors,
                  uint64_t max_shard_bytes, ShardPlan* plan) {
  *plan = ShardPlan();
  if (max_shard_bytes == 0) return Invalid("maximum shard size is 0");
  std::unordered_set<std::string_view> names;
  std::vector<std::vector<size_t>> shards;
  std::vector<size_t> current;
  uint64_t current_size = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const uint64_t size = tensors[i].byte_size;
    if (!names.insert(tensors[i].name).second) {
      return Invalid("duplicate tensor name '" + Printable(tensors[i].name) +
                     "'");
    }
    if (__builtin_add_overflow(plan->total_size, size, &plan->total_size)) {
      return Invalid("total tensor size overflows 64 bits");
    }
    // Unlike huggingface_hub (which emits an oversized tensor's shard before
    // the shard being filled), we close the current shard first, so the
    // shards hold the tensors in the given order.
    if (size > max_shard_bytes) {
      if (!current.empty()) shards.push_back(std::move(current));
      current.clear();
      current_size = 0;
      shards.push_back({i});
      continue;
    }
    if (!current.empty() && current_size + size > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_size = 0;
    }
    current.push_back(i);
    current_size += size;
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));
  const size_t n = shards.size();
  if (n == 1) {
    plan->file_names.push_back("model.safetensors");
  } else {
    for (size_t i = 0; i < n; ++i) {
      char buf[64];
      std::snprintf(buf, sizeof(buf), "model-%05zu-of-%05zu.safetensors", i + 1,
                    n);
      plan->file_names.push_back(buf);
    }
  }
  plan->tensors = std::move(shards);
  return Status::Ok();
}

Status ShardIndexJson(const std::vector<TensorSpec>& tensors,
                      const ShardPlan& plan, std::string* json) {
  json->clear();
  if (plan.file_names.size() != plan.tensors.size()) {
    return Invalid("shard plan has " + std::to_string(plan.file_names.size()) +
                   " names for " + std::to_string(plan.tensors.size()) +
                   " shards");
  }
  try {
    nlohmann::json map = nlohmann::json::object();
    for (size_t s = 0; s < plan.tensors.size(); ++s) {
      for (size_t i : plan.tensors[s]) {
        if (i >= tensors.size())
          return Invalid("shard plan index out of range");
        Status st = CheckText(tensors[i].name, "tensor name");
        if (!st.ok()) return st;
        map[tensors[i].name] = plan.file_names[s];
      }
    }
    nlohmann::json index = nlohmann::json::object();
    index["metadata"] = {{"total_size", plan.total_size}};
    index["weight_map"] = std::move(map);
    // ensure_ascii like Python's json.dumps; keys sorted by std::map order,
    // which for UTF-8 is code point order (Python's sort_keys).
    *json = index.dump(2, ' ', /*ensure_ascii=*/true) + "\n";
  } catch (const std::exception& e) {
    return Status(StatusCode::kInternal,
                  std::string("cannot build the shard index: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace io
}  // namespace nibble
