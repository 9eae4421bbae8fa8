// `nibble convert`: see convert.h.
#include "convert.h"

#include <fcntl.h>
#include <omp.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "cast.h"
#include "config.h"
#include "gguf_convert.h"
#include "layer_report.h"
#include "nibble/io/atomic_file.h"
#include "nibble/io/checkpoint.h"
#include "nibble/io/compressed_tensors.h"
#include "nibble/io/safetensors.h"
#include "nibble/io/safetensors_writer.h"
#include "nibble/nibble.h"
#include "output_dir.h"
#include "plan.h"
#include "progress.h"
#include "report_files.h"
#include "target.h"

namespace nibble::tool {
namespace {

namespace fs = std::filesystem;

// A failure carrying its exit code; caught in RunConvert.
using ConvertError = ToolError;

std::string ModuleName(const std::string& tensor) {
  const std::string suffix = ".weight";
  if (tensor.size() > suffix.size() &&
      tensor.compare(tensor.size() - suffix.size(), suffix.size(), suffix) == 0)
    return tensor.substr(0, tensor.size() - suffix.size());
  return tensor;
}

io::StDtype StFor(DType d) {
  switch (d) {
    case DType::kF16:
      return io::StDtype::kF16;
    case DType::kBF16:
      return io::StDtype::kBF16;
    case DType::kF32:
      return io::StDtype::kF32;
  }
  return io::StDtype::kF32;
}

// Casts `count` elements into *out and measures the error. A finite value
// that overflows the target dtype is an error (exit 2) naming the element.
ErrorMetrics CastTensor(const uint8_t* src, DType from, DType to, int64_t count,
                        const std::string& what, std::vector<uint8_t>* out) {
  const CastResult r = CastElements(src, from, to, count, out);
  if (r.overflow_index >= 0)
    throw ConvertError(2, what + ": element " +
                              std::to_string(r.overflow_index) + " (" +
                              std::to_string(r.overflow_value) +
                              ") overflows " + DTypeName(to));
  return r.metrics;
}

// One output tensor: its spec, the source bytes (kept) or an owned buffer.
struct OutTensor {
  io::TensorSpec spec;
  const uint8_t* src = nullptr;
  std::vector<uint8_t> owned;
};

int Convert(const ConvertOptions& o, const std::string& global_isa) {
  if (o.quiet) spdlog::set_level(spdlog::level::warn);
  const ExecOptions exec = ResolveExecOptions(o.threads, o.isa, global_isa);
  const uint64_t max_shard = ParseSize(o.max_shard_size);

  // Rules first: a bad option fails before the checkpoint is read.
  ConfigFile file;
  if (!o.config.empty()) Check(LoadConfigFile(o.config, &file), "");
  Overrides ov;
  ov.scheme = o.scheme;
  ov.group_size = o.group_size;
  ov.keep = o.keep;
  ov.tensor_type = o.tensor_type;
  ov.strict = o.strict;
  RuleSet rules;
  Check(BuildRuleSet(o.config.empty() ? nullptr : &file, ov, &rules), "");

  std::unique_ptr<io::Checkpoint> ckpt;
  Check(io::Checkpoint::Open(o.input, &ckpt), "");
  std::vector<TensorInfo> infos;
  std::vector<const io::TensorInfo*> src_infos;
  for (const io::CheckpointTensor& t : ckpt->tensors()) {
    infos.push_back(
        {t.info->name, io::StDtypeName(t.info->dtype), t.info->shape});
    src_infos.push_back(t.info);
  }
  Plan plan;
  const Status plan_status = BuildPlan(rules, infos, &plan);
  for (const std::string& w : plan.warnings) spdlog::warn("{}", w);
  Check(plan_status, "");

  if (o.dry_run) {
    std::cout << RenderPlan(plan);
    return 0;
  }

  // Output path checks.
  const OutputDir out_dir = CheckOutputDir(o.output, o.input, *ckpt, o.force);
  const fs::path& out_path = out_dir.path;

  // A bad report path fails before the work starts; the reports are
  // written at the end.
  const ReportDestination json_check{o.report_path, ""},
      csv_check{o.csv_path, ""};
  json_check.CheckWritable();
  csv_check.CheckWritable();

  // Output tensor list and layouts.
  std::vector<io::TensorSpec> specs;
  std::vector<std::vector<size_t>> specs_of(plan.tensors.size());
  std::vector<io::CtLayout> layouts(plan.tensors.size());
  std::vector<io::CtConfigGroup> groups;
  std::vector<std::string> ignore;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const TensorPlan& t = plan.tensors[i];
    const io::TensorInfo& src = *src_infos[i];
    if (!t.target.quantized()) {
      specs_of[i].push_back(specs.size());
      if (t.target.kind == TargetKind::kCast) {
        const io::StDtype dt = StFor(t.target.cast_dtype);
        specs.push_back(
            {t.name, dt, src.shape,
             static_cast<uint64_t>(t.params) * DTypeSize(t.target.cast_dtype)});
      } else {
        specs.push_back({t.name, src.dtype, src.shape, src.byte_size()});
      }
      const bool linear_like = t.shape.size() == 2 &&
                               ModuleName(t.name) != t.name &&
                               !IsEmbeddingName(t.name);
      if (linear_like) ignore.push_back(ModuleName(t.name));
      continue;
    }
    DType model_dtype;
    if (!io::StDtypeToKernel(src.dtype, &model_dtype) || t.shape.size() != 2)
      throw ConvertError(
          4, "tensor '" + t.name +
                 "': planned for quantization but not a 2-D float matrix");
    // Scales in the plan's scale dtype: the weight's own (auto) or the
    // config's `scale_dtype`.
    const QuantScheme& scheme = t.target.scheme;
    io::CtLayout& L = layouts[i];
    Check(io::CtLayoutFor(scheme, t.shape[0], t.shape[1], scheme.scale_dtype,
                          &L),
          "tensor '" + t.name + "'");
    const std::string m = ModuleName(t.name);
    auto add = [&](const std::string& name, io::StDtype dt,
                   std::vector<int64_t> shape, uint64_t bytes) {
      specs_of[i].push_back(specs.size());
      specs.push_back({name, dt, std::move(shape), bytes});
    };
    add(m + ".weight_packed", io::StDtype::kI32, L.weight_packed_shape,
        L.weight_packed_bytes);
    add(m + ".weight_scale", StFor(scheme.scale_dtype), L.weight_scale_shape,
        L.weight_scale_bytes);
    if (!L.symmetric)
      add(m + ".weight_zero_point", io::StDtype::kI32,
          L.weight_zero_point_shape, L.weight_zero_point_bytes);
    add(m + ".weight_shape", io::StDtype::kI64, {2},
        io::CtLayout::kWeightShapeBytes);
    const std::string sname = TargetName(t.target);
    auto g = std::find_if(groups.begin(), groups.end(),
                          [&](const io::CtConfigGroup& x) {
                            return SchemeName(x.scheme) == SchemeName(scheme);
                          });
    if (g == groups.end()) {
      groups.push_back({scheme, {}, false});
      g = groups.end() - 1;
    }
    g->targets.push_back(m);
    (void)sname;
  }
  std::string qconfig;
  if (!groups.empty()) {
    Check(io::BuildCtQuantizationConfig(groups, ignore, &qconfig),
          "quantization_config");
  } else {
    spdlog::warn("no tensor is quantized: the output is a copy");
  }
  io::ShardPlan shards;
  Check(io::PlanShards(specs, max_shard, &shards), "");
  std::vector<size_t> shard_of(specs.size());
  for (size_t s = 0; s < shards.tensors.size(); ++s)
    for (size_t k : shards.tensors[s]) shard_of[k] = s;

