#include "nibble/scheme.h"

#include <cstdlib>
#include <string>

namespace nibble {
namespace {

bool ValidGroupSize(int64_t g) {
  return g == 0 || g == 32 || g == 64 || g == 128 || g == 256;
}

constexpr int64_t kGgmlBlock = 32;

}  // namespace

QuantScheme GgmlQ8_0() {
  return QuantScheme{8, true, kGgmlBlock, DType::kF16, SchemeFamily::kGgml};
}
QuantScheme GgmlQ4_0() {
  return QuantScheme{4, true, kGgmlBlock, DType::kF16, SchemeFamily::kGgml};
}
QuantScheme GgmlQ4_1() {
  return QuantScheme{4, false, kGgmlBlock, DType::kF16, SchemeFamily::kGgml};
}

bool IsGgml(const QuantScheme& s) { return s.family == SchemeFamily::kGgml; }
bool HasZeroPoints(const QuantScheme& s) { return !s.symmetric && !IsGgml(s); }
bool HasOffsets(const QuantScheme& s) { return !s.symmetric && IsGgml(s); }

Status ValidateScheme(const QuantScheme& s, int64_t cols) {
  if (s.family != SchemeFamily::kNibble && s.family != SchemeFamily::kGgml) {
    return Status(
        StatusCode::kInvalidArgument,
        "unknown scheme family " + std::to_string(static_cast<int>(s.family)));
  }
  if (IsGgml(s)) {
    if ((s.bits != 4 && s.bits != 8) || (s.bits == 8 && !s.symmetric)) {
      return Status(StatusCode::kInvalidArgument,
                    "GGML schemes are q8_0 (8 bits, symmetric), q4_0 (4 bits, "
                    "symmetric) and q4_1 (4 bits, asymmetric), got " +
                        std::to_string(s.bits) + " bits " +
                        (s.symmetric ? "symmetric" : "asymmetric"));
    }
    if (s.group_size != kGgmlBlock) {
      return Status(StatusCode::kInvalidArgument,
                    SchemeName(s) +
                        " has blocks of 32 columns, got group size " +
                        std::to_string(s.group_size));
    }
    if (s.scale_dtype != DType::kF16) {
      return Status(StatusCode::kInvalidArgument,
                    SchemeName(s) + " stores F16 scales, got " +
                        DTypeName(s.scale_dtype));
    }
    if (cols <= 0 || cols % kGgmlBlock != 0) {
      return Status(StatusCode::kInvalidArgument,
                    "column count " + std::to_string(cols) +
                        " is not a positive multiple of " + SchemeName(s) +
                        "'s block of 32");
    }
    return Status::Ok();
  }
  if (s.bits != 4 && s.bits != 8) {
    return Status(StatusCode::kInvalidArgument,
                  "bits must be 4 or 8, got " + std::to_string(s.bits));
  }
  if (!ValidGroupSize(s.group_size)) {
    return Status(StatusCode::kInvalidArgument,
                  "group size must be 32, 64, 128, 256 or 0 (whole row), got " +
                      std::to_string(s.group_size));
  }
  if (cols <= 0) {
    return Status(StatusCode::kInvalidArgument,
                  "column count must be positive, got " + std::to_string(cols));
  }
  if (s.group_size != 0 && cols % s.group_size != 0) {
    return Status(StatusCode::kInvalidArgument,
                  "column count " + std::to_string(cols) +
                      " is not a multiple of the group size " +
                      std::to_string(s.group_size) +
                      " (use a smaller group or per-row quantization)");
  }
  return Status::Ok();
}

int64_t GroupLength(const QuantScheme& s, int64_t cols) {
  return s.group_size == 0 ? cols : s.group_size;
}

int64_t GroupsPerRow(const QuantScheme& s, int64_t cols) {
  const int64_t g = GroupLength(s, cols);
  return g > 0 ? cols / g : 0;
}

int64_t CodeBytesPerRow(const QuantScheme& s, int64_t cols) {
  return s.bits == 8 ? cols : (cols + 1) / 2;
}

double BitsPerWeight(const QuantScheme& s, int64_t cols) {
  if (cols <= 0) return 0.0;
  // Asymmetric groups carry a zero point (8 bits) or, Q4_1, an F16 offset.
  const double per_group = 8.0 * static_cast<double>(DTypeSize(s.scale_dtype)) +
                           (s.symmetric ? 0 : (IsGgml(s) ? 16 : 8));
  return 8.0 * static_cast<double>(CodeBytesPerRow(s, cols)) / cols +
         per_group * static_cast<double>(GroupsPerRow(s, cols)) / cols;
}

std::string SchemeName(const QuantScheme& s) {
  if (IsGgml(s)) {
    if (s.bits == 8 && s.symmetric) return "q8_0";
    if (s.bits == 4) return s.symmetric ? "q4_0" : "q4_1";
    return "ggml-invalid";  // rejected by ValidateScheme
  }
  std::string name = s.bits == 8 ? "int8" : "int4";
  if (s.group_size == 0) {
    if (s.bits == 4) name += "-row";
  } else {
    name += "-g" + std::to_string(s.group_size);
  }
  if (!s.symmetric) name += "-asym";
  return name;
}

Status ParseScheme(const std::string& text, QuantScheme* out) {
  auto bad = [&](const std::string& why) {
    return Status(StatusCode::kInvalidArgument,
                  "unknown scheme '" + text + "': " + why +
                      " (expected e.g. int8, int8-asym, int8-g32, int4, "
                      "int4-g32, int4-g128-asym, int4-row, q8_0, q4_0, "
                      "q4_1)");
  };
  if (text == "q8_0" || text == "q4_0" || text == "q4_1") {
    *out = text == "q8_0"   ? GgmlQ8_0()
           : text == "q4_0" ? GgmlQ4_0()
                            : GgmlQ4_1();
    return Status::Ok();
  }
  QuantScheme s;
  std::string rest;
  if (text.rfind("int8", 0) == 0) {
    s.bits = 8;
    s.group_size = 0;
    rest = text.substr(4);
  } else if (text.rfind("int4", 0) == 0) {
    s.bits = 4;
    s.group_size = 128;
    rest = text.substr(4);
  } else {
    return bad("it does not start with int8 or int4 and is not a GGML type");
  }
  while (!rest.empty()) {
    if (rest[0] != '-') return bad("expected '-' before '" + rest + "'");
    const size_t end = rest.find('-', 1);
    const std::string part = rest.substr(1, end == std::string::npos ? end : end - 1);
    rest = end == std::string::npos ? "" : rest.substr(end);
    if (part == "asym") {
      s.symmetric = false;
    } else if (part == "sym") {
      s.symmetric = true;
    } else if (part == "row" || part == "channel") {
      s.group_size = 0;
    } else if (part.size() > 1 && part[0] == 'g' && part[1] != '0' &&
               part.find_first_not_of("0123456789", 1) == std::string::npos &&
               part.size() <= 5) {
      s.group_size = std::strtol(part.c_str() + 1, nullptr, 10);
      if (!ValidGroupSize(s.group_size) || s.group_size == 0)
        return bad("group size must be 32, 64, 128 or 256");
    } else {
      return bad("unknown part '" + part + "'");
    }
  }
  s.scale_dtype = out->scale_dtype;
  *out = s;
  return Status::Ok();
}

}  // namespace nibble
