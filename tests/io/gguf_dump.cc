// Test helper for tests/python/test_gguf_io.py: what nibble's GGUF reader
// sees, as JSON, and a copy of a file through nibble's GGUF writer.
//
//   nibble_gguf_dump FILE
//       Prints one JSON object: version, alignment, header_size, data_offset,
//       file_size, "kvs" (file order: key, type, element_type, count, raw =
//       the value bytes after the type field, value = decoded) and "tensors"
//       (name, type id and name, ne, n_elements, byte_size, offset,
//       data_offset, data). Keys, names, strings, raw and data are hex of
//       the bytes (exact for any content); integers are JSON integers; bools
//       true/false; floats their IEEE bit pattern as an integer (exact, NaN
//       included).
//   nibble_gguf_dump --types
//       Prints nibble's ggml type table: [[id, name, block_size, type_size]].
//   nibble_gguf_dump --rewrite IN OUT [--set-u32 KEY=VALUE]... [--version N]
//       Copies every pair and tensor of IN to OUT through GgufWriter (the
//       pairs byte for byte, in order; --set-u32 replaces or appends a u32
//       pair the way `convert` sets general.file_type).
//
// Exit status: 0 success, 1 usage, 2 a failed nibble call (its Status on
// stderr).
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "nibble/io/gguf.h"
#include "nibble/io/gguf_writer.h"

namespace {

using nibble::Status;
using nibble::io::GgufFile;
using nibble::io::GgufKv;
using nibble::io::GgufType;

std::string Hex(std::string_view s) {
  static const char kDigits[] = "0123456789abcdef";
  std::string out = "\"";
  out.reserve(2 * s.size() + 2);
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    out += kDigits[c >> 4];
    out += kDigits[c & 15];
  }
  return out + "\"";
}

std::string Element(const GgufKv& kv, uint64_t i) {
  switch (kv.element_type()) {
    case GgufType::kString: {
      std::string_view v;
      kv.GetString(&v, i);
      return Hex(v);
    }
    case GgufType::kBool: {
      bool b = false;
      kv.GetBool(&b, i);
      return b ? "true" : "false";
    }
    case GgufType::kF32:
    case GgufType::kF64: {
      // The bit pattern, exactly.
      std::string_view b = kv.ElementBytes(i);
      uint64_t bits = 0;
      for (size_t k = b.size(); k-- > 0;) {
        bits = (bits << 8) | static_cast<unsigned char>(b[k]);
      }
      return std::to_string(bits);
    }
    case GgufType::kI8:
    case GgufType::kI16:
    case GgufType::kI32:
    case GgufType::kI64: {
      int64_t v = 0;
      kv.GetInt(&v, i);
      return std::to_string(v);
    }
    default: {
      uint64_t v = 0;
      kv.GetUint(&v, i);
      return std::to_string(v);
    }
  }
}

int Fail(const Status& s) {
  std::fprintf(stderr, "%s\n", s.ToString().c_str());
  return 2;
}

int Dump(const std::string& path) {
  std::unique_ptr<GgufFile> f;
  Status s = GgufFile::Open(path, &f);
  if (!s.ok()) return Fail(s);
  std::string out = "{";
  out += "\"version\":" + std::to_string(f->version());
  out += ",\"alignment\":" + std::to_string(f->alignment());
  out += ",\"header_size\":" + std::to_string(f->header_size());
  out += ",\"data_offset\":" + std::to_string(f->data_offset());
  out += ",\"file_size\":" + std::to_string(f->file_size());
  out += ",\"kvs\":[";
  const auto& kvs = f->metadata().kvs();
  for (size_t k = 0; k < kvs.size(); ++k) {
    const GgufKv& kv = kvs[k];
    if (k) out += ",";
    out += "{\"key\":" + Hex(kv.key());
    out += ",\"type\":\"" + std::string(GgufTypeName(kv.type())) + "\"";
    out += ",\"element_type\":\"" +
           std::string(GgufTypeName(kv.element_type())) + "\"";
    out += ",\"count\":" + std::to_string(kv.count());
    out += ",\"offset\":" + std::to_string(kv.offset());
    out += ",\"raw\":" + Hex(kv.raw());
    out += ",\"value\":";
    if (kv.is_array()) {
      out += "[";
      for (uint64_t i = 0; i < kv.count(); ++i) {
        if (i) out += ",";
        out += Element(kv, i);
      }
      out += "]";
    } else {
      out += Element(kv, 0);
    }
    out += "}";
  }
  out += "],\"tensors\":[";
  for (size_t k = 0; k < f->tensors().size(); ++k) {
    const nibble::io::GgufTensorInfo& t = f->tensors()[k];
    const uint8_t* data = nullptr;
    s = f->TensorData(t, &data);
    if (!s.ok()) return Fail(s);
    if (k) out += ",";
    out += "{\"name\":" + Hex(t.name);
    out += ",\"type\":" + std::to_string(static_cast<uint32_t>(t.type));
    out += ",\"type_name\":\"" + std::string(GgmlTypeName(t.type)) + "\"";
    out += ",\"ne\":[";
    for (size_t d = 0; d < t.ne.size(); ++d) {
      if (d) out += ",";
      out += std::to_string(t.ne[d]);
    }
    out += "],\"n_elements\":" + std::to_string(t.n_elements);
    out += ",\"byte_size\":" + std::to_string(t.byte_size);
    out += ",\"offset\":" + std::to_string(t.offset);
    out += ",\"data_offset\":" + std::to_string(t.data_offset);
    out +=
        ",\"data\":" + Hex(std::string_view(reinterpret_cast<const char*>(data),
                                            static_cast<size_t>(t.byte_size)));
    out += "}";
  }
  out += "]}\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 2;
}