  // Temporary directory next to OUT.
  const fs::path tmp_path = CreateTempDirFor(out_path);
  TempDir tmp(tmp_path);

  std::vector<LayerRow> rows;
  std::unique_ptr<io::SafetensorsWriter> writer;
  size_t writer_shard = 0;
  const io::Metadata metadata = {{"format", "pt"}};
  auto write_spec = [&](size_t k, const void* bytes) {
    const size_t s = shard_of[k];
    if (!writer || writer_shard != s) {
      if (writer) Check(writer->Finish(), shards.file_names[writer_shard]);
      std::vector<io::TensorSpec> list;
      for (size_t idx : shards.tensors[s]) list.push_back(specs[idx]);
      const fs::path p = tmp_path / shards.file_names[s];
      Check(io::SafetensorsWriter::Create(p.string(), std::move(list), metadata,
                                          false, &writer),
            p.string());
      writer_shard = s;
    }
    Check(writer->WriteTensor(specs[k].name, bytes, specs[k].byte_size),
          "writing '" + specs[k].name + "'");
  };

  const size_t n = plan.tensors.size();
  int64_t total_bytes = 0, bytes_done = 0;
  for (const io::TensorInfo* info : src_infos)
    total_bytes += static_cast<int64_t>(info->byte_size());
  // No bar under --verbose: the per-tensor debug lines would cut into it.
  Progress progress("converted", static_cast<int64_t>(n), total_bytes,
                    !o.quiet && !spdlog::should_log(spdlog::level::debug));
  for (size_t i = 0; i < n; ++i) {
    CheckInterrupted();
    const TensorPlan& t = plan.tensors[i];
    const io::TensorInfo& src = *src_infos[i];
    progress.Start(static_cast<int64_t>(i), bytes_done, t.name);
    SetCurrentInput(ckpt->shards()[ckpt->tensors()[i].shard]->path(), t.name);
    bytes_done += static_cast<int64_t>(src.byte_size());
    const io::SafetensorsFile& file_ref =
        *ckpt->shards()[ckpt->tensors()[i].shard];
    const uint8_t* data = nullptr;
    Check(file_ref.TensorData(src, &data),
          file_ref.path() + ": tensor '" + t.name + "'");
    LayerRow row;
    row.name = t.name;
    row.shape = t.shape;
    row.params = t.params;
    row.bytes_in = static_cast<int64_t>(src.byte_size());
    if (t.target.kind == TargetKind::kCast) {
      DType from;
      if (!io::StDtypeToKernel(src.dtype, &from))
        throw ConvertError(
            4, "tensor '" + t.name + "': cast of a non-float tensor");
      std::vector<uint8_t> out;
      row.m = CastTensor(data, from, t.target.cast_dtype, t.params,
                         file_ref.path() + ": tensor '" + t.name + "'", &out);
      write_spec(specs_of[i][0], out.data());
      row.scheme = TargetName(t.target);
      row.bits_per_weight =
          8.0 * static_cast<double>(DTypeSize(t.target.cast_dtype));
      row.bytes_out = static_cast<int64_t>(out.size());
      ReleasePages(data, src.byte_size());
      rows.push_back(std::move(row));
      continue;
    }
    if (!t.target.quantized()) {
      write_spec(specs_of[i][0], data);
      row = KeptRow(t.name, t.shape, t.params, row.bytes_in,
                    io::StDtypeBits(src.dtype));
      ReleasePages(data, src.byte_size());
      rows.push_back(std::move(row));
      continue;
    }
    const io::CtLayout& L = layouts[i];
    const QuantScheme& scheme = t.target.scheme;
    DType weight_dtype;
    io::StDtypeToKernel(src.dtype, &weight_dtype);  // checked when planned
    const ConstMatrixView view{data, weight_dtype, L.out, L.in, L.in};
    QuantizedBuffers buf;
    Check(buf.Allocate(scheme, L.out, L.in), "tensor '" + t.name + "'");
    ErrorSums sums;
    Check(Quantize(view, scheme, buf.view(), &sums, exec),
          file_ref.path() + ": tensor '" + t.name + "' (data at byte " +
              std::to_string(file_ref.data_offset() + src.begin) + ")");
    const ConstQuantizedView cview =
        static_cast<const QuantizedBuffers&>(buf).view();
    std::vector<uint8_t> packed(L.weight_packed_bytes),
        scales(L.weight_scale_bytes), zps(L.weight_zero_point_bytes),
        shape(io::CtLayout::kWeightShapeBytes);
    const std::string ctx = "tensor '" + t.name + "'";
    Check(io::CtPackWeight(L, cview, packed.data(), packed.size()), ctx);
    Check(io::CtPackScales(L, cview, scheme.scale_dtype, scales.data(),
                           scales.size()),
          ctx);
    if (!L.symmetric)
      Check(io::CtPackZeroPoints(L, cview, zps.data(), zps.size()), ctx);
    Check(io::CtWeightShape(L, shape.data(), shape.size()), ctx);
    size_t k = 0;
    write_spec(specs_of[i][k++], packed.data());
    write_spec(specs_of[i][k++], scales.data());
    if (!L.symmetric) write_spec(specs_of[i][k++], zps.data());
    write_spec(specs_of[i][k++], shape.data());
    row.scheme = TargetName(t.target);
    row.bytes_out = static_cast<int64_t>(
        L.weight_packed_bytes + L.weight_scale_bytes +
        L.weight_zero_point_bytes + io::CtLayout::kWeightShapeBytes);
    row.bits_per_weight = t.params > 0
                              ? 8.0 * static_cast<double>(row.bytes_out) /
                                    static_cast<double>(t.params)
                              : 0;
    row.quantized = true;
    row.m = Summarize(sums);
    ReleasePages(data, src.byte_size());
    spdlog::debug("[{}/{}] {} {} snr {:.2f} dB", i + 1, n, t.name, row.scheme,
                  row.m.snr_db);
    rows.push_back(std::move(row));
  }
  progress.Clear();
  // Shards that hold no tensor (only possible for an empty checkpoint).
  if (!writer) {
    for (size_t s = 0; s < shards.file_names.size(); ++s) {
      const fs::path p = tmp_path / shards.file_names[s];
      Check(io::SafetensorsWriter::Create(p.string(), {}, metadata, false,
                                          &writer),
            p.string());
      Check(writer->Finish(), p.string());
    }
  } else {
    Check(writer->Finish(), shards.file_names[writer_shard]);
  }
  writer.reset();
  if (shards.file_names.size() > 1) {
    std::string index;
    Check(io::ShardIndexJson(specs, shards, &index), "index");
    WriteWholeFile(tmp_path / io::kSafetensorsIndexName, index);
  }

