// `nibble inspect MODEL`: what a checkpoint holds and how much memory it
// needs, from the headers alone (no tensor byte is read).
//
// For a safetensors file, model directory or sharded model directory (read
// by io::Checkpoint, strictly) or a GGUF file (io::GgufFile): parameters in
// total and per class (matrices, embeddings + output head, biases, norms,
// other), counts per dtype, tensor bytes on disk, the largest tensors; the
// bytes of the whole model stored as it is, at FP32 and FP16/BF16, and as
// `nibble convert --scheme S` would write it for INT8 per channel and INT4
// with groups of 32/64/128 (symmetric and asymmetric; GGUF input also
// q8_0/q4_0/q4_1), with bits per weight and a runtime band (weights x 1.2 to
// x 1.4); the FP16 KV cache for --context and --batch when config.json or
// the GGUF metadata gives the attention shape; and, with --gpu SIZE, whether
// each scheme fits. kInspectHelp states exactly what is counted. CLI11 is
// only used by AddInspectCommand.
#ifndef NIBBLE_TOOLS_NIBBLE_INSPECT_H_
#define NIBBLE_TOOLS_NIBBLE_INSPECT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "nibble/io/checkpoint.h"

namespace CLI {
class App;
}

namespace nibble::tool {

struct InspectOptions {
  std::string input;
  std::string json_path;           // '-': stdout (then no table)
  std::optional<int64_t> context;  // tokens; default: the model's maximum
  int64_t batch = 1;               // sequences
  std::string gpu;                 // "24GB", "80GiB"; empty: no fit check
  int top = 5;                     // largest tensors listed
};

// Adds the `inspect` subcommand to `app`; options are stored in *o.
CLI::App* AddInspectCommand(CLI::App* app, InspectOptions* o);

// Runs it. Returns the exit code (0 ok, 1 usage, 2 bad input, 3 I/O,
// 4 internal); on failure *error is the one-line message. The --json path is
// checked for writing before the model is read and written (through a
// temporary file renamed into place) only when everything succeeded.
int RunInspect(const InspectOptions& o, std::string* error);

// The pieces of the estimate that `nibble plan --gpu` shares, so that both
// commands count the same bytes.

// True for the safetensors dtypes of buffers, not parameters: integers and
// BOOL (position_ids, ...). Parameters (and bits per weight) count every
// other tensor's elements.
bool IsBufferDType(std::string_view safetensors_dtype);

// A size option ("24GB", "80GiB", "16000MB"): ParseSize (output_dir.h) with
// `option` named in its messages (ToolError, exit 1).
uint64_t ParseSizeOption(const std::string& option, const std::string& text);

// Checks --context (1 to 2^32 tokens, when given) and --batch (1 to 2^20):
// ToolError (exit 1) naming the option otherwise.
void CheckKvOptions(const std::optional<int64_t>& context, int64_t batch);

// The KV cache at FP16 of a safetensors checkpoint, as inspect prints it:
// layers x KV heads x (K + V head dim) x 2 bytes x context x batch, the shape
// from the config.json of a model directory; context: `context`, else the
// model's max_position_embeddings, else 4096.
struct KvCacheEstimate {
  bool known = false;
  std::string why_unknown;  // when !known
  std::string source;       // the config.json (text_config) it comes from
  int64_t context = 0;
  std::string context_source;  // "--context", the config key, or default
  int64_t batch = 1;
  int64_t bytes = 0;  // when known
};
// Errors: ToolError (exit 2) for a bad config.json, naming it and the key;
// (exit 3) when it cannot be read. Call CheckKvOptions first.
KvCacheEstimate EstimateKvCache(const io::Checkpoint& ckpt,
                                const std::optional<int64_t>& context,
                                int64_t batch);

// The upper end of inspect's runtime band: weights + 40% rounded up to a
// byte (inspect's `need` without the KV cache). Exact for 0 <= weight_bytes
// <= INT64_MAX / 2.
int64_t RuntimeHighBytes(int64_t weight_bytes);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_INSPECT_H_
