// The --report/--json and --csv destinations of convert and report.
#ifndef NIBBLE_TOOLS_NIBBLE_REPORT_FILES_H_
#define NIBBLE_TOOLS_NIBBLE_REPORT_FILES_H_

#include <string>
#include <vector>

#include "layer_report.h"

namespace nibble::tool {

// One report destination: a path, "-" for stdout (where allowed), or empty
// (disabled). CheckWritable() runs before the work starts, so that a bad
// path fails at once without changing anything there; the report is written
// at the end through WriteReports, under a temporary name renamed into
// place, so a failed or interrupted run neither leaves a file behind nor
// changes an existing one.
struct ReportDestination {
  std::string path;
  std::string text;  // what WriteReports writes
  bool enabled() const { return !path.empty(); }
  bool to_stdout() const { return path == "-"; }
  void CheckWritable() const;
};

// Writes every enabled destination's text: all temporaries first, then the
// renames, so an error while writing leaves every destination as it was.
// Throws ToolError (exit 3) naming the path.
void WriteReports(std::vector<ReportDestination*> destinations);

// The per-tensor report of `nibble convert` (safetensors or GGUF): the JSON
// document (nibble_version, input, output, tensors, totals) and the CSV
// rows, written to `json_path` / `csv_path` where given.
void WriteConvertReports(const std::string& json_path,
                         const std::string& csv_path,
                         const std::vector<LayerRow>& rows,
                         const LayerTotals& totals, const std::string& input,
                         const std::string& output);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_REPORT_FILES_H_
