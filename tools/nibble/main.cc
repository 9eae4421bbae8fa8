// nibble: the command-line tool. CLI11 and spdlog live here only.
//
// Exit codes: 0 ok, 1 usage (bad options, unknown scheme, unsupported ISA),
// 2 bad input (NaN/Inf, a scale that does not fit its dtype), 3 I/O, 4 internal.
// Every failure is reported as one line on stderr.
#include <omp.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "convert.h"
#include "dequant.h"
#include "inspect.h"
#include "nibble/nibble.h"
#include "plan_cmd.h"
#include "report.h"
#include "report_cmd.h"
#include "synth.h"
#include "text.h"

namespace nibble::tool {
namespace {

enum ExitCode : int {
  kExitOk = 0,
  kExitUsage = 1,
  kExitBadInput = 2,
  kExitIo = 3,
  kExitInternal = 4,
};

// A failure that ends the run with `code` after printing what() on one line.
class ToolError : public std::runtime_error {
 public:
  ToolError(int code, const std::string& message)
      : std::runtime_error(message), code_(code) {}
  int code() const { return code_; }

 private:
  int code_;
};

int ExitCodeFor(StatusCode code) {
  switch (code) {
    case StatusCode::kOk: return kExitOk;
    case StatusCode::kInvalidArgument:
    case StatusCode::kUnsupported: return kExitUsage;
    case StatusCode::kNonFinite:
    case StatusCode::kScaleOverflow:
    case StatusCode::kBadFormat: return kExitBadInput;
    case StatusCode::kIoError: return kExitIo;
    case StatusCode::kInternal: return kExitInternal;
  }
  return kExitInternal;
}

[[noreturn]] void Fail(const Status& status, const std::string& context) {
  throw ToolError(ExitCodeFor(status.code()),
                  context.empty() ? status.ToString()
                                  : context + ": " + status.ToString());
}

[[noreturn]] void Usage(const std::string& message) {
  throw ToolError(kExitUsage, message);
}

const char* CompilerName() {
#if defined(__clang__)
  return "clang " __clang_version__;
#elif defined(__GNUC__)
  return "GCC " __VERSION__;
#else
  return "unknown compiler";
#endif
}

// ---------------------------------------------------------------------------
// ISA choice shared by every subcommand.

const char* const kIsaHelp =
    "Kernel path: auto|scalar|avx2|avx512. auto (the default) honours the "
    "NIBBLE_ISA environment variable, else picks the best path this CPU "
    "supports. A path the CPU lacks is refused (exit 1). Every path gives "
    "the same bytes and metrics.";

void AddIsaOption(CLI::App* app, std::string* isa) {
  app->add_option("--isa", *isa, kIsaHelp)
      ->check(CLI::IsMember({"auto", "scalar", "avx2", "avx512"}))
      ->type_name("PATH");
}

struct IsaChoice {
  Isa isa = Isa::kScalar;
  std::string source;  // "--isa", "NIBBLE_ISA" or "auto"
};

IsaChoice ChooseIsa(const std::string& name) {
  Isa requested = Isa::kAuto;
  if (!ParseIsa(name, &requested)) Usage("--isa: unknown path '" + name + "'");
  IsaChoice choice;
  if (Status s = ResolveIsa(requested, &choice.isa); !s.ok())
    Fail(s, requested == Isa::kAuto ? "" : "--isa " + name);
  if (requested != Isa::kAuto) {
    choice.source = "--isa";
  } else {
    const char* env = std::getenv("NIBBLE_ISA");
    const bool env_set = env != nullptr && *env != '\0' &&
                         std::strcmp(env, "auto") != 0;
    choice.source = env_set ? "NIBBLE_ISA" : "auto";
  }
  spdlog::debug("isa {} ({})", IsaName(choice.isa), choice.source);
  return choice;
}

std::string SupportedIsaList() {
  std::string out;
  for (Isa isa : SupportedIsas()) {
    if (!out.empty()) out += ' ';
    out += IsaName(isa);
  }
  return out;
}

void PrintVersion(const IsaChoice& choice) {
  std::cout << "nibble " << NIBBLE_VERSION_STRING << "\n"
            << "isa: " << IsaName(choice.isa) << " (" << choice.source
            << ")\n"
            << "cpu: " << CpuFeatureString() << "\n";
}

void PrintInfo(const IsaChoice& choice) {
  PrintVersion(choice);
  std::cout << "supported isas: " << SupportedIsaList() << "\n"
            << "openmp max threads: " << omp_get_max_threads() << "\n"
            << "schemes: int8[-gN][-asym], int4[-gN|-row][-asym] "
               "(N = 32, 64, 128, 256; int4 alone is int4-g128)\n"
            << "input dtypes: f16 bf16 f32; scale dtypes: f16 bf16 f32\n"
            << "compiler: " << CompilerName() << "\n";
}

// ---------------------------------------------------------------------------
// quantize

constexpr int kMaxThreads = 1024;

const char* const kDefaultSchemes =
    "int8,int8-g32,int4-g32,int4-g64,int4-g128,int4-g128-asym";

struct QuantizeOptions {
  int64_t rows = 4096;
  int64_t cols = 11008;
  std::string dtype = "f16";
  uint64_t seed = 42;
  std::string distribution = "heavy";
  double std = 0.02;
  std::string schemes = kDefaultSchemes;
  std::string scale_dtype = "f16";
  int threads = 0;
  bool threads_given = false;
  std::string isa;  // empty: the global --isa
  int repeat = 1;
  std::string json_path;
  std::string csv_path;
  bool quiet = false;
};

void AddQuantizeOptions(CLI::App* cmd, QuantizeOptions* o) {
  cmd->add_option("--rows", o->rows, "Rows (output channels) of the matrix")
      ->capture_default_str();
  cmd->add_option("--cols", o->cols,
                  "Columns (input features); a multiple of every group size")
      ->capture_default_str();
  cmd->add_option("--dtype", o->dtype, "Input element type: f16|bf16|f32")
      ->capture_default_str();
  cmd->add_option("--seed", o->seed, "Seed of the generated matrix")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--distribution", o->distribution,
                  "heavy: LLM-like, Student-t (nu=5) entries plus ~1 in 1024 "
                  "columns 10x larger; gaussian: i.i.d. normal")
      ->check(CLI::IsMember({"gaussian", "heavy"}))
      ->capture_default_str();
  cmd->add_option("--std", o->std, "Standard deviation of the entries")
      ->capture_default_str();
  cmd->add_option("--scheme", o->schemes,
                  "Comma-separated schemes: int8[-gN][-asym], "
                  "int4[-gN|-row][-asym] with N = 32, 64, 128, 256")
      ->capture_default_str();
  cmd->add_option("--scale-dtype", o->scale_dtype,
                  "Type of the stored scales: f16|bf16|f32")
      ->capture_default_str();
  cmd->add_option("--threads", o->threads,
                  "OpenMP threads (>= 1; default: all cores, " +
                      std::to_string(omp_get_max_threads()) + " here)");
  AddIsaOption(cmd, &o->isa);
  cmd->add_option("--repeat", o->repeat,
                  "Quantize each scheme this many times and report the best "
                  "time")
      ->capture_default_str();
  cmd->add_option("--json", o->json_path,
                  "Write the results as JSON to FILE ('-': stdout)")
      ->type_name("FILE");
  cmd->add_option("--csv", o->csv_path,
                  "Write the results as CSV to FILE ('-': stdout)")
      ->type_name("FILE");
  cmd->add_flag("-q,--quiet", o->quiet,
                "Print no table and no progress, only errors");
  cmd->footer(
      "Generates a seeded matrix, quantizes it with each scheme (one fused "
      "pass that also measures the error) and prints, per scheme: bits per "
      "weight (scales and zero points included), size, compression ratio, "
      "RMSE, max abs error, SNR, cosine similarity, relative Frobenius "
      "error, time and input GB/s.\n"
      "Example: nibble quantize --rows 1024 --cols 4096 --scheme "
      "int8,int4-g128 --threads 2 --json out.json\n");
}

DType ParseDTypeOption(const char* option, const std::string& text) {
  DType d;
  if (!ParseDType(text, &d))
    Usage(std::string(option) + ": '" + text + "' is not one of f16, bf16, f32");
  return d;
}

std::vector<QuantScheme> ParseSchemes(const std::string& text, DType scale,
                                      int64_t cols) {
  std::vector<QuantScheme> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find(',', pos);
    if (end == std::string::npos) end = text.size();
    std::string name = text.substr(pos, end - pos);
    const size_t b = name.find_first_not_of(" \t");
    const size_t e = name.find_last_not_of(" \t");
    name = b == std::string::npos ? "" : name.substr(b, e - b + 1);
    if (name.empty()) Usage("--scheme: empty scheme name in '" + text + "'");
    QuantScheme s;
    s.scale_dtype = scale;
    if (Status st = ParseScheme(name, &s); !st.ok()) Fail(st, "--scheme");
    if (Status st = ValidateScheme(s, cols); !st.ok())
      Fail(st, "--scheme " + name);
    out.push_back(s);
    pos = end + 1;
  }
  return out;
}

