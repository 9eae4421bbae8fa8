#include "nibble/io/gguf_writer.h"

#include <algorithm>
#include <new>
#include <unordered_set>

#include "io/io_common.h"

namespace nibble {
namespace io {

using internal::Printable;

namespace {

Status Invalid(const std::string& what) {
  return Status(StatusCode::kInvalidArgument, what);
}

void PutLe(uint64_t v, size_t n, std::string* out) {
  for (size_t i = 0; i < n; ++i) {
    out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  }
}

void PutString(std::string_view s, std::string* out) {
  PutLe(s.size(), 8, out);
  out->append(s.data(), s.size());
}

bool IsPowerOfTwo(uint64_t a) { return a != 0 && (a & (a - 1)) == 0; }

uint64_t AlignUp(uint64_t x, uint64_t a) { return (x + a - 1) & ~(a - 1); }

// The alignment the file will declare, checked against the caller's.
Status ResolveAlignment(const GgufMetadata& metadata, uint32_t requested,
                        uint32_t* alignment) {
  const GgufKv* kv = metadata.Find(kGgufKeyAlignment);
  uint64_t declared = kGgufDefaultAlignment;
  if (kv != nullptr) {
    if (kv->type() != GgufType::kU32 || !kv->GetUint(&declared) ||
        !IsPowerOfTwo(declared)) {
      return Invalid(std::string("key '") + kGgufKeyAlignment +
                     "' must be a u32 power of two");
    }
  }
  if (requested != 0) {
    if (!IsPowerOfTwo(requested)) {
      return Invalid("alignment " + std::to_string(requested) +
                     " is not a power of two");
    }
    if (requested != declared) {
      return Invalid(
          "alignment " + std::to_string(requested) + " disagrees with " +
          (kv != nullptr ? "the metadata's " + std::string(kGgufKeyAlignment) +
                               " = " + std::to_string(declared)
                         : "the default of 32 that readers assume without " +
                               std::string(kGgufKeyAlignment)));
    }
  }
  *alignment = static_cast<uint32_t>(declared);
  return Status::Ok();
}

}  // namespace

Status MakeGgufTensorSpec(std::string name, GgmlType type,
                          std::vector<int64_t> ne, GgufTensorSpec* out) {
  int64_t elements = 0;
  uint64_t bytes = 0;
  if (!GgmlTensorByteSize(type, ne, &elements, &bytes)) {
    return Invalid("tensor '" + Printable(name) + "': ne " + NeToString(ne) +
                   " of " + GgmlTypeName(type) + " has no valid byte size");
  }
  *out = GgufTensorSpec{std::move(name), type, std::move(ne), bytes};
  return Status::Ok();
}

Status BuildGgufHeader(const GgufMetadata& metadata,
                       const std::vector<GgufTensorSpec>& tensors,
                       uint32_t version, uint32_t alignment,
                       GgufLayout* layout) {
  *layout = GgufLayout();
  if (version != 2 && version != 3) {
    return Invalid("GGUF version " + std::to_string(version) +
                   " cannot be written (only 2 and 3)");
  }
  uint32_t a = 0;
  Status s = ResolveAlignment(metadata, alignment, &a);
  if (!s.ok()) return s;
  try {
    std::string h = "GGUF";
    PutLe(version, 4, &h);
    PutLe(tensors.size(), 8, &h);
    PutLe(metadata.size(), 8, &h);
    std::unordered_set<std::string_view> keys;
    for (const GgufKv& kv : metadata.kvs()) {
      const std::string ctx = "key '" + Printable(kv.key()) + "': ";
      if (kv.key().empty()) return Invalid("empty key");
      if (kv.key().find('\0') != std::string::npos) {
        return Invalid(ctx + "key contains a NUL byte");
      }
      if (kv.key().size() > kGgufMaxStringBytes) {
        return Invalid(ctx + "key longer than " +
                       std::to_string(kGgufMaxStringBytes) + " bytes");
      }
      if (!keys.insert(kv.key()).second) return Invalid(ctx + "duplicate key");
      // Re-parse the value as a reader would: what we write must open.
      GgufKv check;
      s = GgufKv::FromRaw(kv.key(), kv.type(), kv.raw(), &check);
      if (!s.ok()) return s;
      if (check.element_type() != kv.element_type() ||
          check.count() != kv.count()) {
        return Invalid(ctx + "element type or count disagree with the bytes");
      }
      PutString(kv.key(), &h);
      PutLe(static_cast<uint32_t>(kv.type()), 4, &h);
      h += kv.raw();
    }
    std::unordered_set<std::string_view> names;
    uint64_t offset = 0;
    for (const GgufTensorSpec& t : tensors) {
      const std::string ctx = "tensor '" + Printable(t.name) + "': ";
      if (t.name.empty()) return Invalid("empty tensor name");
      if (t.name.size() > kGgufMaxTensorName) {
        return Invalid(ctx + "name of " + std::to_string(t.name.size()) +
                       " bytes is too long (at most " +
                       std::to_string(kGgufMaxTensorName) + ")");
      }
      if (t.name.find('\0') != std::string::npos) {
        return Invalid(ctx + "name contains a NUL byte");
      }
      if (!names.insert(t.name).second) {
        return Invalid(ctx + "duplicate tensor name");
      }
      if (FindGgmlType(static_cast<uint32_t>(t.type)) == nullptr) {
        return Invalid(ctx + "unknown ggml type " +
                       std::to_string(static_cast<uint32_t>(t.type)));
      }
      int64_t elements = 0;
      uint64_t bytes = 0;
      if (!GgmlTensorByteSize(t.type, t.ne, &elements, &bytes)) {
        return Invalid(ctx + "ne " + NeToString(t.ne) + " of " +
                       GgmlTypeName(t.type) +
                       " has no valid byte size (1..4 dimensions, each >= 1, "
                       "ne[0] a multiple of the block size, no overflow)");
      }
      if (bytes != t.byte_size) {
        return Invalid(ctx + "byte size " + std::to_string(t.byte_size) +
                       " but ne " + NeToString(t.ne) + " of " +
                       GgmlTypeName(t.type) + " needs " +
                       std::to_string(bytes));
      }
      uint64_t end;
      if (__builtin_add_overflow(offset, bytes, &end) ||
          end > (uint64_t{1} << 62)) {
        return Invalid("total tensor size is too large");
      }
      PutString(t.name, &h);
      PutLe(t.ne.size(), 4, &h);
      for (int64_t d : t.ne) PutLe(static_cast<uint64_t>(d), 8, &h);
      PutLe(static_cast<uint32_t>(t.type), 4, &h);
      PutLe(offset, 8, &h);
      layout->offsets.push_back(offset);
      offset = AlignUp(end, a);
    }
    layout->header_size = h.size();
    h.append(AlignUp(h.size(), a) - h.size(), '\0');
    layout->alignment = a;
    layout->data_offset = h.size();
    layout->file_size = h.size() + offset;
    layout->header = std::move(h);
  } catch (const std::bad_alloc&) {
    *layout = GgufLayout();
    return Status(StatusCode::kInternal, "out of memory building a header");
  }
  return Status::Ok();
}

GgufWriter::~GgufWriter() = default;

Status GgufWriter::Create(const std::string& path, const GgufMetadata& metadata,
                          std::vector<GgufTensorSpec> tensors,
                          const GgufWriteOptions& options,
                          std::unique_ptr<GgufWriter>* out) {
  out->reset();
  std::unique_ptr<GgufWriter> w(new (std::nothrow) GgufWriter());
  if (!w) return Status(StatusCode::kInternal, "out of memory");
  Status s = BuildGgufHeader(metadata, tensors, options.version,
                             options.alignment, &w->layout_);
  if (!s.ok()) return Status(s.code(), path + ": " + s.message());
  s = AtomicFile::Create(path, options.overwrite, &w->file_);
  if (!s.ok()) return s;
  w->tensors_ = std::move(tensors);
  s = w->file_->Write(w->layout_.header.data(), w->layout_.header.size());
  if (!s.ok()) {
    w->file_->Abort();
    return s;
  }
  // The header is not needed any more; keep the numbers.
  std::string().swap(w->layout_.header);
  *out = std::move(w);
  return Status::Ok();
}

Status GgufWriter::Fail(Status s) {
  if (error_.ok()) error_ = s;
  file_->Abort();
  return s;
}

Status GgufWriter::WritePadding(uint64_t n) {
  static const char kZeros[4096] = {};
  while (n > 0) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(n, sizeof(kZeros)));
    Status s = file_->Write(kZeros, k);
    if (!s.ok()) return s;
    n -= k;
  }
  return Status::Ok();
}

