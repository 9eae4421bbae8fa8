// `nibble convert IN.gguf OUT.gguf --scheme q4_0|q4_1|q8_0|f16|bf16|f32`:
// a GGUF model to a GGUF model, the way llama-quantize does it for the types
// nibble shares with llama.cpp (kGgufConvertHelp states the rules), with the
// same rules, plan, report and output safety as the safetensors conversion
// (convert.h). CLI11 is not used here; RunConvert (convert.cc) dispatches.
#ifndef NIBBLE_TOOLS_NIBBLE_GGUF_CONVERT_H_
#define NIBBLE_TOOLS_NIBBLE_GGUF_CONVERT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "config.h"
#include "convert.h"
#include "nibble/io/gguf.h"
#include "nibble/status.h"
#include "plan.h"

namespace nibble::tool {

// What `convert --help` says about GGUF input and output.
extern const char kGgufConvertHelp[];

// The llama_ftype values llama.cpp stores in general.file_type.
enum class LlamaFileType : uint32_t {
  kAllF32 = 0,
  kMostlyF16 = 1,
  kMostlyQ4_0 = 2,
  kMostlyQ4_1 = 3,
  kMostlyQ8_0 = 7,
  kMostlyBF16 = 32,
};
// GGML_QNT_VERSION: llama-quantize's general.quantization_version.
inline constexpr uint32_t kGgmlQuantizationVersion = 2;

// Whether `o` converts a GGUF file. IN is GGUF when it is a regular file
// that starts with the magic "GGUF", or when it is not a directory and its
// name ends in ".gguf" (any letter case; the GGUF reader then reports what is
// wrong with it: a wrong magic, too short, missing). OUT is GGUF when its name
// ends in ".gguf" (any letter case). Throws ToolError (exit 1) naming both
// when exactly one of them is GGUF: nibble converts GGUF to GGUF and
// safetensors to compressed-tensors only.
bool IsGgufConversion(const ConvertOptions& o);

// The plan of a GGUF conversion: for every tensor of the input, in file
// order, what is written (plan.tensors[i].target, its GGUF type
// `types[i]`), and the metadata changes.
struct GgufPlan {
  // Names, ne order shapes ("[576, 49152]": ne[0], the row length, first, as
  // gguf-py and llama.cpp print them), GGML type names as `dtype`, targets
  // named as GGUF types, bytes, reasons, warnings and totals.
  Plan plan;
  std::vector<io::GgmlType> types;  // the output type of each tensor
  // general.file_type to set (with general.quantization_version = 2); not
  // set when the default target is `keep` (the metadata is then copied
  // unchanged).
  bool set_file_type = false;
  LlamaFileType file_type = LlamaFileType::kMostlyQ8_0;
};

// Decides every tensor of `tensors` (a validated file's, in file order) from
// `rules` (parsed under TargetFormat::kGguf; its default target is the
// requested type). Errors as BuildPlan: kInvalidArgument naming the tensor or
// rule; under rules.strict every warning but shadowed rules. On error *out
// holds the warnings for printing.
Status BuildGgufPlan(const RuleSet& rules,
                     const std::vector<io::GgufTensorInfo>& tensors,
                     GgufPlan* out);

// The whole GGUF conversion (IsGgufConversion(o) must be true). Returns 0 or
// throws ToolError with the exit code; nothing exists under OUT, nor any
// temporary, after a failure or an interruption.
int ConvertGguf(const ConvertOptions& o, const std::string& global_isa);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_GGUF_CONVERT_H_