// Opened before the work starts, so a bad path fails in milliseconds.
class Output {
 public:
  explicit Output(const std::string& path) : path_(path) {
    if (path_.empty() || path_ == "-") return;
    file_.open(path_, std::ios::out | std::ios::trunc);
    if (!file_) {
      throw ToolError(kExitIo, "cannot open '" + path_ +
                                   "' for writing: " + std::strerror(errno));
    }
  }
  bool enabled() const { return !path_.empty(); }
  std::ostream& stream() { return path_ == "-" ? std::cout : file_; }
  void Close() {
    stream().flush();
    if (file_.is_open()) file_.close();
    if (!stream()) throw ToolError(kExitIo, "cannot write '" + path_ + "'");
    if (path_ != "-") spdlog::info("wrote {}", path_);
  }

 private:
  std::string path_;
  std::ofstream file_;
};

std::string TooBig(const std::string& what, int64_t bytes) {
  char mb[64];
  std::snprintf(mb, sizeof(mb), "%.1f", static_cast<double>(bytes) / 1e6);
  return std::string("--rows x --cols: cannot allocate ") + mb + " MB for " +
         what;
}

int RunQuantize(QuantizeOptions& o, const std::string& global_isa) {
  if (o.quiet) spdlog::set_level(spdlog::level::warn);
  if (o.rows < 1) Usage("--rows must be at least 1, got " + std::to_string(o.rows));
  if (o.cols < 1) Usage("--cols must be at least 1, got " + std::to_string(o.cols));
  // 2^38 elements (1 TiB as F32) is far beyond any weight matrix; the
  // check also keeps every byte count below in range.
  if (o.rows > (int64_t{1} << 38) / o.cols)
    Usage("--rows x --cols is too large (" + std::to_string(o.rows) + " x " +
          std::to_string(o.cols) + " elements; the limit is 2^38)");
  if (o.threads_given && o.threads < 1)
    Usage("--threads must be at least 1, got " + std::to_string(o.threads));
  if (o.threads_given && o.threads > kMaxThreads)
    Usage("--threads must be at most " + std::to_string(kMaxThreads) +
          ", got " + std::to_string(o.threads));
  const int threads = o.threads_given ? o.threads : omp_get_max_threads();
  if (o.repeat < 1)
    Usage("--repeat must be at least 1, got " + std::to_string(o.repeat));
  if (!(o.std > 0) || !std::isfinite(o.std))
    Usage("--std must be positive and finite");
  SynthOptions synth;
  synth.rows = o.rows;
  synth.cols = o.cols;
  synth.dtype = ParseDTypeOption("--dtype", o.dtype);
  synth.seed = o.seed;
  if (!ParseDistribution(o.distribution, &synth.distribution))
    Usage("--distribution: '" + o.distribution + "' is not gaussian or heavy");
  synth.std = o.std;
  synth.threads = threads;
  const DType scale_dtype = ParseDTypeOption("--scale-dtype", o.scale_dtype);
  const std::vector<QuantScheme> schemes =
      ParseSchemes(o.schemes, scale_dtype, o.cols);
  const IsaChoice isa = ChooseIsa(o.isa.empty() ? global_isa : o.isa);

  Output json(o.json_path);
  Output csv(o.csv_path);

  RunInfo info;
  info.version = NIBBLE_VERSION_STRING;
  info.isa = IsaName(isa.isa);
  info.isa_source = isa.source;
  info.threads = threads;
  info.rows = o.rows;
  info.cols = o.cols;
  info.dtype = DTypeName(synth.dtype);
  info.distribution = DistributionName(synth.distribution);
  info.seed = o.seed;
  info.std = o.std;
  info.input_bytes = o.rows * o.cols * static_cast<int64_t>(DTypeSize(synth.dtype));
  info.scale_dtype = DTypeName(scale_dtype);
  info.repeat = o.repeat;

  spdlog::info("generating a {}x{} {} matrix ({}, seed {}, {:.1f} MB)", o.rows,
               o.cols, info.dtype, info.distribution, o.seed,
               static_cast<double>(info.input_bytes) / 1e6);
  std::vector<uint8_t> data;
  try {
    GenerateMatrix(synth, &data);
  } catch (const std::bad_alloc&) {
    Usage(TooBig("the input matrix", info.input_bytes));
  } catch (const std::length_error&) {
    Usage(TooBig("the input matrix", info.input_bytes));
  }
  const ConstMatrixView input{data.data(), synth.dtype, o.rows, o.cols, o.cols};

  ExecOptions exec;
  exec.threads = threads;
  exec.isa = isa.isa;
  std::vector<SchemeResult> results;
  for (const QuantScheme& scheme : schemes) {
    SchemeResult r;
    r.scheme = scheme;
    r.name = SchemeName(scheme);
    r.bits_per_weight = BitsPerWeight(scheme, o.cols);
    QuantizedBuffers buffers;
    try {
      if (Status s = buffers.Allocate(scheme, o.rows, o.cols); !s.ok())
        Fail(s, r.name);
    } catch (const std::bad_alloc&) {
      Usage(TooBig("the " + r.name + " output",
                   static_cast<int64_t>(r.bits_per_weight / 8 *
                                        static_cast<double>(o.rows * o.cols))));
    }
    r.codes_bytes = static_cast<int64_t>(buffers.codes.size());
    r.scales_bytes = static_cast<int64_t>(buffers.scales.size());
    r.zero_point_bytes = static_cast<int64_t>(buffers.zero_points.size());
    double best = std::numeric_limits<double>::infinity();
    ErrorSums sums;
    for (int rep = 0; rep < o.repeat; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      const Status s = Quantize(input, scheme, buffers.view(), &sums, exec);
      const auto t1 = std::chrono::steady_clock::now();
      if (!s.ok()) Fail(s, r.name);
      best = std::min(best, std::chrono::duration<double>(t1 - t0).count());
    }
    r.seconds = best;
    r.metrics = Summarize(sums);
    spdlog::debug("{}: {:.3f} ms", r.name, best * 1e3);
    results.push_back(std::move(r));
  }

  if (!o.quiet) PrintTable(std::cout, info, results);
  if (json.enabled()) {
    WriteJson(json.stream(), info, results);
    json.Close();
  }
  if (csv.enabled()) {
    WriteCsv(csv.stream(), info, results);
    csv.Close();
  }
  return kExitOk;
}