Status GgufWriter::BeginTensor(std::string_view name) {
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

Status GgufWriter::Append(const void* bytes, uint64_t size) {
  if (!error_.ok()) return error_;
  if (!in_tensor_) return Fail(Invalid(path() + ": Append outside a tensor"));
  const GgufTensorSpec& t = tensors_[next_ - 1];
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

Status GgufWriter::EndTensor() {
  if (!error_.ok()) return error_;
  if (!in_tensor_) {
    return Fail(Invalid(path() + ": EndTensor outside a tensor"));
  }
  const GgufTensorSpec& t = tensors_[next_ - 1];
  if (written_ != t.byte_size) {
    return Fail(Invalid(path() + ": tensor '" + Printable(t.name) + "' got " +
                        std::to_string(written_) + " bytes but holds " +
                        std::to_string(t.byte_size)));
  }
  Status s =
      WritePadding(AlignUp(t.byte_size, layout_.alignment) - t.byte_size);
  if (!s.ok()) return Fail(s);
  in_tensor_ = false;
  return Status::Ok();
}

Status GgufWriter::WriteTensor(std::string_view name, const void* bytes,
                               uint64_t size) {
  Status s = BeginTensor(name);
  if (!s.ok()) return s;
  const GgufTensorSpec& t = tensors_[next_ - 1];
  if (size != t.byte_size) {
    return Fail(Invalid(path() + ": tensor '" + Printable(t.name) + "' given " +
                        std::to_string(size) + " bytes but holds " +
                        std::to_string(t.byte_size)));
  }
  s = Append(bytes, size);
  if (!s.ok()) return s;
  return EndTensor();
}

Status GgufWriter::Finish() {
  if (!error_.ok()) return error_;
  if (in_tensor_ || next_ != tensors_.size()) {
    const size_t missing = in_tensor_ ? next_ - 1 : next_;
    return Fail(
        Invalid(path() + ": tensor '" + Printable(tensors_[missing].name) +
                "' was not written (" + std::to_string(missing) + " of " +
                std::to_string(tensors_.size()) + " complete)"));
  }
  if (file_->bytes_written() != layout_.file_size) {
    return Fail(Status(
        StatusCode::kInternal,
        path() + ": wrote " + std::to_string(file_->bytes_written()) +
            " bytes, the layout says " + std::to_string(layout_.file_size)));
  }
  Status s = file_->Commit();
  if (!s.ok()) error_ = s;
  return s;
}

void GgufWriter::Abort() {
  if (file_) file_->Abort();
}

}  // namespace io
}  // namespace nibble