  // config.json with quantization_config, then the other side files.
  const fs::path in_root = ckpt->layout() == io::Checkpoint::Layout::kFile
                               ? fs::path()
                               : fs::path(ckpt->directory());
  bool have_config = false;
  for (const std::string& name : ckpt->other_files())
    if (name == "config.json") have_config = true;
  nlohmann::ordered_json config = nlohmann::ordered_json::object();
  if (have_config) {
    const std::string text = ReadWholeFile(in_root / "config.json");
    config = nlohmann::ordered_json::parse(text, nullptr, false);
    if (config.is_discarded() || !config.is_object())
      throw ConvertError(
          2, (in_root / "config.json").string() + ": not a JSON object");
  }
  if (!qconfig.empty())
    config["quantization_config"] = nlohmann::ordered_json::parse(qconfig);
  else
    config.erase("quantization_config");
  if (have_config || !qconfig.empty())
    WriteWholeFile(tmp_path / "config.json", config.dump(2) + "\n");
  CopySideFiles(*ckpt, in_root, tmp_path);
  FsyncDir(tmp_path);

  // Move into place.
  CheckInterrupted();
  MoveIntoPlace(&tmp, out_dir, o.output);

  const LayerTotals totals = ComputeTotals(rows);
  if (!o.quiet && !json_check.to_stdout() && !csv_check.to_stdout()) {
    PrintLayerTable(std::cout, rows, totals, o.top);
    std::cout.flush();
  }
  WriteConvertReports(o.report_path, o.csv_path, rows, totals, o.input,
                      o.output);
  spdlog::info("wrote {} ({} shard{})", o.output, shards.file_names.size(),
               shards.file_names.size() == 1 ? "" : "s");
  return 0;
}

}  // namespace

