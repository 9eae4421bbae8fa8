// Target: what `nibble convert` does with one tensor.
//
// A target is either a quantization scheme (nibble::QuantScheme: int8,
// int4-g128, int4-g64-asym, ...) or "store unquantized": keep the tensor's
// dtype ("keep") or cast it to fp16, bf16 or fp32. One canonical name per
// target is used everywhere: on the command line, in config files and in
// reports.
#ifndef NIBBLE_TOOLS_TARGET_H_
#define NIBBLE_TOOLS_TARGET_H_

#include <cstdint>
#include <string>

#include "nibble/scheme.h"
#include "nibble/status.h"
#include "nibble/types.h"

namespace nibble::tool {

enum class TargetKind : uint8_t {
  kKeep,      // copy the tensor through unchanged
  kCast,      // store unquantized in `cast_dtype`
  kQuantize,  // quantize with `scheme`
};

struct Target {
  TargetKind kind = TargetKind::kKeep;
  QuantScheme scheme;              // meaningful for kQuantize only
  DType cast_dtype = DType::kF16;  // meaningful for kCast only

  static Target Keep() { return Target(); }
  static Target Cast(DType dtype) {
    Target t;
    t.kind = TargetKind::kCast;
    t.cast_dtype = dtype;
    return t;
  }
  static Target Quantize(const QuantScheme& scheme) {
    Target t;
    t.kind = TargetKind::kQuantize;
    t.scheme = scheme;
    return t;
  }
  bool quantized() const { return kind == TargetKind::kQuantize; }
};

// Group sizes a config or --group-size may name (vLLM's Marlin kernels take
// 32, 64 and 128; 256 loads only on slower kernels).
bool IsValidGroupSize(int64_t group_size);

// Canonical name: SchemeName() for schemes ("int8", "int4-g128",
// "int4-g64-asym"), else "keep", "fp16", "bf16" or "fp32". The scale dtype is
// not part of the name. Two targets with the same name store a tensor the
// same way (up to the scale dtype).
std::string TargetName(const Target& target);

// Parses a target name. Accepted: "keep"; "fp16"/"f16"/"float16",
// "bf16"/"bfloat16", "fp32"/"f32"/"float32"; and every name ParseScheme
// takes. An int4 name without a group part ("int4", "int4-asym") gets
// `default_group_size` (one of IsValidGroupSize's sizes); every other name is
// taken as written ("int8" is per channel). The scheme's scale dtype is set
// to `scale_dtype`. Returns kInvalidArgument naming the text and the accepted
// names; `*out` is unchanged on error.
Status ParseTarget(const std::string& text, int64_t default_group_size,
                   DType scale_dtype, Target* out);

// The list of accepted target names, for messages and --help.
extern const char kTargetNamesHelp[];

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_TARGET_H_