int Rewrite(const std::string& in, const std::string& out_path,
            const std::vector<std::pair<std::string, uint32_t>>& set_u32,
            uint32_t version) {
  std::unique_ptr<GgufFile> f;
  Status s = GgufFile::Open(in, &f);
  if (!s.ok()) return Fail(s);
  nibble::io::GgufMetadata meta = f->metadata();
  for (const auto& kv : set_u32) meta.SetU32(kv.first, kv.second);
  std::vector<nibble::io::GgufTensorSpec> specs;
  for (const auto& t : f->tensors()) {
    specs.push_back(nibble::io::GgufTensorSpec::FromInfo(t));
  }
  nibble::io::GgufWriteOptions options;
  options.version = version != 0 ? version : f->version();
  std::unique_ptr<nibble::io::GgufWriter> w;
  s = nibble::io::GgufWriter::Create(out_path, meta, specs, options, &w);
  if (!s.ok()) return Fail(s);
  for (const auto& t : f->tensors()) {
    const uint8_t* data = nullptr;
    s = f->TensorData(t, &data);
    if (s.ok()) s = w->WriteTensor(t.name, data, t.byte_size);
    if (!s.ok()) return Fail(s);
  }
  s = w->Finish();
  return s.ok() ? 0 : Fail(s);
}

int Types() {
  std::string out = "[";
  for (nibble::io::GgmlType t : nibble::io::AllGgmlTypes()) {
    const nibble::io::GgmlTypeInfo& row = nibble::io::GgmlTypeTraits(t);
    if (out.size() > 1) out += ",";
    out += "[" + std::to_string(static_cast<uint32_t>(t)) + ",\"" + row.name +
           "\"," + std::to_string(row.block_size) + "," +
           std::to_string(row.type_size) + "]";
  }
  out += "]\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 2;
}

int Usage() {
  std::fprintf(stderr,
               "usage: nibble_gguf_dump FILE\n"
               "       nibble_gguf_dump --types\n"
               "       nibble_gguf_dump --rewrite IN OUT [--set-u32 KEY=VALUE]"
               "... [--version N]\n");
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && args[0] == "--types") return Types();
  if (args.size() == 1 && args[0].rfind("--", 0) != 0) return Dump(args[0]);
  if (args.size() < 3 || args[0] != "--rewrite") return Usage();
  std::vector<std::pair<std::string, uint32_t>> set_u32;
  uint32_t version = 0;
  for (size_t i = 3; i < args.size(); ++i) {
    if (i + 1 >= args.size()) return Usage();
    const std::string& v = args[i + 1];
    if (args[i] == "--set-u32") {
      const size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0) return Usage();
      char* end = nullptr;
      const unsigned long long n = std::strtoull(v.c_str() + eq + 1, &end, 10);
      if (*end != '\0' || n > 0xffffffffULL) return Usage();
      set_u32.emplace_back(v.substr(0, eq), static_cast<uint32_t>(n));
    } else if (args[i] == "--version") {
      version = static_cast<uint32_t>(std::strtoul(v.c_str(), nullptr, 10));
    } else {
      return Usage();
    }
    ++i;
  }
  return Rewrite(args[1], args[2], set_u32, version);
}
