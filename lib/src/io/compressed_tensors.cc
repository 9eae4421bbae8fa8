// compressed-tensors pack-quantized conversion. See the header for the
// layout and the mapping of our codes onto theirs.
#include "nibble/io/compressed_tensors.h"

#include <cstring>
#include <limits>
#include <set>
#include <string>
#include <utility>

#include <nlohmann/json.hpp>

namespace nibble {
namespace io {
namespace {

Status Invalid(std::string message) {
  return Status(StatusCode::kInvalidArgument, std::move(message));
}

// a * b into *out; false on overflow (a, b >= 0).
bool MulOk(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

bool ValidLayout(const CtLayout& l) {
  return (l.bits == 4 || l.bits == 8) && l.out > 0 && l.in > 0 &&
         l.groups > 0 && l.packed_cols > 0;
}

Status CheckDst(const char* what, const void* dst, uint64_t dst_size,
                uint64_t need) {
  if (dst == nullptr) return Invalid(std::string(what) + ": null buffer");
  if (dst_size < need) {
    return Invalid(std::string(what) + ": buffer of " +
                   std::to_string(dst_size) + " bytes, need " +
                   std::to_string(need));
  }
  return Status::Ok();
}

void PutU32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
  p[2] = static_cast<uint8_t>(v >> 16);
  p[3] = static_cast<uint8_t>(v >> 24);
}

void PutU16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

uint16_t GetU16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}

float LoadScale(const uint8_t* p, DType dtype) {
  switch (dtype) {
    case DType::kF16:
      return HalfToFloat(GetU16(p));
    case DType::kBF16:
      return Bf16ToFloat(GetU16(p));
    case DType::kF32:
    default: {
      uint32_t bits = static_cast<uint32_t>(p[0]) |
                      (static_cast<uint32_t>(p[1]) << 8) |
                      (static_cast<uint32_t>(p[2]) << 16) |
                      (static_cast<uint32_t>(p[3]) << 24);
      float f;
      std::memcpy(&f, &bits, sizeof f);
      return f;
    }
  }
}

bool SameBits(float a, float b) {
  uint32_t x, y;
  std::memcpy(&x, &a, sizeof x);
  std::memcpy(&y, &b, sizeof y);
  return x == y;
}

// Writes `value` in `dtype` at p; false when it is not exactly representable
// (NaN never is: scales are finite).
bool StoreScaleExact(float value, DType dtype, uint8_t* p) {
  switch (dtype) {
    case DType::kF16: {
      uint16_t h = FloatToHalf(value);
      PutU16(p, h);
      return SameBits(HalfToFloat(h), value);
    }
    case DType::kBF16: {
      uint16_t b = FloatToBf16(value);
      PutU16(p, b);
      return SameBits(Bf16ToFloat(b), value);
    }
    case DType::kF32:
    default: {
      uint32_t bits;
      std::memcpy(&bits, &value, sizeof bits);
      PutU32(p, bits);
      return value == value;
    }
  }
}

}  // namespace

Status CtLayoutFor(const QuantScheme& scheme, int64_t rows, int64_t cols,
                   DType model_dtype, CtLayout* layout) {
  if (layout == nullptr) return Invalid("compressed-tensors: null layout");
  Status st = ValidateScheme(scheme, cols);
  if (!st.ok()) return st;
  if (rows < 1) {
    return Invalid("compressed-tensors: rows must be positive, got " +
                   std::to_string(rows));
  }
  if (model_dtype != DType::kF16 && model_dtype != DType::kBF16 &&
      model_dtype != DType::kF32) {
    return Invalid("compressed-tensors: unknown model dtype");
  }
  CtLayout l;
  l.out = rows;
  l.in = cols;
  l.bits = scheme.bits;
  l.symmetric = scheme.symmetric;
  l.groups = GroupsPerRow(scheme, cols);
  l.model_dtype = model_dtype;
  const uint64_t per_word = 32 / static_cast<uint64_t>(scheme.bits);
  const uint64_t ucols = static_cast<uint64_t>(cols);
  const uint64_t urows = static_cast<uint64_t>(rows);
  const uint64_t ugroups = static_cast<uint64_t>(l.groups);
  l.packed_cols = static_cast<int64_t>((ucols + per_word - 1) / per_word);
  uint64_t n = 0;
  const char* overflow = "compressed-tensors: tensor size overflows";
  if (!MulOk(urows, static_cast<uint64_t>(l.packed_cols), &n) ||
      !MulOk(n, 4, &l.weight_packed_bytes) ||
      l.weight_packed_bytes >
          static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return Invalid(overflow);
  }
  if (!MulOk(urows, ugroups, &n) ||
      !MulOk(n, DTypeSize(model_dtype), &l.weight_scale_bytes)) {
    return Invalid(overflow);
  }
  l.weight_packed_shape = {rows, l.packed_cols};
  l.weight_scale_shape = {rows, l.groups};
  if (!scheme.symmetric) {
    l.zero_point_rows = static_cast<int64_t>((urows + per_word - 1) / per_word);
    if (!MulOk(static_cast<uint64_t>(l.zero_point_rows), ugroups, &n) ||
        !MulOk(n, 4, &l.weight_zero_point_bytes)) {
      return Invalid(overflow);
    }
    l.weight_zero_point_shape = {l.zero_point_rows, l.groups};
  }
  *layout = std::move(l);
  return Status::Ok();
}

Status CtPackWeight(const CtLayout& layout, const ConstQuantizedView& in,
                    void* dst, uint64_t dst_size) {
  if (!ValidLayout(layout)) return Invalid("weight_packed: invalid layout");
  Status st = CheckDst("weight_packed", dst, dst_size,
                       layout.weight_packed_bytes);
  if (!st.ok()) return st;
  const int64_t code_bytes =
      layout.bits == 4 ? (layout.in + 1) / 2 : layout.in;
  if (in.codes == nullptr || in.codes_stride < code_bytes) {
    return Invalid("weight_packed: null codes or codes stride " +
                   std::to_string(in.codes_stride) + " < " +
                   std::to_string(code_bytes));
  }
  const uint64_t row_bytes = static_cast<uint64_t>(layout.packed_cols) * 4;
  const bool odd4 = layout.bits == 4 && (layout.in & 1) != 0;
  const bool flip = layout.bits == 8 && layout.symmetric;  // int8 q -> q+128
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < layout.out; ++r) {
    const uint8_t* src = in.codes + r * in.codes_stride;
    uint8_t* row = out + static_cast<uint64_t>(r) * row_bytes;
    if (flip) {
      for (int64_t c = 0; c < code_bytes; ++c) row[c] = src[c] ^ 0x80u;
    } else {
      std::memcpy(row, src, static_cast<size_t>(code_bytes));
    }
    // The pad nibble of an odd INT4 row holds the code of 0.0; the format
    // pads with zero bits.
    if (odd4) row[code_bytes - 1] &= 0x0fu;
    std::memset(row + code_bytes, 0,
                static_cast<size_t>(row_bytes - static_cast<uint64_t>(code_bytes)));
  }
  return Status::Ok();
}

