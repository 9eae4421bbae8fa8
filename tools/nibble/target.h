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
// names; `*out` is unchanged on error. While CurrentTargetFormat() is kGguf
// this is ParseGgufTarget(text, out) (below).
Status ParseTarget(const std::string& text, int64_t default_group_size,
                   DType scale_dtype, Target* out);

// The list of accepted target names, for messages and --help.
extern const char kTargetNamesHelp[];

// Which output format target names are parsed for. Compressed-tensors
// (safetensors output, the default) takes the names above and refuses the
// GGUF block types; GGUF output takes q8_0, q4_0, q4_1 (llama.cpp's block
// types, any letter case), f16, bf16, f32 (and their aliases above) and keep,
// and refuses the compressed-tensors schemes (int8, int4-g128, ...), so that
// a config file or --tensor-type written for one format fails on the other
// with the rule's position rather than doing something else.
//
// The format is process-wide because the config parser (config.h) checks
// scheme names through ParseTarget as it reads the file: `nibble convert`
// sets it once, on the main thread, before it parses any option or config
// (ScopedTargetFormat), and nothing parses target names concurrently.
enum class TargetFormat : uint8_t { kCompressedTensors, kGguf };
TargetFormat CurrentTargetFormat();

// Sets the format for its lifetime and restores the previous one.
class ScopedTargetFormat {
 public:
  explicit ScopedTargetFormat(TargetFormat format);
  ~ScopedTargetFormat();
  ScopedTargetFormat(const ScopedTargetFormat&) = delete;
  ScopedTargetFormat& operator=(const ScopedTargetFormat&) = delete;

 private:
  TargetFormat previous_;
};

// ParseTarget under TargetFormat::kGguf (whatever the current format):
// "keep", "f16"/"fp16"/"float16", "bf16"/"bfloat16", "f32"/"fp32"/"float32",
// "q8_0", "q4_0", "q4_1" (case-insensitive). kInvalidArgument naming the text
// otherwise; `*out` is unchanged on error.
Status ParseGgufTarget(const std::string& text, Target* out);

// The GGUF name of a target: "q8_0", "q4_0", "q4_1", "f16", "bf16", "f32"
// or "keep".
std::string GgufTargetName(const Target& target);

// The accepted GGUF target names, for messages and --help.
extern const char kGgufTargetNamesHelp[];

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_TARGET_H_
