// `nibble report`: see report_cmd.h.
#include "report_cmd.h"

#include <fcntl.h>
#include <omp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "config.h"
#include "layer_report.h"
#include "measure.h"
#include "nibble/io/checkpoint.h"
#include "nibble/io/safetensors.h"
#include "nibble/nibble.h"
#include "output_dir.h"
#include "plan.h"
#include "progress.h"
#include "report_files.h"
#include "target.h"

namespace nibble::tool {
namespace {

// The table fits this many columns unless the schemes alone are wider.
constexpr size_t kTableWidth = 120;
// Tensor names are never cut shorter than this.
constexpr size_t kMinNameWidth = 24;

// One scheme of --scheme: the rules and plan `nibble convert --scheme NAME`
// would use, and its row for every tensor (checkpoint order).
struct Column {
  std::string name;       // canonical target name ("int4" -> "int4-g128")
  std::string requested;  // as written in --scheme
  RuleSet rules;
  Plan plan;
  Status plan_status;
  std::vector<LayerRow> rows;
};

std::string Trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  const size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

std::vector<std::string> SplitSchemes(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (true) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    std::string name = Trim(text.substr(pos, end - pos));
    if (name.empty())
      UsageError("--scheme: empty scheme name in '" + text + "'");
    out.push_back(std::move(name));
    if (end == text.size()) break;
    pos = end + 1;
  }
  return out;
}

std::string WithCommas(int64_t v) {
  const std::string digits = std::to_string(v < 0 ? -v : v);
  std::string out;
  const size_t n = digits.size();
  for (size_t i = 0; i < n; ++i) {
    if (i > 0 && (n - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return v < 0 ? "-" + out : out;
}

// Each distinct plan warning once, in order of first appearance; one that
// only some schemes' plans give says which.
void PrintPlanWarnings(const std::vector<Column>& cols) {
  std::vector<std::string> order;
  std::map<std::string, std::vector<std::string>> schemes_of;
  for (const Column& c : cols) {
    for (const std::string& w : c.plan.warnings) {
      std::vector<std::string>& list = schemes_of[w];
      if (list.empty()) order.push_back(w);
      if (list.empty() || list.back() != c.name) list.push_back(c.name);
    }
  }
  for (const std::string& w : order) {
    const std::vector<std::string>& list = schemes_of[w];
    if (list.size() == cols.size()) {
      spdlog::warn("{}", w);
      continue;
    }
    std::string which;
    for (const std::string& s : list) which += (which.empty() ? "" : ", ") + s;
    spdlog::warn("{} (with --scheme {})", w, which);
  }
}

std::string Snr(double snr_db) {
  if (!std::isfinite(snr_db)) return std::isnan(snr_db) ? "-" : "inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", snr_db);
  return buf;
}

// `s` cut from the left to `width` characters ("...rest").
std::string CutLeft(const std::string& s, size_t width) {
  if (s.size() <= width) return s;
  if (width <= 3) return s.substr(s.size() - width);
  return "..." + s.substr(s.size() - (width - 3));
}

std::string PadRight(std::string s, size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

std::string PadLeft(const std::string& s, size_t width) {
  return s.size() < width ? std::string(width - s.size(), ' ') + s : s;
}

// Sort key of the table: the first scheme's SNR, exact tensors last.
double SortKey(const LayerRow& r) {
  return std::isfinite(r.m.snr_db) ? r.m.snr_db
                                   : std::numeric_limits<double>::infinity();
}

// The side-by-side table and the totals of each scheme.
void PrintComparison(std::ostream& os, const std::vector<Column>& cols,
                     const std::vector<LayerTotals>& totals, int top) {
  const size_t n_tensors = cols.front().rows.size();
  std::vector<size_t> shown;  // tensors that at least one scheme quantizes
  for (size_t i = 0; i < n_tensors; ++i) {
    bool any = false;
    for (const Column& c : cols) any |= c.rows[i].quantized;
    if (any) shown.push_back(i);
  }
  const std::vector<LayerRow>& first = cols.front().rows;
  std::stable_sort(shown.begin(), shown.end(), [&](size_t a, size_t b) {
    return SortKey(first[a]) < SortKey(first[b]);
  });
  const size_t n = std::min(shown.size(), static_cast<size_t>(top));

  // Cells: SNR and bits per weight; a target other than the column's scheme
  // (set by a rule, or kept because it does not fit) replaces the bits.
  struct Cell {
    std::string snr, bits;
  };
  std::vector<std::vector<Cell>> cells(n, std::vector<Cell>(cols.size()));
  size_t name_w = 6, shape_w = 5;
  std::vector<size_t> snr_w(cols.size(), 6), bits_w(cols.size(), 4);
  for (size_t k = 0; k < n; ++k) {
    const size_t i = shown[k];
    name_w = std::max(name_w, first[i].name.size());
    shape_w = std::max(shape_w, FormatShape(first[i].shape).size());
    for (size_t c = 0; c < cols.size(); ++c) {
      const LayerRow& r = cols[c].rows[i];
      Cell& cell = cells[k][c];
      cell.snr = Snr(r.m.snr_db);
      if (r.scheme == cols[c].name) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.3f", r.bits_per_weight);
        cell.bits = buf;
      } else {
        cell.bits = r.scheme;
      }
      snr_w[c] = std::max(snr_w[c], cell.snr.size());
      bits_w[c] = std::max(bits_w[c], cell.bits.size());
    }
  }
  std::vector<size_t> group_w(cols.size());
  size_t width = name_w + 2 + shape_w;
  for (size_t c = 0; c < cols.size(); ++c) {
    group_w[c] = std::max(cols[c].name.size(), snr_w[c] + 2 + bits_w[c]);
    width += 3 + group_w[c];
  }
  if (width > kTableWidth && name_w > kMinNameWidth)
    name_w = std::max(kMinNameWidth, name_w - (width - kTableWidth));

  std::string line = std::string(name_w + 2 + shape_w, ' ');
  for (size_t c = 0; c < cols.size(); ++c)
    line += "   " + PadRight(cols[c].name, group_w[c]);
  os << line.substr(0, line.find_last_not_of(' ') + 1) << "\n";
  line = PadRight("tensor", name_w) + "  " + PadRight("shape", shape_w);
  for (size_t c = 0; c < cols.size(); ++c)
    line += "   " + PadRight(PadLeft("SNR dB", snr_w[c]) + "  " +
                                 PadLeft("bits", bits_w[c]),
                             group_w[c]);
  os << line.substr(0, line.find_last_not_of(' ') + 1) << "\n";
  for (size_t k = 0; k < n; ++k) {
    const size_t i = shown[k];
    line = PadRight(CutLeft(first[i].name, name_w), name_w) + "  " +
           PadRight(FormatShape(first[i].shape), shape_w);
    for (size_t c = 0; c < cols.size(); ++c)
      line += "   " + PadRight(PadLeft(cells[k][c].snr, snr_w[c]) + "  " +
                                   PadLeft(cells[k][c].bits, bits_w[c]),
                               group_w[c]);
    os << line.substr(0, line.find_last_not_of(' ') + 1) << "\n";
  }
  if (shown.empty()) os << "(no tensor is quantized by any scheme)\n";
  if (shown.size() > n)
    os << "... " << (shown.size() - n)
       << " more tensors (all in --json / --csv)\n";
  bool any_other = false;
  for (size_t k = 0; k < n; ++k)
    for (size_t c = 0; c < cols.size(); ++c)
      any_other |= cols[c].rows[shown[k]].scheme != cols[c].name;
  os << "SNR dB: 10 log10(sum x^2 / sum err^2), higher is better. bits: "
        "stored bits per weight, scales included.\n";
  if (any_other)
    os << "A target name instead of bits: a rule (or the plan's defaults) "
          "chose it under that scheme.\n";
  os << "\n";

  // Totals, one line per scheme.
  const LayerTotals& t0 = totals.front();
  os << "input: " << t0.tensors << " tensors, " << WithCommas(t0.params)
     << " params, " << HumanBytes(static_cast<double>(t0.bytes_in)) << "\n";
  size_t scheme_w = 6;
  for (const Column& c : cols) scheme_w = std::max(scheme_w, c.name.size());
  char buf[256];
  std::snprintf(buf, sizeof buf, "%10s %10s %7s %7s %8s  %s", "quantized",
                "size after", "ratio", "bits/w", "mean SNR",
                "worst layer (SNR dB)");
  os << PadRight("scheme", scheme_w) << " " << buf << "\n";
  for (size_t c = 0; c < cols.size(); ++c) {
    const LayerTotals& t = totals[c];
    const double bits = t.params > 0 ? 8.0 * static_cast<double>(t.bytes_out) /
                                           static_cast<double>(t.params)
                                     : 0;
    std::snprintf(buf, sizeof buf, "%10lld %10s %6.2fx %7.3f %8s  ",
                  static_cast<long long>(t.quantized),
                  HumanBytes(static_cast<double>(t.bytes_out)).c_str(),
                  t.compression_ratio(), bits, Snr(t.mean_snr_db).c_str());
    std::string head = PadRight(cols[c].name, scheme_w) + " " + buf;
    std::string worst = "-";
    if (!t.worst.empty()) {
      const std::string snr = " (" + Snr(t.worst_snr_db) + ")";
      const size_t room =
          head.size() + snr.size() < kTableWidth
              ? std::max(kMinNameWidth, kTableWidth - head.size() - snr.size())
              : kMinNameWidth;
      worst = CutLeft(t.worst, room) + snr;
    }
    os << head << worst << "\n";
  }
  os << "bits/w: over all tensors, kept ones included. mean SNR (dB): "
        "param-weighted, quantized tensors.\n";
}

nlohmann::ordered_json ReportJson(const ReportOptions& o,
                                  const std::vector<Column>& cols,
                                  const std::vector<LayerTotals>& totals) {
  nlohmann::ordered_json j;
  j["nibble_version"] = NIBBLE_VERSION_STRING;
  j["input"] = o.input;
  j["schemes"] = nlohmann::ordered_json::array();
  for (const Column& c : cols) j["schemes"].push_back(c.name);
  j["tensors"] = nlohmann::ordered_json::array();
  const std::vector<LayerRow>& first = cols.front().rows;
  for (size_t i = 0; i < first.size(); ++i) {
    nlohmann::ordered_json t;
    t["name"] = first[i].name;
    t["shape"] = first[i].shape;
    t["params"] = first[i].params;
    nlohmann::ordered_json results = nlohmann::ordered_json::object();
    for (const Column& c : cols) {
      nlohmann::ordered_json r = LayerRowJson(c.rows[i]);
      r.erase("name");
      r.erase("shape");
      r.erase("params");
      results[c.name] = std::move(r);
    }
    t["results"] = std::move(results);
    j["tensors"].push_back(std::move(t));
  }
  nlohmann::ordered_json tj = nlohmann::ordered_json::object();
  for (size_t c = 0; c < cols.size(); ++c) {
    nlohmann::ordered_json x = LayerTotalsJson(totals[c]);
    x["bits_per_weight"] =
        totals[c].params > 0 ? 8.0 * static_cast<double>(totals[c].bytes_out) /
                                   static_cast<double>(totals[c].params)
                             : 0.0;
    tj[cols[c].name] = std::move(x);
  }
  j["totals"] = std::move(tj);
  return j;
}

// Long format: convert's CSV columns, one line per (tensor, scheme), the
// schemes of a tensor together, plus `requested_scheme`: the --scheme entry
// the line belongs to (`scheme` is the target the tensor got under it).
std::string ReportCsv(const std::vector<Column>& cols) {
  std::string header = LayerCsv({});
  header.pop_back();  // '\n'
  std::string out = header + ",requested_scheme\n";
  const size_t n = cols.front().rows.size();
  for (size_t i = 0; i < n; ++i) {
    for (const Column& c : cols) {
      // One row at a time: a quoted name may hold a newline.
      std::string line = LayerCsv({c.rows[i]});
      line = line.substr(header.size() + 1);
      line.pop_back();
      out += line + "," + c.name + "\n";
    }
  }
  return out;
}

int Report(const ReportOptions& o, const std::string& global_isa) {
  if (o.quiet) spdlog::set_level(spdlog::level::warn);
  const ExecOptions exec = ResolveExecOptions(o.threads, o.isa, global_isa);
  if (o.top < 0) UsageError("--top must be at least 0");

  // Every scheme's rules first: a bad name fails before anything is read.
  ConfigFile file;
  if (!o.config.empty()) Check(LoadConfigFile(o.config, &file), "");
  Overrides base;
  base.group_size = o.group_size;
  base.keep = o.keep;
  base.tensor_type = o.tensor_type;
  base.strict = o.strict;
  std::vector<Column> cols;
  for (const std::string& name : SplitSchemes(o.schemes)) {
    Column c;
    Overrides ov = base;
    ov.scheme = name;
    Check(BuildRuleSet(o.config.empty() ? nullptr : &file, ov, &c.rules), "");
    c.name = TargetName(c.rules.default_target);
    c.requested = name;
    for (const Column& other : cols) {
      if (other.name != c.name) continue;
      UsageError("--scheme: " +
                 (other.requested == name
                      ? "'" + name + "' is listed twice"
                      : "'" + other.requested + "' and '" + name +
                            "' are the same scheme (" + c.name + ")"));
    }
    cols.push_back(std::move(c));
  }

  std::unique_ptr<io::Checkpoint> ckpt;
  Check(io::Checkpoint::Open(o.input, &ckpt), "");
  std::vector<TensorInfo> infos;
  for (const io::CheckpointTensor& t : ckpt->tensors())
    infos.push_back(
        {t.info->name, io::StDtypeName(t.info->dtype), t.info->shape});
  for (Column& c : cols) c.plan_status = BuildPlan(c.rules, infos, &c.plan);
  PrintPlanWarnings(cols);
  size_t failed = 0;
  for (const Column& c : cols) failed += c.plan_status.ok() ? 0 : 1;
  for (const Column& c : cols) {
    // A failure of some schemes only (--strict and a group size that does
    // not fit) names the scheme.
    Check(c.plan_status, failed == cols.size() ? "" : "--scheme " + c.name);
  }

  ReportDestination json{o.json_path, ""}, csv{o.csv_path, ""};
  json.CheckWritable();
  csv.CheckWritable();

  InstallFaultHandler();
  const std::vector<io::CheckpointTensor>& tensors = ckpt->tensors();
  const size_t n = tensors.size();
  int64_t total_bytes = 0, bytes_done = 0;
  for (const io::CheckpointTensor& t : tensors)
    total_bytes += static_cast<int64_t>(t.info->byte_size());
  Progress progress("compared", static_cast<int64_t>(n), total_bytes,
                    !o.quiet && !spdlog::should_log(spdlog::level::debug));
  for (size_t i = 0; i < n; ++i) {
    const io::TensorInfo& src = *tensors[i].info;
    const io::SafetensorsFile& shard = *ckpt->shards()[tensors[i].shard];
    progress.Start(static_cast<int64_t>(i), bytes_done, src.name);
    bytes_done += static_cast<int64_t>(src.byte_size());
    bool read = false;
    for (const Column& c : cols)
      read |= c.plan.tensors[i].target.kind != TargetKind::kKeep;
    const uint8_t* data = nullptr;
    if (read) {
      SetCurrentInput(shard.path(), src.name);
      Check(shard.TensorData(src, &data),
            shard.path() + ": tensor '" + src.name + "'");
    }
    // Schemes that give this tensor the same target share one measurement.
    std::vector<size_t> measured;  // columns whose row i was computed
    for (size_t k = 0; k < cols.size(); ++k) {
      Column& c = cols[k];
      const TensorPlan& t = c.plan.tensors[i];
      if (t.target.kind == TargetKind::kKeep) {
        c.rows.push_back(KeptRow(t.name, t.shape, t.params,
                                 static_cast<int64_t>(src.byte_size()),
                                 io::StDtypeBits(src.dtype)));
        continue;
      }
      const std::string target = TargetName(t.target);
      auto same = std::find_if(measured.begin(), measured.end(), [&](size_t m) {
        return cols[m].rows[i].scheme == target;
      });
      if (same != measured.end()) {
        c.rows.push_back(cols[*same].rows[i]);
        continue;
      }
      c.rows.push_back(MeasureRow(t, src, shard, data, exec));
      measured.push_back(k);
      spdlog::debug("[{}/{}] {} {} snr {:.2f} dB", i + 1, n, t.name, target,
                    c.rows.back().m.snr_db);
    }
    if (read) ReleasePages(data, src.byte_size());
  }
  progress.Clear();

  std::vector<LayerTotals> totals;
  for (const Column& c : cols) totals.push_back(ComputeTotals(c.rows));
  if (!o.quiet && !json.to_stdout() && !csv.to_stdout()) {
    PrintComparison(std::cout, cols, totals, o.top);
    std::cout.flush();
  }
  // Both report files or neither.
  if (json.enabled()) json.text = ReportJson(o, cols, totals).dump(2) + "\n";
  if (csv.enabled()) csv.text = ReportCsv(cols);
  WriteReports({&json, &csv});
  return 0;
}

const char* const kReportHelp =
    "Compares quantization schemes on a checkpoint without writing one: each\n"
    "tensor is read once (checkpoint order) and quantized in memory with\n"
    "every scheme of --scheme by the fused kernels, which measure the error\n"
    "in the same pass. The plan of each scheme is the one `nibble convert IN\n"
    "OUT --scheme S` builds with the same --config/--group-size/--keep/\n"
    "--tensor-type/--strict, so rules still apply (a tensor a rule keeps or\n"
    "sends to int8 shows that target in every column), and each tensor's\n"
    "bits per weight, bytes and metrics equal what convert reports for it.\n"
    "The table has one row per tensor that some scheme quantizes (SNR dB and\n"
    "stored bits per weight for each scheme), worst SNR of the first scheme\n"
    "first, then each scheme's totals: tensors quantized, size after,\n"
    "compression ratio, bits per weight over all tensors, param-weighted mean\n"
    "SNR and worst layer. --json and --csv hold every tensor of every scheme\n"
    "(the CSV has convert's columns plus requested_scheme); they are written\n"
    "only when the run succeeds. Nothing else is written; the input is only\n"
    "read. Errors (exit codes, messages naming the file, tensor and byte\n"
    "offset, NaN/Inf with its row and column) are those of convert.\n"
    "Example: nibble report ./Llama-3.2-1B --scheme int8,int4-g128,int4-g32\n"
    "--config tools/nibble/examples/mixed-precision.toml --json cmp.json\n";

}  // namespace

CLI::App* AddReportCommand(CLI::App* app, ReportOptions* o) {
  CLI::App* cmd = app->add_subcommand(
      "report",
      "Quantize a safetensors checkpoint in memory with several schemes and "
      "print their errors side by side per layer (writes no checkpoint)");
  cmd->add_option("IN", o->input,
                  "Input: a .safetensors file or a model directory")
      ->required();
  cmd->add_option("--scheme", o->schemes,
                  std::string("Comma-separated default targets to compare, "
                              "one column each (as convert's --scheme). ") +
                      kTargetNamesHelp)
      ->capture_default_str();
  cmd->add_option("--config", o->config, "Mixed-precision rules (TOML)")
      ->type_name("FILE");
  cmd->add_option("--group-size", o->group_size,
                  "Group size of int4 names without -gN: 32, 64, 128, 256");
  cmd->add_option("--keep", o->keep,
                  "Keep tensors matching PATTERN unquantized (repeatable)")
      ->type_name("PATTERN");
  cmd->add_option("--tensor-type", o->tensor_type,
                  "PATTERN=SCHEME rule, before the config's rules (repeatable)")
      ->type_name("PATTERN=SCHEME");
  cmd->add_flag("--strict", o->strict, "Turn plan warnings into errors");
  cmd->add_option("--threads", o->threads,
                  "OpenMP threads, 1 to 1024 (default: all cores)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--isa", o->isa, "Kernel path: auto|scalar|avx2|avx512")
      ->check(CLI::IsMember({"auto", "scalar", "avx2", "avx512"}));
  cmd->add_option("--json", o->json_path,
                  "Write every tensor's results per scheme and the totals as "
                  "JSON ('-': stdout, instead of the table)")
      ->type_name("FILE");
  cmd->add_option("--csv", o->csv_path,
                  "Write one CSV line per tensor and scheme ('-': stdout, "
                  "instead of the table)")
      ->type_name("FILE");
  cmd->add_option("--top", o->top, "Rows of the table (worst SNR first)")
      ->capture_default_str();
  cmd->add_flag("-q,--quiet", o->quiet,
                "Print no table, only warnings and errors");
  cmd->footer(std::string(kPlanDefaultsHelp) + "\n" + kReportHelp);
  return cmd;
}

int RunReport(const ReportOptions& o, const std::string& global_isa,
              std::string* error) {
  return RunReportingErrors([&] { return Report(o, global_isa); }, error);
}

}  // namespace nibble::tool
