// The quantization plan: what `nibble convert` does with each tensor of a
// checkpoint, why, and how many bytes it takes before and after.
//
// The plan depends only on tensor names, dtypes and shapes (it reads no
// weights), so `--dry-run` prints it without touching the data and `convert`
// and `report` follow it. kPlanDefaultsHelp states the rules for --help.
#ifndef NIBBLE_TOOLS_PLAN_H_
#define NIBBLE_TOOLS_PLAN_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "config.h"
#include "nibble/scheme.h"
#include "nibble/status.h"
#include "target.h"

namespace nibble::tool {

// What --help prints about the plan's defaults and rules.
extern const char kPlanDefaultsHelp[];

// One tensor of a checkpoint as its header describes it. `dtype` is the
// safetensors dtype string (F32, F16, BF16, I64, F8_E4M3, ...).
struct TensorInfo {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
};

// Bits per element of a safetensors dtype (F4 = 4, F6_* = 6, BOOL = 8);
// 0 when the name is unknown.
int SafetensorsDTypeBits(std::string_view dtype);
// True for the dtypes nibble can quantize or cast: F32, F16, BF16.
bool IsQuantizableDType(std::string_view dtype, DType* out = nullptr);

// Bytes of one quantized [rows, cols] weight in the compressed-tensors
// pack-quantized layout (formats.md):
//   weight_packed      I32 [rows, ceil(cols * bits / 32)]
//   weight_scale       scale dtype [rows, groups per row]
//   weight_zero_point  I32 [ceil(rows / 8), groups per row] (asymmetric only)
//   weight_shape       I64 [2] = 16 bytes
struct QuantizedBytes {
  int64_t packed = 0;
  int64_t scale = 0;
  int64_t zero_point = 0;
  int64_t shape = 16;
  int64_t total = 0;
};
// Returns kInvalidArgument when the scheme does not fit cols (ValidateScheme)
// or a size overflows int64.
Status ComputeQuantizedBytes(const QuantScheme& scheme, int64_t rows,
                             int64_t cols, QuantizedBytes* out);

// The decision for one tensor.
struct TensorPlan {
  std::string name;
  std::string dtype;  // safetensors dtype of the input
  std::vector<int64_t> shape;
  // kQuantize: the scheme (scale dtype resolved); kCast: the dtype to store;
  // kKeep: copy the bytes through.
  Target target;
  // The target as RenderPlan shows it; empty: TargetName(target). (GGUF
  // plans name their targets as GGUF types: q4_0, f16, keep.)
  std::string target_name;
  int rule = -1;       // index into RuleSet::rules that decided; -1: none
  std::string reason;  // one phrase: the rule, the default, or why kept
  int64_t params = 0;  // elements
  int64_t bytes_before = 0;
  int64_t bytes_after = 0;  // all output tensors of this one (quantized: sum)
};

struct PlanTotals {
  int64_t tensors = 0;
  int64_t quantized = 0;
  int64_t cast = 0;
  int64_t kept = 0;
  int64_t params = 0;
  int64_t params_quantized = 0;
  int64_t bytes_before = 0;
  int64_t bytes_after = 0;
};

struct Plan {
  std::vector<TensorPlan> tensors;  // in input order
  // One line each: rules that match nothing or are shadowed, columns that do
  // not fit the group size, fused layers split by rules, quantized embeddings.
  std::vector<std::string> warnings;
  PlanTotals totals;
};

// Builds the plan. Errors (kInvalidArgument, naming the tensor or rule):
// a duplicate tensor name, a negative dimension, an element count or byte size
// that overflows, an unknown dtype, a rule asking to quantize or cast a 2-D
// `.weight` whose dtype is not F32/F16/BF16; under `rules.strict`, every
// warning except shadowed rules and quantized embeddings. On error *out still
// holds the tensors decided so far and the warnings, for printing.
Status BuildPlan(const RuleSet& rules, const std::vector<TensorInfo>& tensors,
                 Plan* out);

// "[4096, 11008]"; "[]" for a scalar.
std::string FormatShape(const std::vector<int64_t>& shape);

// True for token/position embedding tensors (a dotted name part equal to
// embed_tokens, wte, wpe, word_embeddings, tok_embeddings, embeddings, or
// ending in _embeddings): the rule the plan's defaults use.
bool IsEmbeddingName(std::string_view name);

// The --dry-run text: one aligned row per tensor (name, shape, dtype, target,
// bytes before -> after, reason), the warnings, and the totals line.
std::string RenderPlan(const Plan& plan);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_PLAN_H_
