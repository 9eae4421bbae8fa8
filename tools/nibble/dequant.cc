// `nibble dequant`: see dequant.h. The unpacking is the inverse of
// lib/include/nibble/io/compressed_tensors.h.
#include "dequant.h"

#include <fcntl.h>
#include <omp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "nibble/io/atomic_file.h"
#include "nibble/io/checkpoint.h"
#include "nibble/io/safetensors.h"
#include "nibble/io/safetensors_writer.h"
#include "nibble/nibble.h"
#include "output_dir.h"
#include "pattern.h"
#include "progress.h"

namespace nibble::tool {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

using DequantError = ToolError;

[[noreturn]] void BadInput(const std::string& m) { throw DequantError(2, m); }

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

const char* const kParts[] = {"weight_packed", "weight_scale",
                              "weight_zero_point", "weight_shape"};

// The weights args of one config group.
struct CtScheme {
  std::string group;  // "group_0"
  int bits = 0;
  bool symmetric = true;
  int64_t group_size = 0;  // 0: channel
};

struct CtTarget {
  std::string text;
  NamePattern re;  // for "re:" targets
  size_t scheme = 0;
};

struct QConfig {
  std::vector<CtScheme> schemes;
  std::vector<CtTarget> targets;
  std::vector<std::string> ignore;
  std::vector<NamePattern> ignore_re;
};

// Reads and checks quantization_config; `where` names config.json.
QConfig ParseQConfig(const json& q, const std::string& where) {
  const std::string ctx = where + ": quantization_config";
  if (!q.is_object()) BadInput(ctx + " is not an object");
  auto str = [&](const char* key) -> std::string {
    auto it = q.find(key);
    return it != q.end() && it->is_string() ? it->get<std::string>()
                                            : std::string();
  };
  if (str("quant_method") != "compressed-tensors")
    BadInput(ctx + ": quant_method is not \"compressed-tensors\"");
  if (str("format") != "pack-quantized")
    BadInput(
        ctx +
        ": format is not \"pack-quantized\" (only that format is supported)");
  QConfig out;
  auto groups = q.find("config_groups");
  if (groups == q.end() || !groups->is_object() || groups->empty())
    BadInput(ctx + ": config_groups is missing or empty");
  for (auto g = groups->begin(); g != groups->end(); ++g) {
    const std::string gctx = ctx + ".config_groups." + g.key();
    if (!g->is_object()) BadInput(gctx + " is not an object");
    auto w = g->find("weights");
    if (w == g->end() || !w->is_object())
      BadInput(gctx + ": no weights object");
    CtScheme s;
    s.group = g.key();
    auto type = w->find("type");
    if (type != w->end() &&
        !(type->is_string() && type->get<std::string>() == "int"))
      BadInput(gctx + ".weights: type must be \"int\"");
    auto bits = w->find("num_bits");
    if (bits == w->end() || !bits->is_number_integer() ||
        (bits->get<int64_t>() != 4 && bits->get<int64_t>() != 8))
      BadInput(gctx + ".weights: num_bits must be 4 or 8");
    s.bits = static_cast<int>(bits->get<int64_t>());
    auto sym = w->find("symmetric");
    if (sym != w->end() && !sym->is_null()) {
      if (!sym->is_boolean())
        BadInput(gctx + ".weights: symmetric must be a boolean");
      s.symmetric = sym->get<bool>();
    }
    auto strategy = w->find("strategy");
    const std::string st = strategy != w->end() && strategy->is_string()
                               ? strategy->get<std::string>()
                               : std::string();
    if (st == "group") {
      auto gs = w->find("group_size");
      if (gs == w->end() || !gs->is_number_integer() || gs->get<int64_t>() <= 0)
        BadInput(gctx + ".weights: group strategy needs a positive group_size");
      s.group_size = gs->get<int64_t>();
      if (s.group_size != 32 && s.group_size != 64 && s.group_size != 128 &&
          s.group_size != 256)
        BadInput(gctx + ".weights: group_size " + std::to_string(s.group_size) +
                 " is not supported (32, 64, 128 or 256)");
    } else if (st != "channel") {
      BadInput(gctx + ".weights: strategy must be \"group\" or \"channel\"");
    }
    auto actorder = w->find("actorder");
    if (actorder != w->end() && !actorder->is_null() &&
        !(actorder->is_boolean() && !actorder->get<bool>()))
      BadInput(gctx + ".weights: actorder is not supported");
    auto targets = g->find("targets");
    if (targets == g->end() || !targets->is_array())
      BadInput(gctx + ": targets must be a list");
    for (const json& t : *targets) {
      if (!t.is_string() || t.get<std::string>().empty())
        BadInput(gctx + ": a target is not a non-empty string");
      CtTarget target;
      target.text = t.get<std::string>();
      target.scheme = out.schemes.size();
      if (target.text.rfind("re:", 0) == 0)
        Check(NamePattern::Compile(target.text, &target.re), gctx + ": target");
      out.targets.push_back(std::move(target));
    }
    out.schemes.push_back(s);
  }
  auto ignore = q.find("ignore");
  if (ignore != q.end() && !ignore->is_null()) {
    if (!ignore->is_array()) BadInput(ctx + ": ignore must be a list");
    for (const json& t : *ignore) {
      if (!t.is_string()) BadInput(ctx + ": an ignore entry is not a string");
      const std::string text = t.get<std::string>();
      if (text.rfind("re:", 0) == 0) {
        NamePattern p;
        Check(NamePattern::Compile(text, &p), ctx + ": ignore");
        out.ignore_re.push_back(std::move(p));
      } else {
        out.ignore.push_back(text);
      }
    }
  }
  return out;
}

// The scheme of module `m` (index into schemes) or -1 when ignored or
// matched by no group. Precedence as vLLM (and ct_decode.py): exact name,
// then "re:", then the class name "Linear".
int SchemeFor(const QConfig& q, const std::string& m) {
  for (const std::string& i : q.ignore)
    if (i == m) return -1;
  for (const NamePattern& p : q.ignore_re)
    if (p.MatchesString(m)) return -1;
  int best_rank = 3, best = -1;
  for (const CtTarget& t : q.targets) {
    int rank = 3;
    if (t.text == m)
      rank = 0;
    else if (t.re.is_regex() && t.re.MatchesString(m))
      rank = 1;
    else if (t.text == "Linear")
      rank = 2;
    if (rank < best_rank) {
      best_rank = rank;
      best = static_cast<int>(t.scheme);
    }
  }
  return best;
}

struct Source {
  const io::SafetensorsFile* file = nullptr;
  const io::TensorInfo* info = nullptr;
  std::string Where() const {
    return file->path() + ": tensor '" + info->name + "'";
  }
  const uint8_t* Data() const {
    const uint8_t* p = nullptr;
    Check(file->TensorData(*info, &p), Where());
    return p;
  }
};

// One quantized layer.
struct Layer {
  std::string module;
  CtScheme scheme;
  int64_t out = 0, in = 0, groups = 0, packed_cols = 0, zp_rows = 0;
  DType scale_dtype = DType::kF16;
  Source packed, scale, zero_point, shape;
};

uint32_t LoadWord(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

int64_t LoadI64(const uint8_t* p) {
  uint64_t v = 0;
  for (int k = 7; k >= 0; --k) v = (v << 8) | p[k];
  return static_cast<int64_t>(v);
}

std::string ShapeStr(const std::vector<int64_t>& s) {
  return io::ShapeToString(s);
}

// Checks every tensor of `L` against weight_shape and the scheme.
void ValidateLayer(Layer* L) {
  const Source& sh = L->shape;
  if (!((sh.info->dtype == io::StDtype::kI64 ||
         sh.info->dtype == io::StDtype::kI32) &&
        sh.info->shape == std::vector<int64_t>{2}))
    BadInput(sh.Where() + ": is " + io::StDtypeName(sh.info->dtype) + " " +
             ShapeStr(sh.info->shape) + ", expected I64 [2]");
  const uint8_t* d = sh.Data();
  if (sh.info->dtype == io::StDtype::kI64) {
    L->out = LoadI64(d);
    L->in = LoadI64(d + 8);
  } else {
    L->out = static_cast<int32_t>(LoadWord(d));
    L->in = static_cast<int32_t>(LoadWord(d + 4));
  }
  // 2^38 elements (1 TiB as F32) bounds every byte count below.
  if (L->out < 1 || L->in < 1 || L->out > (int64_t{1} << 38) / L->in)
    BadInput(sh.Where() + ": [" + std::to_string(L->out) + ", " +
             std::to_string(L->in) + "] is not a valid weight shape");
  const int bits = L->scheme.bits;
  const int64_t per_word = 32 / bits;
  L->packed_cols = (L->in + per_word - 1) / per_word;
  L->groups = L->scheme.group_size == 0
                  ? 1
                  : (L->in + L->scheme.group_size - 1) / L->scheme.group_size;
  const std::string scheme_desc =
      L->scheme.group + " (" + std::to_string(bits) + "-bit, " +
      (L->scheme.group_size == 0
           ? std::string("channel")
           : "group_size " + std::to_string(L->scheme.group_size)) +
      (L->scheme.symmetric ? ", symmetric)" : ", asymmetric)");
  if (L->scheme.group_size != 0 && L->in % L->scheme.group_size != 0)
    BadInput(sh.Where() + ": " + std::to_string(L->in) +
             " columns are not a multiple of the group size of " + scheme_desc);
  const Source& p = L->packed;
  const std::vector<int64_t> want_packed = {L->out, L->packed_cols};
  if (p.info->dtype != io::StDtype::kI32 || p.info->shape != want_packed)
    BadInput(p.Where() + ": is " + io::StDtypeName(p.info->dtype) + " " +
             ShapeStr(p.info->shape) + ", expected I32 " +
             ShapeStr(want_packed) + " for weight_shape [" +
             std::to_string(L->out) + ", " + std::to_string(L->in) + "] and " +
             scheme_desc);
  const Source& s = L->scale;
  const std::vector<int64_t> want_scale = {L->out, L->groups};
  if (!io::StDtypeToKernel(s.info->dtype, &L->scale_dtype) ||
      s.info->shape != want_scale)
    BadInput(s.Where() + ": is " + io::StDtypeName(s.info->dtype) + " " +
             ShapeStr(s.info->shape) + ", expected F16, BF16 or F32 " +
             ShapeStr(want_scale) + " for " + scheme_desc);
  if (L->scheme.symmetric) {
    if (L->zero_point.info != nullptr)
      BadInput(L->zero_point.Where() + ": present, but " + scheme_desc +
               " is symmetric");
  } else {
    if (L->zero_point.info == nullptr)
      BadInput(L->packed.Where() + ": " + L->module +
               ".weight_zero_point is missing for " + scheme_desc);
    L->zp_rows = (L->out + per_word - 1) / per_word;
    const Source& z = L->zero_point;
    const std::vector<int64_t> want_zp = {L->zp_rows, L->groups};
    if (z.info->dtype != io::StDtype::kI32 || z.info->shape != want_zp)
      BadInput(z.Where() + ": is " + io::StDtypeName(z.info->dtype) + " " +
               ShapeStr(z.info->shape) + ", expected I32 " + ShapeStr(want_zp) +
               " for " + scheme_desc);
  }
}

// Unpacks `L` into our QuantizedBuffers layout (nibble/scheme.h).
void Unpack(const Layer& L, QuantizedBuffers* buf) {
  QuantScheme scheme;
  scheme.bits = L.scheme.bits;
  scheme.symmetric = L.scheme.symmetric;
  scheme.group_size = L.scheme.group_size;
  scheme.scale_dtype = L.scale_dtype;
  Check(buf->Allocate(scheme, L.out, L.in), L.packed.Where());
  const int bits = L.scheme.bits;
  const uint32_t mask = (1u << bits) - 1;
  const int64_t per_word = 32 / bits;
  // Zero points first: the pad nibble of an odd INT4 row is its zero point.
  if (!L.scheme.symmetric) {
    const uint8_t* z = L.zero_point.Data();
    for (int64_t wr = 0; wr < L.zp_rows; ++wr) {
      for (int64_t g = 0; g < L.groups; ++g) {
        const uint32_t word =
            LoadWord(z + 4 * static_cast<size_t>(wr * L.groups + g));
        for (int64_t i = 0; i < per_word; ++i) {
          const int64_t r = wr * per_word + i;
          const uint32_t v = (word >> (bits * i)) & mask;
          if (r < L.out) {
            buf->zero_points[static_cast<size_t>(r * L.groups + g)] =
                static_cast<uint8_t>(v);
          } else if (v != 0) {
            BadInput(L.zero_point.Where() + ": padding bits of word [" +
                     std::to_string(wr) + ", " + std::to_string(g) +
                     "] (rows past " + std::to_string(L.out) +
                     ") are not zero");
          }
        }
      }
    }
  }
  const uint8_t* p = L.packed.Data();
  const size_t row_bytes = static_cast<size_t>(L.packed_cols) * 4;
  const size_t code_bytes = static_cast<size_t>(CodeBytesPerRow(scheme, L.in));
  const size_t used =
      static_cast<size_t>(L.in) * bits / 8;  // whole bytes of codes
  for (int64_t r = 0; r < L.out; ++r) {
    const uint8_t* src = p + static_cast<size_t>(r) * row_bytes;
    uint8_t* dst = buf->codes.data() + static_cast<size_t>(r) * code_bytes;
    bool bad_pad = false;
    for (size_t k = used; k < row_bytes; ++k)
      if (src[k] != 0 &&
          !(bits == 4 && (L.in & 1) && k == used && (src[k] & 0xf0) == 0))
        bad_pad = true;
    if (bad_pad)
      BadInput(L.packed.Where() + ": row " + std::to_string(r) +
               ": padding bits after the last code are not zero");
    if (bits == 4) {
      std::memcpy(dst, src, code_bytes);
      if (L.in & 1) {  // the pad nibble holds the code of 0.0
        const uint8_t zero = L.scheme.symmetric
                                 ? uint8_t{8}
                                 : buf->zero_points[static_cast<size_t>(
                                       r * L.groups + L.groups - 1)];
        dst[code_bytes - 1] =
            static_cast<uint8_t>((dst[code_bytes - 1] & 0x0f) | (zero << 4));
      }
    } else if (L.scheme.symmetric) {
      for (size_t k = 0; k < code_bytes; ++k)
        dst[k] = static_cast<uint8_t>(src[k] ^ 0x80);
    } else {
      std::memcpy(dst, src, code_bytes);
    }
  }
  std::memcpy(buf->scales.data(), L.scale.Data(), buf->scales.size());
}

io::StDtype StFor(DType d) {
  switch (d) {
    case DType::kF16:
      return io::StDtype::kF16;
    case DType::kBF16:
      return io::StDtype::kBF16;
    case DType::kF32:
      return io::StDtype::kF32;
  }
  return io::StDtype::kF32;
}

bool IsFloat(io::StDtype d) {
  return d == io::StDtype::kF64 || d == io::StDtype::kF32 ||
         d == io::StDtype::kF16 || d == io::StDtype::kBF16;
}

// F64/F32/F16/BF16 -> `to`, through float32 (as ct_decode.py), round to
// nearest even.
void CastFloat(const uint8_t* src, io::StDtype from, DType to, int64_t count,
               std::vector<uint8_t>* out) {
  const size_t in_size = static_cast<size_t>(io::StDtypeBits(from) / 8);
  const size_t out_size = DTypeSize(to);
  out->resize(static_cast<size_t>(count) * out_size);
  for (int64_t k = 0; k < count; ++k) {
    const uint8_t* s = src + static_cast<size_t>(k) * in_size;
    float f = 0;
    if (from == io::StDtype::kF64) {
      double x;
      std::memcpy(&x, s, 8);
      f = static_cast<float>(x);
    } else if (from == io::StDtype::kF32) {
      std::memcpy(&f, s, 4);
    } else {
      const uint16_t h = static_cast<uint16_t>(s[0] | (s[1] << 8));
      f = from == io::StDtype::kF16 ? HalfToFloat(h) : Bf16ToFloat(h);
    }
    uint8_t* d = out->data() + static_cast<size_t>(k) * out_size;
    if (to == DType::kF32) {
      std::memcpy(d, &f, 4);
    } else {
      const uint16_t h = to == DType::kF16 ? FloatToHalf(f) : FloatToBf16(f);
      d[0] = static_cast<uint8_t>(h & 0xff);
      d[1] = static_cast<uint8_t>(h >> 8);
    }
  }
}

// One output tensor: a quantized layer (layer >= 0) or an input tensor.
struct OutItem {
  int layer = -1;
  Source src;
};

int Dequant(const DequantOptions& o) {
  if (o.quiet) spdlog::set_level(spdlog::level::warn);
  DType out_dtype;
  if (!ParseDType(o.dtype, &out_dtype))
    UsageError("--dtype: '" + o.dtype + "' is not one of f16, bf16, f32");
  // No --isa: the best path the CPU has (every path writes the same bytes).
  const ExecOptions exec = ResolveExecOptions(o.threads, "auto", "auto");
  const uint64_t max_shard = ParseSize(o.max_shard_size);

  std::unique_ptr<io::Checkpoint> ckpt;
  Check(io::Checkpoint::Open(o.input, &ckpt), "");
  const fs::path in_root(ckpt->directory());
  const fs::path config_path = in_root / "config.json";
  std::error_code ec;
  if (!fs::is_regular_file(config_path, ec))
    BadInput(config_path.string() +
             ": missing (it holds the quantization_config)");
  json config = json::parse(ReadWholeFile(config_path), nullptr, false);
  if (config.is_discarded() || !config.is_object())
    BadInput(config_path.string() + ": not a JSON object");
  auto qit = config.find("quantization_config");
  if (qit == config.end())
    BadInput(config_path.string() +
             ": no quantization_config (not a quantized model)");
  const QConfig qconfig = ParseQConfig(*qit, config_path.string());
  config.erase("quantization_config");

  // Group the compressed-tensors parts by module.
  std::vector<Layer> layers;
  std::map<std::string, size_t> layer_of;
  std::vector<OutItem> items;
  for (const io::CheckpointTensor& t : ckpt->tensors()) {
    Source src{ckpt->shards()[t.shard].get(), t.info};
    const std::string& name = t.info->name;
    int part = -1;
    for (int k = 0; k < 4; ++k)
      if (EndsWith(name, std::string(".") + kParts[k])) part = k;
    if (part < 0) {
      items.push_back({-1, src});
      continue;
    }
    const std::string module =
        name.substr(0, name.size() - std::strlen(kParts[part]) - 1);
    auto it = layer_of.find(module);
    if (it == layer_of.end()) {
      it = layer_of.emplace(module, layers.size()).first;
      layers.emplace_back();
      layers.back().module = module;
      items.push_back({static_cast<int>(it->second), {}});
    }
    Layer& L = layers[it->second];
    Source* slot = part == 0   ? &L.packed
                   : part == 1 ? &L.scale
                   : part == 2 ? &L.zero_point
                               : &L.shape;
    slot->file = src.file;
    slot->info = src.info;
  }
  for (Layer& L : layers) {
    const Source& any = L.packed.info       ? L.packed
                        : L.scale.info      ? L.scale
                        : L.zero_point.info ? L.zero_point
                                            : L.shape;
    for (const Source* s : {&L.packed, &L.scale, &L.shape})
      if (s->info == nullptr)
        BadInput(any.Where() + ": " + L.module + "." +
                 kParts[s == &L.packed  ? 0
                        : s == &L.scale ? 1
                                        : 3] +
                 " is missing");
    if (ckpt->Find(L.module + ".weight") != nullptr)
      BadInput(L.packed.Where() + ": " + L.module + ".weight is present too");
    const int s = SchemeFor(qconfig, L.module);
    if (s < 0)
      BadInput(L.packed.Where() +
               ": stored packed, but quantization_config ignores " + L.module +
               " or matches it with no config group");
    L.scheme = qconfig.schemes[static_cast<size_t>(s)];
    ValidateLayer(&L);
  }

  // Output path checks.
  const OutputDir out_dir = CheckOutputDir(o.output, o.input, *ckpt, o.force);

  // Output tensor list.
  std::vector<io::TensorSpec> specs;
  for (const OutItem& item : items) {
    if (item.layer >= 0) {
      const Layer& L = layers[static_cast<size_t>(item.layer)];
      specs.push_back(
          {L.module + ".weight",
           StFor(out_dtype),
           {L.out, L.in},
           static_cast<uint64_t>(L.out * L.in) * DTypeSize(out_dtype)});
    } else {
      const io::TensorInfo& t = *item.src.info;
      DType kd;
      const bool same = io::StDtypeToKernel(t.dtype, &kd) && kd == out_dtype;
      if (IsFloat(t.dtype) && !same)
        specs.push_back(
            {t.name, StFor(out_dtype), t.shape,
             static_cast<uint64_t>(t.num_elements) * DTypeSize(out_dtype)});
      else
        specs.push_back({t.name, t.dtype, t.shape, t.byte_size()});
    }
  }
  io::ShardPlan shards;
  Check(io::PlanShards(specs, max_shard, &shards), "");
  std::vector<size_t> shard_of(specs.size());
  for (size_t s = 0; s < shards.tensors.size(); ++s)
    for (size_t k : shards.tensors[s]) shard_of[k] = s;

  const fs::path tmp_path = CreateTempDirFor(out_dir.path);
  TempDir tmp(tmp_path);

  std::unique_ptr<io::SafetensorsWriter> writer;
  size_t writer_shard = 0;
  const io::Metadata metadata = {{"format", "pt"}};
  auto write_spec = [&](size_t k, const void* bytes) {
    const size_t s = shard_of[k];
    if (!writer || writer_shard != s) {
      if (writer) Check(writer->Finish(), shards.file_names[writer_shard]);
      std::vector<io::TensorSpec> list;
      for (size_t idx : shards.tensors[s]) list.push_back(specs[idx]);
      const fs::path p = tmp_path / shards.file_names[s];
      Check(io::SafetensorsWriter::Create(p.string(), std::move(list), metadata,
                                          false, &writer),
            p.string());
      writer_shard = s;
    }
    Check(writer->WriteTensor(specs[k].name, bytes, specs[k].byte_size),
          "writing '" + specs[k].name + "'");
  };

  // Bytes read per output tensor, for the progress bar.
  auto source_bytes = [&](const OutItem& item) -> int64_t {
    if (item.layer < 0) return static_cast<int64_t>(item.src.info->byte_size());
    const Layer& L = layers[static_cast<size_t>(item.layer)];
    int64_t b = 0;
    for (const Source* src : {&L.packed, &L.scale, &L.zero_point, &L.shape})
      if (src->info != nullptr)
        b += static_cast<int64_t>(src->info->byte_size());
    return b;
  };
  int64_t total_bytes = 0, bytes_done = 0;
  for (const OutItem& item : items) total_bytes += source_bytes(item);
  Progress progress("dequantized", static_cast<int64_t>(items.size()),
                    total_bytes,
                    !o.quiet && !spdlog::should_log(spdlog::level::debug));
  for (size_t k = 0; k < items.size(); ++k) {
    CheckInterrupted();
    const OutItem& item = items[k];
    progress.Start(static_cast<int64_t>(k), bytes_done, specs[k].name);
    {
      const Source& src = item.layer >= 0
                              ? layers[static_cast<size_t>(item.layer)].packed
                              : item.src;
      SetCurrentInput(src.file->path(), src.info->name);
    }
    bytes_done += source_bytes(item);
    if (item.layer >= 0) {
      const Layer& L = layers[static_cast<size_t>(item.layer)];
      QuantizedBuffers buf;
      Unpack(L, &buf);
      std::vector<uint8_t> w(specs[k].byte_size);
      const MatrixView view{w.data(), out_dtype, L.out, L.in, L.in};
      Check(Dequantize(static_cast<const QuantizedBuffers&>(buf).view(),
                       buf.scheme, view, exec),
            L.packed.Where());
      write_spec(k, w.data());
      // The layer's input pages go, as for every other tensor: the
      // resident set stays near one layer, not the checkpoint.
      for (const Source* part : {&L.packed, &L.scale, &L.zero_point, &L.shape})
        if (part->info != nullptr)
          ReleasePages(part->Data(), part->info->byte_size());
      continue;
    }
    const io::TensorInfo& t = *item.src.info;
    const uint8_t* data = item.src.Data();
    if (specs[k].dtype != t.dtype) {
      std::vector<uint8_t> out;
      CastFloat(data, t.dtype, out_dtype, t.num_elements, &out);
      write_spec(k, out.data());
    } else {
      write_spec(k, data);
    }
    ReleasePages(data, t.byte_size());
  }
  progress.Clear();
  if (!writer) {
    for (size_t s = 0; s < shards.file_names.size(); ++s) {
      const fs::path p = tmp_path / shards.file_names[s];
      Check(io::SafetensorsWriter::Create(p.string(), {}, metadata, false,
                                          &writer),
            p.string());
      Check(writer->Finish(), p.string());
    }
  } else {
    Check(writer->Finish(), shards.file_names[writer_shard]);
  }
  writer.reset();
  if (shards.file_names.size() > 1) {
    std::string index;
    Check(io::ShardIndexJson(specs, shards, &index), "index");
    WriteWholeFile(tmp_path / io::kSafetensorsIndexName, index);
  }

  WriteWholeFile(tmp_path / "config.json", config.dump(2) + "\n");
  if (ckpt->layout() != io::Checkpoint::Layout::kFile) {
    CopySideFiles(*ckpt, in_root, tmp_path);
  }
  FsyncDir(tmp_path);

  CheckInterrupted();
  MoveIntoPlace(&tmp, out_dir, o.output);
  spdlog::info("wrote {}: {} tensors ({} dequantized to {}), {} shard{}",
               o.output, specs.size(), layers.size(), DTypeName(out_dtype),
               shards.file_names.size(),
               shards.file_names.size() == 1 ? "" : "s");
  return 0;
}

}  // namespace

CLI::App* AddDequantCommand(CLI::App* app, DequantOptions* o) {
  CLI::App* cmd = app->add_subcommand(
      "dequant",
      "Turn a compressed-tensors pack-quantized model directory (as written "
      "by 'nibble convert') back into plain safetensors in one float dtype");
  cmd->add_option("IN", o->input, "Input: a compressed-tensors model directory")
      ->required();
  cmd->add_option("OUT", o->output,
                  "Output model directory (must not exist, unless --force)")
      ->required();
  cmd->add_option("--dtype", o->dtype,
                  "dtype of the dequantized weights and of every other "
                  "floating-point tensor: f16|bf16|f32")
      ->check(CLI::IsMember({"f16", "bf16", "f32"}))
      ->capture_default_str();
  cmd->add_option("--threads", o->threads,
                  "OpenMP threads, 1 to 1024 (default: all cores)")
      ->check(CLI::Range(1, 1024));
  cmd->add_flag("--force", o->force, "Replace an existing OUT");
  cmd->add_option("--max-shard-size", o->max_shard_size,
                  "Largest shard (tensor bytes), e.g. 5GB, 500MB, 64MiB")
      ->capture_default_str();
  cmd->add_flag("-q,--quiet", o->quiet, "Print only warnings and errors");
  cmd->footer(
      "Each quantized layer P becomes P.weight; other floating-point tensors "
      "are converted to --dtype (round to nearest even), integer and other "
      "tensors are copied unchanged. config.json is copied without "
      "quantization_config, the other files unchanged.\nOutput is written to "
      ".OUT.nibble-tmp-PID-RANDOM next to OUT and renamed at the end.\n");
  return cmd;
}

int RunDequant(const DequantOptions& o, std::string* error) {
  return RunReportingErrors([&] { return Dequant(o); }, error);
}

}  // namespace nibble::tool
