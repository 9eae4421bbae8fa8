// `nibble convert IN OUT`: a safetensors checkpoint (file, model directory or
// sharded model directory) to a compressed-tensors model directory, with a
// per-layer error report. CLI11 is only used by AddConvertCommand.
#ifndef NIBBLE_TOOLS_CONVERT_H_
#define NIBBLE_TOOLS_CONVERT_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace nibble::tool {

struct ConvertOptions {
  std::string input;
  std::string output;
  std::string config;
  std::string scheme;
  std::optional<int64_t> group_size;
  std::vector<std::string> keep;
  std::vector<std::string> tensor_type;
  bool strict = false;
  bool dry_run = false;
  int threads = 0;  // 0: all cores
  bool force = false;
  std::string max_shard_size = "5GB";
  std::string report_path;
  std::string csv_path;
  bool quiet = false;
  std::string isa;  // empty: the global --isa
  int top = 20;     // table rows
};

// Adds the `convert` subcommand to `app`; options are stored in *o.
CLI::App* AddConvertCommand(CLI::App* app, ConvertOptions* o);

// Runs the conversion. Returns the exit code (0 ok, 1 usage, 2 bad input,
// 3 I/O, 4 internal); on failure *error is the one-line message. Nothing is
// left under OUT, nor any temporary, when it fails.
int RunConvert(const ConvertOptions& o, const std::string& global_isa,
               std::string* error);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_CONVERT_H_
