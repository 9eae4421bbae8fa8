// What `nibble quantize` reports: one row per scheme, printed as an aligned
// table or written as JSON / CSV.
#ifndef NIBBLE_TOOLS_REPORT_H_
#define NIBBLE_TOOLS_REPORT_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "nibble/metrics.h"
#include "nibble/scheme.h"

namespace nibble::tool {

// Describes the input matrix and the run (the same for every row).
struct RunInfo {
  std::string version;
  std::string isa;         // resolved path, e.g. "avx512"
  std::string isa_source;  // "auto", "NIBBLE_ISA" or "--isa"
  int threads = 1;
  int64_t rows = 0;
  int64_t cols = 0;
  std::string dtype;         // input element type
  std::string distribution;  // "heavy", "gaussian"
  uint64_t seed = 0;
  double std = 0;
  int64_t input_bytes = 0;
  std::string scale_dtype;
  int repeat = 1;
};

struct SchemeResult {
  QuantScheme scheme;
  std::string name;  // SchemeName(scheme)
  double bits_per_weight = 0;
  int64_t codes_bytes = 0;
  int64_t scales_bytes = 0;
  int64_t zero_point_bytes = 0;
  int64_t total_bytes() const {
    return codes_bytes + scales_bytes + zero_point_bytes;
  }
  ErrorMetrics metrics;
  double seconds = 0;  // best of `repeat` fused quantize+measure passes
};

// Aligned, human-readable table (scheme, bits/weight, size, ratio, RMSE, max
// abs error, SNR, cosine, relative Frobenius error, time, GB/s).
void PrintTable(std::ostream& os, const RunInfo& info,
                const std::vector<SchemeResult>& results);
// One JSON object: {"nibble_version", "isa", ..., "input": {...},
// "results": [{"scheme", "bits_per_weight", ...}, ...]}. Non-finite numbers
// (the SNR of an exact reconstruction) are written as null.
void WriteJson(std::ostream& os, const RunInfo& info,
               const std::vector<SchemeResult>& results);
// A header line and one line per scheme; the column names are the JSON keys.
void WriteCsv(std::ostream& os, const RunInfo& info,
              const std::vector<SchemeResult>& results);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_REPORT_H_
