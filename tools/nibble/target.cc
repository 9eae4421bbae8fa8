#include "target.h"

#include <cctype>
#include <string>

namespace nibble::tool {

namespace {

TargetFormat g_target_format = TargetFormat::kCompressedTensors;

}  // namespace

TargetFormat CurrentTargetFormat() { return g_target_format; }

ScopedTargetFormat::ScopedTargetFormat(TargetFormat format)
    : previous_(g_target_format) {
  g_target_format = format;
}

ScopedTargetFormat::~ScopedTargetFormat() { g_target_format = previous_; }

const char kGgufTargetNamesHelp[] =
    "q8_0, q4_0, q4_1 (llama.cpp block types), f16, bf16, f32 (store "
    "unquantized, cast), keep (store as is)";

const char kTargetNamesHelp[] =
    "int8 (per channel, symmetric), int8-asym, int8-g32/-g64/-g128/-g256, "
    "int4 (= int4-g<group_size>, default 128, symmetric), int4-g32, int4-g64, "
    "int4-g128, int4-g256, int4-row, any of these with -asym; "
    "keep (store as is), fp16, bf16, fp32 (store unquantized, cast)";

bool IsValidGroupSize(int64_t g) {
  return g == 32 || g == 64 || g == 128 || g == 256;
}

std::string TargetName(const Target& t) {
  switch (t.kind) {
    case TargetKind::kKeep:
      return "keep";
    case TargetKind::kCast:
      switch (t.cast_dtype) {
        case DType::kF16:
          return "fp16";
        case DType::kBF16:
          return "bf16";
        case DType::kF32:
          return "fp32";
      }
      return "cast";
    case TargetKind::kQuantize:
      return SchemeName(t.scheme);
  }
  return "?";
}

namespace {

// True when an int4 name leaves the group size to the default: no "-gN",
// "-row" or "-channel" part.
bool Int4NameHasNoGroup(const std::string& text) {
  if (text.rfind("int4", 0) != 0) return false;
  size_t pos = 4;
  while (pos < text.size()) {
    const size_t end = text.find('-', pos + 1);
    const std::string part = text.substr(
        pos + 1, end == std::string::npos ? std::string::npos : end - pos - 1);
    if (part == "row" || part == "channel" ||
        (!part.empty() && part[0] == 'g')) {
      return false;
    }
    if (end == std::string::npos) break;
    pos = end;
  }
  return true;
}

}  // namespace

std::string GgufTargetName(const Target& t) {
  switch (t.kind) {
    case TargetKind::kKeep:
      return "keep";
    case TargetKind::kCast:
      switch (t.cast_dtype) {
        case DType::kF16:
          return "f16";
        case DType::kBF16:
          return "bf16";
        case DType::kF32:
          return "f32";
      }
      return "cast";
    case TargetKind::kQuantize:
      return SchemeName(t.scheme);
  }
  return "?";
}

Status ParseGgufTarget(const std::string& text, Target* out) {
  std::string lower = text;
  for (char& c : lower)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (lower == "keep") {
    *out = Target::Keep();
    return Status::Ok();
  }
  if (lower == "f16" || lower == "fp16" || lower == "float16") {
    *out = Target::Cast(DType::kF16);
    return Status::Ok();
  }
  if (lower == "bf16" || lower == "bfloat16") {
    *out = Target::Cast(DType::kBF16);
    return Status::Ok();
  }
  if (lower == "f32" || lower == "fp32" || lower == "float32") {
    *out = Target::Cast(DType::kF32);
    return Status::Ok();
  }
  QuantScheme scheme;
  if (!lower.empty() && ParseScheme(lower, &scheme).ok()) {
    if (IsGgml(scheme)) {
      *out = Target::Quantize(scheme);
      return Status::Ok();
    }
    return Status(StatusCode::kInvalidArgument,
                  "'" + text +
                      "' is a compressed-tensors scheme (safetensors output "
                      "only); for GGUF output use " +
                      kGgufTargetNamesHelp);
  }
  return Status(StatusCode::kInvalidArgument,
                "unknown GGUF type '" + text +
                    "' (expected one of: " + kGgufTargetNamesHelp + ")");
}

Status ParseTarget(const std::string& text, int64_t default_group_size,
                   DType scale_dtype, Target* out) {
  if (g_target_format == TargetFormat::kGguf) return ParseGgufTarget(text, out);
  if (text == "keep") {
    *out = Target::Keep();
    return Status::Ok();
  }
  if (text == "fp16" || text == "f16" || text == "float16") {
    *out = Target::Cast(DType::kF16);
    return Status::Ok();
  }
  if (text == "bf16" || text == "bfloat16") {
    *out = Target::Cast(DType::kBF16);
    return Status::Ok();
  }
  if (text == "fp32" || text == "f32" || text == "float32") {
    *out = Target::Cast(DType::kF32);
    return Status::Ok();
  }
  if (text.empty()) {
    return Status(StatusCode::kInvalidArgument,
                  std::string("empty scheme name (expected one of: ") +
                      kTargetNamesHelp + ")");
  }
  QuantScheme scheme;
  scheme.scale_dtype = scale_dtype;
  Status st = ParseScheme(text, &scheme);
  if (!st.ok()) {
    // ParseScheme says what is wrong with the name; add the unquantized
    // targets it does not know about.
    return Status(StatusCode::kInvalidArgument,
                  st.message() + "; or keep, fp16, bf16, fp32");
  }
  if (IsGgml(scheme)) {
    // GGUF block types are only written into GGUF files (issue 4), never
    // into compressed-tensors output.
    return Status(StatusCode::kInvalidArgument,
                  "'" + text +
                      "' is a GGUF block type: it applies to GGUF output "
                      "only; for safetensors use int8, int4-gN, keep, fp16, "
                      "bf16 or fp32");
  }
  if (scheme.bits == 4 && Int4NameHasNoGroup(text)) {
    if (!IsValidGroupSize(default_group_size)) {
      return Status(StatusCode::kInvalidArgument,
                    "group size must be 32, 64, 128 or 256, got " +
                        std::to_string(default_group_size));
    }
    scheme.group_size = default_group_size;
  }
  *out = Target::Quantize(scheme);
  return Status::Ok();
}

}  // namespace nibble::tool
