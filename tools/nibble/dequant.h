// `nibble dequant IN OUT --dtype f16|bf16|f32`: a compressed-tensors
// pack-quantized model directory (as `nibble convert` writes it) back to a
// plain safetensors model directory that any framework can load.
//
// Every quantized layer P (P.weight_packed, P.weight_scale,
// P.weight_zero_point when asymmetric, P.weight_shape) becomes P.weight in
// --dtype, written where the first of its parts was; every other
// floating-point tensor (F64, F32, F16, BF16) is converted to --dtype (round
// to nearest even; unchanged when already in it); every other tensor
// (integers, bool, FP8, ...) is copied unchanged. This is the rule of
// scripts/ct_decode.py, whose output equals ours bit for bit.
// config.json is copied without its quantization_config, the other side
// files unchanged. CLI11 is only used by AddDequantCommand.
#ifndef NIBBLE_TOOLS_DEQUANT_H_
#define NIBBLE_TOOLS_DEQUANT_H_

#include <string>

namespace CLI {
class App;
}

namespace nibble::tool {

struct DequantOptions {
  std::string input;
  std::string output;
  std::string dtype = "f32";
  int threads = 0;  // 0: all cores
  bool force = false;
  std::string max_shard_size = "5GB";
  bool quiet = false;
};

// Adds the `dequant` subcommand to `app`; options are stored in *o.
CLI::App* AddDequantCommand(CLI::App* app, DequantOptions* o);

// Runs it. Returns the exit code (0 ok, 1 usage, 2 bad input, 3 I/O,
// 4 internal); on failure *error is the one-line message and nothing is left
// under OUT (an existing OUT replaced with --force stays as it was).
int RunDequant(const DequantOptions& o, std::string* error);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_DEQUANT_H_