namespace {

const char* const kConvertHelp =
    "Input checks, before anything is written: header length, JSON, dtypes,\n"
    "shapes, byte ranges (inside the file, no overlap, no gap, nothing after\n"
    "the last tensor), duplicate names; for a sharded model, index entries\n"
    "that name shards inside the directory. A tensor listed in the index but\n"
    "absent from its shard, or held by a shard but not listed in the index,\n"
    "is an error. NaN/Inf in a tensor to quantize is an error naming its row\n"
    "and column. Errors name the file, the tensor and the byte offset (exit\n"
    "2); nothing is written and the input is only ever read.\n"
    "Output: a compressed-tensors model directory (pack-quantized INT4/INT8,\n"
    "scales in each weight's own dtype unless the config sets scale_dtype,\n"
    "config.json with its quantization_config, the other files of the model\n"
    "directory copied).\n"
    "Cast targets (fp16/bf16/fp32) round to nearest even; a finite value\n"
    "that overflows is an error. It is written to\n"
    ".OUT.nibble-tmp-PID-RANDOM next to OUT, fsync'd and renamed at the end;\n"
    "Ctrl-C (or SIGTERM) stops at the next tensor and removes it (exit\n"
    "130/143), a second Ctrl-C at once.\n"
    "Progress: a bar on stderr when it is a terminal (tensor i of N, bytes,\n"
    "speed, ETA), else a log line every 10 s; none with --quiet or -v.\n"
    "Example: nibble convert ./Llama-3.2-1B ./Llama-3.2-1B-int4 --scheme\n"
    "int4 --config tools/nibble/examples/mixed-precision.toml --report "
    "r.json\n";

}  // namespace

