// `nibble report IN --scheme int8,int4-g128,int4-g32`: quantizes a
// checkpoint in memory with several schemes and prints their errors side by
// side, per layer; nothing is written but the optional --json/--csv files.
//
// For each scheme S of the list, the plan is the one `nibble convert IN OUT
// --scheme S` with the same rule options (--config, --group-size, --keep,
// --tensor-type, --strict) builds, so config rules still apply: a tensor that
// a rule keeps or sends to int8 shows that target in every column. Each
// tensor is read once (in checkpoint order) and quantized with every scheme
// from the same mapped bytes by the fused kernels, which measure the error in
// the same pass; bits per weight, bytes and metrics equal what `nibble
// convert --scheme S --report` reports for that tensor. Memory: the mapped
// tensor and one scheme's quantized buffers at a time. CLI11 is only used by
// AddReportCommand.
#ifndef NIBBLE_TOOLS_NIBBLE_REPORT_CMD_H_
#define NIBBLE_TOOLS_NIBBLE_REPORT_CMD_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace nibble::tool {

inline constexpr char kReportDefaultSchemes[] = "int8,int4-g128,int4-g32";

struct ReportOptions {
  std::string input;
  std::string schemes = kReportDefaultSchemes;  // comma-separated targets
  std::string config;
  std::optional<int64_t> group_size;
  std::vector<std::string> keep;
  std::vector<std::string> tensor_type;
  bool strict = false;
  int threads = 0;        // 0: all cores
  std::string isa;        // empty: the global --isa
  std::string json_path;  // '-': stdout (then no table)
  std::string csv_path;   // '-': stdout (then no table)
  int top = 20;           // table rows
  bool quiet = false;
};

// Adds the `report` subcommand to `app`; options are stored in *o.
CLI::App* AddReportCommand(CLI::App* app, ReportOptions* o);

// Runs the comparison. Returns the exit code (0 ok, 1 usage, 2 bad input,
// 3 I/O, 4 internal); on failure *error is the one-line message. The
// --json/--csv paths are checked for writing before the checkpoint is read
// but only created (or truncated) once every tensor is measured: a failed or
// interrupted run leaves no report file behind and an existing one as it
// was.
int RunReport(const ReportOptions& o, const std::string& global_isa,
              std::string* error);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_REPORT_CMD_H_
