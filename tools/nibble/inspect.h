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

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_INSPECT_H_
