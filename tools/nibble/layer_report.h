// The per-layer error report shared by `nibble convert` and `nibble report`:
// one row per tensor (name, shape, scheme, bits per weight, bytes, error
// metrics), totals, and the three ways of printing them (an aligned table
// sorted by worst SNR, JSON, CSV).
#ifndef NIBBLE_TOOLS_NIBBLE_LAYER_REPORT_H_
#define NIBBLE_TOOLS_NIBBLE_LAYER_REPORT_H_

#include <cstdint>
#include <limits>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "nibble/metrics.h"

namespace nibble::tool {

// One tensor of the report. Kept and cast tensors have quantized = false;
// a kept tensor has zero error (snr_db = +inf, cosine = 1).
struct LayerRow {
  std::string name;
  std::vector<int64_t> shape;
  int64_t params = 0;
  std::string scheme;          // target name: int4-g128, int8, keep, fp16...
  double bits_per_weight = 0;  // stored bits (scales, zero points included)
  int64_t bytes_in = 0;
  int64_t bytes_out = 0;
  bool quantized = false;
  ErrorMetrics m;
};

// A row for a tensor stored unchanged.
LayerRow KeptRow(std::string name, std::vector<int64_t> shape, int64_t params,
                 int64_t bytes, double bits_per_weight);

struct LayerTotals {
  int64_t tensors = 0, quantized = 0, params = 0;
  int64_t params_quantized = 0;  // of quantized tensors with a finite SNR
  int64_t bytes_in = 0, bytes_out = 0;
  // Parameter-weighted mean SNR of the quantized tensors with a finite SNR
  // (NaN if none).
  double mean_snr_db = std::numeric_limits<double>::quiet_NaN();
  std::string worst;  // quantized tensor with the lowest SNR ("" if none)
  double worst_snr_db = std::numeric_limits<double>::quiet_NaN();
  double compression_ratio() const {
    return bytes_out > 0
               ? static_cast<double>(bytes_in) / static_cast<double>(bytes_out)
               : 0.0;
  }
};

LayerTotals ComputeTotals(const std::vector<LayerRow>& rows);

// "1.23 GB", "4.56 MB", "7.8 kB", "9 B" (decimal units).
std::string HumanBytes(double bytes);

// The aligned table: the `top` rows with the lowest SNR (exact tensors last,
// in input order), a "... N more" line, and the summary line.
void PrintLayerTable(std::ostream& os, const std::vector<LayerRow>& rows,
                     const LayerTotals& t, int top);
// The summary line alone (ends in a newline).
std::string TotalsLine(const LayerTotals& t);

// JSON: {name, shape, params, scheme, bits_per_weight, bytes_in, bytes_out,
// rmse, max_abs_error, snr_db, cosine}; non-finite numbers become null.
nlohmann::ordered_json LayerRowJson(const LayerRow& r);
nlohmann::ordered_json LayerTotalsJson(const LayerTotals& t);
// CSV with a header line; the same columns as the JSON rows, shape as
// "4096x11008", an infinite SNR as an empty field.
std::string LayerCsv(const std::vector<LayerRow>& rows);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_NIBBLE_LAYER_REPORT_H_