// ---------------------------------------------------------------------------

// Forwards to `inner` with the message escaped (EscapeForTerminal): errors
// and warnings quote names, keys and parser messages from files nibble did
// not write, which may hold invalid UTF-8 or terminal control sequences.
class EscapingSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit EscapingSink(spdlog::sink_ptr inner) : inner_(std::move(inner)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    const std::string escaped = EscapeForTerminal(
        std::string_view(msg.payload.data(), msg.payload.size()));
    spdlog::details::log_msg copy = msg;
    copy.payload = spdlog::string_view_t(escaped.data(), escaped.size());
    inner_->log(copy);
  }
  void flush_() override { inner_->flush(); }
  void set_pattern_(const std::string& pattern) override {
    inner_->set_pattern(pattern);
  }
  void set_formatter_(std::unique_ptr<spdlog::formatter> f) override {
    inner_->set_formatter(std::move(f));
  }

 private:
  spdlog::sink_ptr inner_;
};

void SetUpLogging() {
  auto sink = std::make_shared<EscapingSink>(
      std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
  auto logger = std::make_shared<spdlog::logger>("nibble", sink);
  spdlog::register_logger(logger);
  logger->set_pattern("%n: %^%l%$: %v");
  spdlog::set_default_logger(logger);
  spdlog::set_level(spdlog::level::info);
}

int Run(int argc, char** argv) {
  CLI::App app{
      "nibble " NIBBLE_VERSION_STRING
      ": per-channel INT8 and group-wise INT4 weight quantization with "
      "fused error metrics."};
  app.name("nibble");
  app.require_subcommand(0, 1);
  app.fallthrough();
  std::string global_isa = "auto";
  AddIsaOption(&app, &global_isa);
  bool show_version = false;
  app.add_flag("--version", show_version,
               "Print the version, the ISA path chosen and the CPU features");
  bool verbose = false;
  app.add_flag("-v,--verbose", verbose, "Log debug details to stderr");
  app.footer(
      "Exit codes: 0 ok, 1 usage, 2 bad input, 3 I/O, 4 internal error.\n"
      "Run 'nibble SUBCOMMAND --help' for the options of a subcommand.\n");

  CLI::App* info_cmd = app.add_subcommand(
      "info", "Print the version, the ISA path chosen, the paths this CPU "
              "supports, the CPU features and the OpenMP thread count");
  std::string info_isa;
  AddIsaOption(info_cmd, &info_isa);

  CLI::App* quantize_cmd = app.add_subcommand(
      "quantize", "Quantize a generated LLM-shaped matrix with each scheme "
                  "and print an error table (default: 4096x11008 FP16)");
  QuantizeOptions q;
  AddQuantizeOptions(quantize_cmd, &q);

  ConvertOptions conv;
  CLI::App* convert_cmd = AddConvertCommand(&app, &conv);
  DequantOptions deq;
  CLI::App* dequant_cmd = AddDequantCommand(&app, &deq);
  ReportOptions rep;
  CLI::App* report_cmd = AddReportCommand(&app, &rep);
  InspectOptions insp;
  CLI::App* inspect_cmd = AddInspectCommand(&app, &insp);
  PlanOptions plan_opts;
  CLI::App* plan_cmd = AddPlanCommand(&app, &plan_opts);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    Usage(std::string(e.what()) + " (run 'nibble --help')");
  }
  if (verbose) spdlog::set_level(spdlog::level::debug);
  q.threads_given = quantize_cmd->count("--threads") > 0;

  if (show_version) {
    const std::string& isa =
        info_cmd->parsed() && !info_isa.empty()   ? info_isa
        : quantize_cmd->parsed() && !q.isa.empty() ? q.isa
                                                   : global_isa;
    PrintVersion(ChooseIsa(isa));
    return kExitOk;
  }
  if (info_cmd->parsed()) {
    PrintInfo(ChooseIsa(info_isa.empty() ? global_isa : info_isa));
    return kExitOk;
  }
  if (quantize_cmd->parsed()) return RunQuantize(q, global_isa);
  if (convert_cmd->parsed()) {
    std::string error;
    const int rc = RunConvert(conv, global_isa, &error);
    if (rc != kExitOk) throw ToolError(rc, error);
    return rc;
  }
  if (dequant_cmd->parsed()) {
    std::string error;
    const int rc = RunDequant(deq, &error);
    if (rc != kExitOk) throw ToolError(rc, error);
    return rc;
  }
  if (report_cmd->parsed()) {
    std::string error;
    const int rc = RunReport(rep, global_isa, &error);
    if (rc != kExitOk) throw ToolError(rc, error);
    return rc;
  }
  if (inspect_cmd->parsed()) {
    std::string error;
    const int rc = RunInspect(insp, &error);
    if (rc != kExitOk) throw ToolError(rc, error);
    return rc;
  }
  if (plan_cmd->parsed()) {
    std::string error;
    const int rc = RunPlanCommand(plan_opts, global_isa, &error);
    if (rc != kExitOk) throw ToolError(rc, error);
    return rc;
  }
  std::cout << app.help();
  Usage(
      "no subcommand given: use convert, dequant, report, inspect, plan, "
      "quantize or info (or --version)");
}

}  // namespace
}  // namespace nibble::tool

int main(int argc, char** argv) {
  using nibble::tool::ToolError;
  try {
    nibble::tool::SetUpLogging();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nibble: error: cannot set up logging: %s\n", e.what());
    return nibble::tool::kExitInternal;
  }
  try {
    return nibble::tool::Run(argc, argv);
  } catch (const ToolError& e) {
    spdlog::error("{}", e.what());
    return e.code();
  } catch (const std::bad_alloc&) {
    spdlog::error("out of memory");
    return nibble::tool::kExitInternal;
  } catch (const std::exception& e) {
    spdlog::error("internal error: {}", e.what());
    return nibble::tool::kExitInternal;
  }
}