Status CtPackScales(const CtLayout& layout, const ConstQuantizedView& in,
                    DType scale_dtype, void* dst, uint64_t dst_size) {
  if (!ValidLayout(layout)) return Invalid("weight_scale: invalid layout");
  Status st = CheckDst("weight_scale", dst, dst_size,
                       layout.weight_scale_bytes);
  if (!st.ok()) return st;
  if (in.scales == nullptr || in.scales_stride < layout.groups) {
    return Invalid("weight_scale: null scales or scales stride " +
                   std::to_string(in.scales_stride) + " < " +
                   std::to_string(layout.groups));
  }
  const size_t src_size = DTypeSize(scale_dtype);
  const size_t dst_elem = DTypeSize(layout.model_dtype);
  const int64_t group_len = layout.in / layout.groups;
  const auto* src = static_cast<const uint8_t*>(in.scales);
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t r = 0; r < layout.out; ++r) {
    const uint8_t* s = src + static_cast<uint64_t>(r * in.scales_stride) * src_size;
    uint8_t* d = out + static_cast<uint64_t>(r * layout.groups) * dst_elem;
    if (scale_dtype == layout.model_dtype) {
      std::memcpy(d, s, static_cast<size_t>(layout.groups) * dst_elem);
      continue;
    }
    for (int64_t g = 0; g < layout.groups; ++g) {
      const float v = LoadScale(s + g * src_size, scale_dtype);
      if (!StoreScaleExact(v, layout.model_dtype, d + g * dst_elem)) {
        Status err(StatusCode::kScaleOverflow,
                   "weight_scale: scale " + std::to_string(v) + " (" +
                       DTypeName(scale_dtype) + ") of row " +
                       std::to_string(r) + ", group " + std::to_string(g) +
                       " is not exactly representable in " +
                       DTypeName(layout.model_dtype) +
                       "; quantize with the model dtype as scale dtype");
        err.WithPosition(r, g * group_len);
        return err;
      }
    }
  }
  return Status::Ok();
}