CLI::App* AddConvertCommand(CLI::App* app, ConvertOptions* o) {
  CLI::App* cmd = app->add_subcommand(
      "convert",
      "Convert a safetensors checkpoint (file or Hugging Face model "
      "directory, sharded or not) to a compressed-tensors model directory "
      "(INT8/INT4 pack-quantized), or a GGUF file to a GGUF file "
      "(Q8_0/Q4_0/Q4_1, as llama-quantize), and print a per-layer error "
      "table");
  cmd->add_option("IN", o->input,
                  "Input: a .safetensors file, a model directory or a "
                  ".gguf file")
      ->required();
  cmd->add_option("OUT", o->output,
                  "Output model directory, or .gguf file for GGUF input "
                  "(must not exist, unless --force)")
      ->required();
  cmd->add_option("--config", o->config, "Mixed-precision rules (TOML)")
      ->type_name("FILE");
  cmd->add_option("--scheme", o->scheme,
                  std::string("Default target of 2-D linear weights (replaces "
                              "the config's `default`; built-in: int8). ") +
                      kTargetNamesHelp + ". GGUF output: " +
                      kGgufTargetNamesHelp + " (built-in: q8_0)");
  cmd->add_option("--group-size", o->group_size,
                  "Group size of int4 names without -gN: 32, 64, 128, 256");
  cmd->add_option("--keep", o->keep,
                  "Keep tensors matching PATTERN unquantized (repeatable)")
      ->type_name("PATTERN");
  cmd->add_option("--tensor-type", o->tensor_type,
                  "PATTERN=SCHEME rule, before the config's rules (repeatable)")
      ->type_name("PATTERN=SCHEME");
  cmd->add_flag("--strict", o->strict, "Turn plan warnings into errors");
  cmd->add_flag("--dry-run", o->dry_run,
                "Print the plan and totals; write nothing");
  cmd->add_option("--threads", o->threads,
                  "OpenMP threads, 1 to 1024 (default: all cores)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--isa", o->isa, "Kernel path: auto|scalar|avx2|avx512")
      ->check(CLI::IsMember({"auto", "scalar", "avx2", "avx512"}));
  cmd->add_flag("--force", o->force, "Replace an existing OUT");
  cmd->add_option("--max-shard-size", o->max_shard_size,
                  "Largest shard (tensor bytes), e.g. 5GB, 500MB, 64MiB")
      ->capture_default_str();
  cmd->add_option("--report", o->report_path,
                  "Write the per-tensor report as JSON (keys tensors, totals)")
      ->type_name("FILE.json");
  cmd->add_option("--csv", o->csv_path, "Write the per-tensor rows as CSV")
      ->type_name("FILE");
  cmd->add_option("--top", o->top, "Rows of the table (worst SNR first)")
      ->capture_default_str();
  cmd->add_flag("-q,--quiet", o->quiet,
                "Print no table, only warnings and errors");
  cmd->footer(std::string(kPlanDefaultsHelp) + "\n" + kConvertHelp + "\n" +
              kGgufConvertHelp);
  return cmd;
}

int RunConvert(const ConvertOptions& o, const std::string& global_isa,
               std::string* error) {
  return RunReportingErrors(
      [&] {
        return IsGgufConversion(o) ? ConvertGguf(o, global_isa)
                                   : Convert(o, global_isa);
      },
      error);
}

}  // namespace nibble::tool
