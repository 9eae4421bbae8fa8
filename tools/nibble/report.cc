#include "report.h"

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "nibble/types.h"

namespace nibble::tool {
namespace {

__attribute__((format(printf, 1, 2))) std::string Format(const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  const int n = std::vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  if (n < 0) return "?";
  return std::string(buf, static_cast<size_t>(n) < sizeof(buf)
                              ? static_cast<size_t>(n)
                              : sizeof(buf) - 1);
}

// Finite numbers as given; inf/nan spelled out (printf already does, but
// keep it explicit for the CSV, whose readers expect these words).
std::string Num(const char* fmt, double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return Format(fmt, v);
}

double GbPerSecond(const RunInfo& info, const SchemeResult& r) {
  if (r.seconds <= 0) return std::nan("");
  return static_cast<double>(info.input_bytes) / r.seconds / 1e9;
}

double Ratio(const RunInfo& info, const SchemeResult& r) {
  return r.total_bytes() > 0
             ? static_cast<double>(info.input_bytes) /
                   static_cast<double>(r.total_bytes())
             : std::nan("");
}

nlohmann::ordered_json Finite(double v) {
  return std::isfinite(v) ? nlohmann::ordered_json(v)
                          : nlohmann::ordered_json(nullptr);
}

struct Column {
  const char* header;
  bool left;  // left-aligned text; numbers are right-aligned
};

}  // namespace

void PrintTable(std::ostream& os, const RunInfo& info,
                const std::vector<SchemeResult>& results) {
  os << "nibble " << info.version << " | isa " << info.isa << " ("
     << info.isa_source << ") | " << info.threads
     << (info.threads == 1 ? " thread" : " threads") << "\n";
  os << "input: " << info.rows << " x " << info.cols << " " << info.dtype
     << ", " << info.distribution << " (std " << Format("%g", info.std)
     << ", seed " << info.seed << "), "
     << Format("%.2f", static_cast<double>(info.input_bytes) / 1e6)
     << " MB; scales " << info.scale_dtype;
  if (info.repeat > 1) os << "; best of " << info.repeat << " runs";
  os << "\n\n";

  const std::vector<Column> columns = {
      {"scheme", true},   {"bits/w", false},      {"size MB", false},
      {"ratio", false},   {"RMSE", false},        {"max abs err", false},
      {"SNR dB", false},  {"cosine", false},      {"rel Frob", false},
      {"time ms", false}, {"GB/s", false}};
  std::vector<std::vector<std::string>> cells;
  for (const SchemeResult& r : results) {
    const ErrorMetrics& m = r.metrics;
    cells.push_back({
        r.name,
        Num("%.3f", r.bits_per_weight),
        Num("%.2f", static_cast<double>(r.total_bytes()) / 1e6),
        Num("%.2f", Ratio(info, r)) + "x",
        Num("%.3e", m.rmse),
        Num("%.3e", m.max_abs_error),
        Num("%.2f", m.snr_db),
        Num("%.6f", m.cosine),
        Num("%.5f", m.rel_frobenius),
        Num("%.1f", r.seconds * 1e3),
        Num("%.2f", GbPerSecond(info, r)),
    });
  }
  std::vector<size_t> width(columns.size());
  for (size_t c = 0; c < columns.size(); ++c) {
    width[c] = std::string(columns[c].header).size();
    for (const auto& row : cells) width[c] = std::max(width[c], row[c].size());
  }
  auto emit = [&](const std::vector<std::string>& row) {
    std::string line;
    for (size_t c = 0; c < columns.size(); ++c) {
      if (c > 0) line += "  ";
      const std::string pad(width[c] - row[c].size(), ' ');
      line += columns[c].left ? row[c] + pad : pad + row[c];
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    os << line << "\n";
  };
  std::vector<std::string> header;
  for (const Column& c : columns) header.emplace_back(c.header);
  emit(header);
  for (const auto& row : cells) emit(row);
}

void WriteJson(std::ostream& os, const RunInfo& info,
               const std::vector<SchemeResult>& results) {
  nlohmann::ordered_json j;
  j["nibble_version"] = info.version;
  j["isa"] = info.isa;
  j["isa_source"] = info.isa_source;
  j["threads"] = info.threads;
  j["repeat"] = info.repeat;
  j["input"] = {{"rows", info.rows},
                {"cols", info.cols},
                {"dtype", info.dtype},
                {"distribution", info.distribution},
                {"std", info.std},
                {"seed", info.seed},
                {"bytes", info.input_bytes}};
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  for (const SchemeResult& r : results) {
    const ErrorMetrics& m = r.metrics;
    rows.push_back({
        {"scheme", r.name},
        {"bits", r.scheme.bits},
        {"group_size", r.scheme.group_size},
        {"symmetric", r.scheme.symmetric},
        {"scale_dtype", DTypeName(r.scheme.scale_dtype)},
        {"bits_per_weight", Finite(r.bits_per_weight)},
        {"codes_bytes", r.codes_bytes},
        {"scales_bytes", r.scales_bytes},
        {"zero_point_bytes", r.zero_point_bytes},
        {"total_bytes", r.total_bytes()},
        {"compression_ratio", Finite(Ratio(info, r))},
        {"count", m.count},
        {"mse", Finite(m.mse)},
        {"rmse", Finite(m.rmse)},
        {"max_abs_error", Finite(m.max_abs_error)},
        {"snr_db", Finite(m.snr_db)},
        {"cosine", Finite(m.cosine)},
        {"rel_frobenius", Finite(m.rel_frobenius)},
        {"time_ms", Finite(r.seconds * 1e3)},
        {"gb_per_s", Finite(GbPerSecond(info, r))},
    });
  }
  j["results"] = std::move(rows);
  os << j.dump(2) << "\n";
}

void WriteCsv(std::ostream& os, const RunInfo& info,
              const std::vector<SchemeResult>& results) {
  os << "scheme,bits,group_size,symmetric,scale_dtype,bits_per_weight,"
        "codes_bytes,scales_bytes,zero_point_bytes,total_bytes,"
        "compression_ratio,count,mse,rmse,max_abs_error,snr_db,cosine,"
        "rel_frobenius,time_ms,gb_per_s,isa,threads,rows,cols,dtype\n";
  for (const SchemeResult& r : results) {
    const ErrorMetrics& m = r.metrics;
    os << r.name << ',' << r.scheme.bits << ',' << r.scheme.group_size << ','
       << (r.scheme.symmetric ? "true" : "false") << ','
       << DTypeName(r.scheme.scale_dtype) << ','
       << Num("%.17g", r.bits_per_weight) << ',' << r.codes_bytes << ','
       << r.scales_bytes << ',' << r.zero_point_bytes << ','
       << r.total_bytes() << ',' << Num("%.17g", Ratio(info, r)) << ','
       << m.count << ',' << Num("%.17g", m.mse) << ','
       << Num("%.17g", m.rmse) << ',' << Num("%.17g", m.max_abs_error) << ','
       << Num("%.17g", m.snr_db) << ',' << Num("%.17g", m.cosine) << ','
       << Num("%.17g", m.rel_frobenius) << ','
       << Num("%.17g", r.seconds * 1e3) << ','
       << Num("%.17g", GbPerSecond(info, r)) << ',' << info.isa << ','
       << info.threads << ',' << info.rows << ',' << info.cols << ','
       << info.dtype << "\n";
  }
}

}  // namespace nibble::tool