Status CtPackZeroPoints(const CtLayout& layout, const ConstQuantizedView& in,
                        void* dst, uint64_t dst_size) {
  if (!ValidLayout(layout)) return Invalid("weight_zero_point: invalid layout");
  if (layout.symmetric) {
    return Invalid("weight_zero_point: a symmetric scheme has no zero points");
  }
  Status st = CheckDst("weight_zero_point", dst, dst_size,
                       layout.weight_zero_point_bytes);
  if (!st.ok()) return st;
  if (in.zero_points == nullptr || in.zero_points_stride < layout.groups) {
    return Invalid("weight_zero_point: null zero points or stride " +
                   std::to_string(in.zero_points_stride) + " < " +
                   std::to_string(layout.groups));
  }
  const int per_word = 32 / layout.bits;
  const uint32_t max_zp = (1u << layout.bits) - 1;
  auto* out = static_cast<uint8_t*>(dst);
  for (int64_t wr = 0; wr < layout.zero_point_rows; ++wr) {
    for (int64_t g = 0; g < layout.groups; ++g) {
      uint32_t word = 0;
      for (int i = 0; i < per_word; ++i) {
        const int64_t r = wr * per_word + i;
        if (r >= layout.out) break;
        const uint32_t zp = in.zero_points[r * in.zero_points_stride + g];
        if (zp > max_zp) {
          Status err(StatusCode::kInvalidArgument,
                     "weight_zero_point: zero point " + std::to_string(zp) +
                         " of row " + std::to_string(r) + ", group " +
                         std::to_string(g) + " does not fit in " +
                         std::to_string(layout.bits) + " bits");
          err.WithPosition(r, g * (layout.in / layout.groups));
          return err;
        }
        word |= zp << (layout.bits * i);
      }
      PutU32(out + (static_cast<uint64_t>(wr * layout.groups + g)) * 4, word);
    }
  }
  return Status::Ok();
}

Status CtWeightShape(const CtLayout& layout, void* dst, uint64_t dst_size) {
  if (!ValidLayout(layout)) return Invalid("weight_shape: invalid layout");
  Status st =
      CheckDst("weight_shape", dst, dst_size, CtLayout::kWeightShapeBytes);
  if (!st.ok()) return st;
  auto* out = static_cast<uint8_t*>(dst);
  const uint64_t dims[2] = {static_cast<uint64_t>(layout.out),
                            static_cast<uint64_t>(layout.in)};
  for (int d = 0; d < 2; ++d) {
    for (int b = 0; b < 8; ++b) {
      out[d * 8 + b] = static_cast<uint8_t>(dims[d] >> (8 * b));
    }
  }
  return Status::Ok();
}

Status BuildCtQuantizationConfig(const std::vector<CtConfigGroup>& groups,
                                 const std::vector<std::string>& ignore,
                                 std::string* json) {
  if (json == nullptr) return Invalid("quantization_config: null output");
  if (groups.empty()) return Invalid("quantization_config: no config groups");
  std::set<std::string> seen;
  int defaults = 0;
  using Json = nlohmann::ordered_json;
  Json config_groups = Json::object();
  for (size_t i = 0; i < groups.size(); ++i) {
    const CtConfigGroup& g = groups[i];
    const std::string gname = "group_" + std::to_string(i);
    const QuantScheme& s = g.scheme;
    Status st = ValidateScheme(s, s.group_size > 0 ? s.group_size : 1);
    if (!st.ok()) {
      return Invalid("quantization_config: " + gname + ": " + st.message());
    }
    if (g.is_default && ++defaults > 1) {
      return Invalid("quantization_config: more than one default group");
    }
    if (!g.is_default && g.targets.empty()) {
      return Invalid("quantization_config: " + gname + " has no targets");
    }
    for (const std::string& t : g.targets) {
      if (t.empty()) {
        return Invalid("quantization_config: " + gname + ": empty target");
      }
      if (!seen.insert(t).second) {
        return Invalid("quantization_config: module '" + t +
                       "' is listed in two groups");
      }
    }
    Json targets = Json::array();
    if (g.is_default) {
      targets.push_back("Linear");
    } else {
      for (const std::string& t : g.targets) targets.push_back(t);
    }
    Json weights = Json::object();
    weights["num_bits"] = s.bits;
    weights["type"] = "int";
    weights["symmetric"] = s.symmetric;
    weights["strategy"] = s.group_size > 0 ? "group" : "channel";
    weights["group_size"] =
        s.group_size > 0 ? Json(s.group_size) : Json(nullptr);
    weights["dynamic"] = false;
    weights["actorder"] = nullptr;
    Json group = Json::object();
    group["targets"] = std::move(targets);
    group["weights"] = std::move(weights);
    group["input_activations"] = nullptr;
    group["output_activations"] = nullptr;
    config_groups[gname] = std::move(group);
  }
  Json ignore_list = Json::array();
  for (const std::string& name : ignore) {
    if (name.empty()) return Invalid("quantization_config: empty ignore name");
    if (seen.count(name) != 0) {
      return Invalid("quantization_config: module '" + name +
                     "' is both quantized and ignored");
    }
    ignore_list.push_back(name);
  }
  Json config = Json::object();
  config["quant_method"] = "compressed-tensors";
  config["format"] = "pack-quantized";
  config["quantization_status"] = "compressed";
  config["config_groups"] = std::move(config_groups);
  config["ignore"] = std::move(ignore_list);
  try {
    *json = config.dump(2);
  } catch (const std::exception& e) {
    // Invalid UTF-8 in a name.
    return Invalid(std::string("quantization_config: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace io
}  // namespace nibble
