// The per-layer error report: see layer_report.h.
#include "layer_report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "plan.h"

namespace nibble::tool {

LayerRow KeptRow(std::string name, std::vector<int64_t> shape, int64_t params,
                 int64_t bytes, double bits_per_weight) {
  LayerRow row;
  row.name = std::move(name);
  row.shape = std::move(shape);
  row.params = params;
  row.scheme = "keep";
  row.bits_per_weight = bits_per_weight;
  row.bytes_in = bytes;
  row.bytes_out = bytes;
  row.m.count = params;
  row.m.snr_db = std::numeric_limits<double>::infinity();
  row.m.cosine = 1;
  return row;
}

LayerTotals ComputeTotals(const std::vector<LayerRow>& rows) {
  LayerTotals t;
  double snr_weighted = 0;
  for (const LayerRow& r : rows) {
    ++t.tensors;
    t.params += r.params;
    t.bytes_in += r.bytes_in;
    t.bytes_out += r.bytes_out;
    if (!r.quantized) continue;
    ++t.quantized;
    if (std::isfinite(r.m.snr_db)) {
      t.params_quantized += r.params;
      snr_weighted += r.m.snr_db * static_cast<double>(r.params);
    }
    if (t.worst.empty() || r.m.snr_db < t.worst_snr_db) {
      t.worst = r.name;
      t.worst_snr_db = r.m.snr_db;
    }
  }
  if (t.params_quantized > 0)
    t.mean_snr_db = snr_weighted / static_cast<double>(t.params_quantized);
  return t;
}

std::string HumanBytes(double bytes) {
  char buf[64];
  if (bytes >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2f GB", bytes / 1e9);
  else if (bytes >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2f MB", bytes / 1e6);
  else if (bytes >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1f kB", bytes / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  return buf;
}

namespace {

// Worst SNR first; exact tensors (infinite SNR) last, in input order.
std::vector<const LayerRow*> SortedRows(const std::vector<LayerRow>& rows) {
  std::vector<const LayerRow*> out;
  for (const LayerRow& r : rows) out.push_back(&r);
  std::stable_sort(out.begin(), out.end(),
                   [](const LayerRow* a, const LayerRow* b) {
                     return a->m.snr_db < b->m.snr_db;
                   });
  return out;
}

std::string Snr(double snr_db) {
  if (!std::isfinite(snr_db)) return std::isnan(snr_db) ? "-" : "inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", snr_db);
  return buf;
}

nlohmann::ordered_json FiniteOrNull(double v) {
  if (std::isfinite(v)) return v;
  return nullptr;
}

// RFC 4180: quoted, inner quotes doubled.
std::string CsvQuoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string TotalsLine(const LayerTotals& t) {
  char line[1024];
  std::snprintf(
      line, sizeof line,
      "total: %lld tensors (%lld quantized), %lld params, %s -> %s "
      "(%.2fx), mean SNR %s dB (param-weighted), worst %s (%s dB)\n",
      static_cast<long long>(t.tensors), static_cast<long long>(t.quantized),
      static_cast<long long>(t.params),
      HumanBytes(static_cast<double>(t.bytes_in)).c_str(),
      HumanBytes(static_cast<double>(t.bytes_out)).c_str(),
      t.compression_ratio(), Snr(t.mean_snr_db).c_str(),
      t.worst.empty() ? "-" : t.worst.c_str(), Snr(t.worst_snr_db).c_str());
  return line;
}

void PrintLayerTable(std::ostream& os, const std::vector<LayerRow>& rows,
                     const LayerTotals& t, int top) {
  const std::vector<const LayerRow*> sorted = SortedRows(rows);
  const size_t n =
      std::min<size_t>(sorted.size(), static_cast<size_t>(std::max(top, 0)));
  size_t name_w = 6;
  for (size_t i = 0; i < n; ++i)
    name_w = std::max(name_w, sorted[i]->name.size());
  std::string head = "tensor";
  head.resize(name_w + 1, ' ');
  char line[512];
  std::snprintf(line, sizeof line,
                "%-16s %-14s %6s %11s %11s %11s %11s %8s %9s\n", "shape",
                "scheme", "bits", "bytes_in", "bytes_out", "rmse", "max_abs",
                "snr_db", "cosine");
  os << head << line;
  for (size_t i = 0; i < n; ++i) {
    const LayerRow& r = *sorted[i];
    std::string name = r.name;
    name.resize(name_w + 1, ' ');
    std::snprintf(line, sizeof line,
                  "%-16s %-14s %6.3f %11lld %11lld %11.4g %11.4g %8s %9.6f\n",
                  FormatShape(r.shape).c_str(), r.scheme.c_str(),
                  r.bits_per_weight, static_cast<long long>(r.bytes_in),
                  static_cast<long long>(r.bytes_out), r.m.rmse,
                  r.m.max_abs_error, Snr(r.m.snr_db).c_str(), r.m.cosine);
    os << name << line;
  }
  if (sorted.size() > n)
    os << "... " << (sorted.size() - n) << " more tensors (see --report)\n";
  os << TotalsLine(t);
}

nlohmann::ordered_json LayerRowJson(const LayerRow& r) {
  nlohmann::ordered_json j;
  j["name"] = r.name;
  j["shape"] = r.shape;
  j["params"] = r.params;
  j["scheme"] = r.scheme;
  j["bits_per_weight"] = r.bits_per_weight;
  j["bytes_in"] = r.bytes_in;
  j["bytes_out"] = r.bytes_out;
  j["rmse"] = r.m.rmse;
  j["max_abs_error"] = r.m.max_abs_error;
  j["snr_db"] = FiniteOrNull(r.m.snr_db);
  j["cosine"] = FiniteOrNull(r.m.cosine);
  return j;
}

nlohmann::ordered_json LayerTotalsJson(const LayerTotals& t) {
  nlohmann::ordered_json j;
  j["tensors"] = t.tensors;
  j["quantized"] = t.quantized;
  j["params"] = t.params;
  j["bytes_in"] = t.bytes_in;
  j["bytes_out"] = t.bytes_out;
  j["compression_ratio"] = t.compression_ratio();
  j["mean_snr_db"] = FiniteOrNull(t.mean_snr_db);
  if (t.worst.empty())
    j["worst"] = nullptr;
  else
    j["worst"] = t.worst;
  j["worst_snr_db"] = FiniteOrNull(t.worst_snr_db);
  return j;
}

std::string LayerCsv(const std::vector<LayerRow>& rows) {
  std::ostringstream os;
  os.precision(17);
  os << "name,shape,params,scheme,bits_per_weight,bytes_in,bytes_out,rmse,"
        "max_abs_error,snr_db,cosine\n";
  for (const LayerRow& r : rows) {
    std::string shape;
    for (size_t i = 0; i < r.shape.size(); ++i)
      shape += (i ? "x" : "") + std::to_string(r.shape[i]);
    os << CsvQuoted(r.name) << ',' << shape << ',' << r.params << ','
       << r.scheme << ',' << r.bits_per_weight << ',' << r.bytes_in << ','
       << r.bytes_out << ',' << r.m.rmse << ',' << r.m.max_abs_error << ',';
    if (std::isfinite(r.m.snr_db)) os << r.m.snr_db;
    os << ',' << r.m.cosine << '\n';
  }
  return os.str();
}

}  // namespace nibble::tool
