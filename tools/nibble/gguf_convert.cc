// `nibble convert` for GGUF input and output: see gguf_convert.h.
#include "gguf_convert.h"

#include <fcntl.h>
#include <omp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <new>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "cast.h"
#include "layer_report.h"
#include "nibble/ggml_blocks.h"
#include "nibble/io/gguf_writer.h"
#include "nibble/nibble.h"
#include "output_dir.h"
#include "progress.h"
#include "report_files.h"
#include "target.h"

namespace nibble::tool {

const char kGgufConvertHelp[] =
    "GGUF: IN a .gguf file (v2 or v3; recognised by its magic) converts to\n"
    "OUT a .gguf file (version 3), as llama-quantize does for the types\n"
    "nibble writes: --scheme, `default`, --tensor-type and config rules take\n"
    "q8_0, q4_0, q4_1 (llama.cpp's blocks: the same bytes as ggml's\n"
    "reference quantizers), f16, bf16, f32 or keep; q8_0 when nothing names\n"
    "a default. Compressed-tensors names (int8, int4-g128, ...) are refused\n"
    "for GGUF output, GGUF names for safetensors output; --group-size does\n"
    "not apply and --max-shard-size is ignored (one file).\n"
    "GGUF defaults (any rule overrides them; the first matching rule wins):\n"
    "  - tensors of 2 or more dimensions whose name ends in 'weight' get the\n"
    "    scheme (3-D expert tensors as matrices of ne[0]-long rows), except\n"
    "    those llama-quantize never quantizes, which are copied as they are:\n"
    "    *_norm.weight, ffn_gate_inp, position_embd, token_types, Mamba's\n"
    "    ssm_conv1d, RWKV's time_mix_* factors, T5's attn_rel_b;\n"
    "  - output.weight, and token_embd.weight when the model has no\n"
    "    output.weight (tied embeddings), get q8_0 when the scheme is q4_0 or\n"
    "    q4_1 (llama-quantize writes Q6_K there, a type nibble does not\n"
    "    write; Q8_0 is the closest higher precision it does); token_embd\n"
    "    otherwise follows the scheme;\n"
    "  - 1-D tensors (norms, biases) are copied as they are (F32 stays F32,\n"
    "    F16 stays F16, as llama-quantize keeps them); a cast rule (f32,\n"
    "    f16, bf16) applies to them, a quantizing rule does not;\n"
    "  - F16/BF16 data are widened exactly to F32 before quantizing, as\n"
    "    ggml does; tensors of any other type (already quantized, integer)\n"
    "    are copied as they are (nibble does not requantize: a rule asking\n"
    "    for it is a warning, an error with --strict);\n"
    "  - a row length (ne[0]) that is not a multiple of 32 cannot hold q8_0,\n"
    "    q4_0 or q4_1 blocks: the tensor is copied as it is, with a warning\n"
    "    (an error with --strict).\n"
    "Every metadata key is copied with its exact bytes, in order;\n"
    "general.file_type becomes the llama ftype of the scheme (f32 0, f16 1,\n"
    "q4_0 2, q4_1 3, q8_0 7, bf16 32) and general.quantization_version 2\n"
    "(u32; both added at the end when missing; left alone for --scheme\n"
    "keep); general.alignment is honoured. Tensor order and names are kept.\n"
    "Shapes in the plan and the report are in GGUF ne order (ne[0], the row\n"
    "length, first), as gguf-py and llama.cpp print them. The input is\n"
    "checked whole before anything is written (counts, lengths, types,\n"
    "dimensions, offsets, alignment: errors name the key or tensor and the\n"
    "byte offset, exit 2); NaN/Inf in a tensor to quantize is an error\n"
    "naming its row and column. OUT is written to .OUT.nibble-tmp-PID-*\n"
    "next to it and renamed when complete; Ctrl-C (or SIGTERM) removes it\n"
    "(exit 130/143). OUT equal to IN (the same file, links included) is\n"
    "refused; an existing OUT needs --force. Memory: about one tensor (the\n"
    "input is mapped, the output written tensor by tensor).\n"
    "Example: nibble convert model-f16.gguf model-q4_0.gguf --scheme q4_0\n"
    "--tensor-type 'blk.*.ffn_down.weight=q8_0' --report r.json\n";

namespace {

namespace fs = std::filesystem;

constexpr char kGgufBuiltinDefault[] = "q8_0";
constexpr int64_t kGgmlBlock = 32;

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool EndsWithGguf(const std::string& path) {
  if (path.size() < 5) return false;
  std::string tail = path.substr(path.size() - 5);
  for (char& c : tail)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return tail == ".gguf";
}

enum class Sniff { kGguf, kOther, kDirectory, kUnreadable };

Sniff SniffInput(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return Sniff::kUnreadable;
  if (S_ISDIR(st.st_mode)) return Sniff::kDirectory;
  if (!S_ISREG(st.st_mode)) return Sniff::kUnreadable;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Sniff::kUnreadable;
  char magic[4];
  ssize_t n;
  do {
    n = ::pread(fd, magic, sizeof magic, 0);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  if (n != static_cast<ssize_t>(sizeof magic)) return Sniff::kUnreadable;
  return std::memcmp(magic, "GGUF", 4) == 0 ? Sniff::kGguf : Sniff::kOther;
}

// The GGUF type a quantizing target writes.
io::GgmlType BlockType(const QuantScheme& s) {
  if (s.bits == 8) return io::GgmlType::kQ8_0;
  return s.symmetric ? io::GgmlType::kQ4_0 : io::GgmlType::kQ4_1;
}

io::GgmlType OutputType(const Target& t, io::GgmlType input) {
  switch (t.kind) {
    case TargetKind::kKeep:
      return input;
    case TargetKind::kCast:
      return io::KernelToGgmlType(t.cast_dtype);
    case TargetKind::kQuantize:
      return BlockType(t.scheme);
  }
  return input;
}

// Why llama-quantize never quantizes a tensor of 2 or more dimensions (its
// tensor_allows_quantization, src/llama-quant.cpp); empty when it does.
std::string DefaultKeepReason(const std::string& name) {
  if (!EndsWith(name, "weight")) return "not a '*weight' tensor";
  struct Rule {
    const char* part;
    const char* why;
  };
  static constexpr Rule kContains[] = {
      {"_norm.weight", "norm"},
      {"ffn_gate_inp.weight", "expert router (ffn_gate_inp)"},
      {"ssm_conv1d.weight", "Mamba conv1d"},
      {"shortconv.conv.weight", "short convolution"},
      {"time_mix_first.weight", "RWKV time_mix factor"},
      {"time_mix_w0.weight", "RWKV time_mix factor"},
      {"time_mix_w1.weight", "RWKV time_mix factor"},
      {"time_mix_w2.weight", "RWKV time_mix factor"},
      {"time_mix_v0.weight", "RWKV time_mix factor"},
      {"time_mix_v1.weight", "RWKV time_mix factor"},
      {"time_mix_v2.weight", "RWKV time_mix factor"},
      {"time_mix_a0.weight", "RWKV time_mix factor"},
      {"time_mix_a1.weight", "RWKV time_mix factor"},
      {"time_mix_a2.weight", "RWKV time_mix factor"},
      {"time_mix_g1.weight", "RWKV time_mix factor"},
      {"time_mix_g2.weight", "RWKV time_mix factor"},
      {"time_mix_decay_w1.weight", "RWKV time_mix factor"},
      {"time_mix_decay_w2.weight", "RWKV time_mix factor"},
      {"time_mix_lerp_fused.weight", "RWKV time_mix factor"},
      {"attn_rel_b.weight", "relative position bias"},
      {".position_embd.", "position embedding"},
  };
  for (const Rule& r : kContains)
    if (name.find(r.part) != std::string::npos) return r.why;
  if (name == "position_embd.weight") return "position embedding";
  if (name == "token_types.weight") return "token types";
  return "";
}

bool IsQ4(const Target& t) {
  return t.quantized() && IsGgml(t.scheme) && t.scheme.bits == 4;
}

Status Overflow(const std::string& name) {
  return Status(StatusCode::kInvalidArgument,
                "tensor '" + name + "': size overflows 64 bits");
}

const char* FileTypeName(LlamaFileType t) {
  switch (t) {
    case LlamaFileType::kAllF32:
      return "ALL_F32";
    case LlamaFileType::kMostlyF16:
      return "MOSTLY_F16";
    case LlamaFileType::kMostlyQ4_0:
      return "MOSTLY_Q4_0";
    case LlamaFileType::kMostlyQ4_1:
      return "MOSTLY_Q4_1";
    case LlamaFileType::kMostlyQ8_0:
      return "MOSTLY_Q8_0";
    case LlamaFileType::kMostlyBF16:
      return "MOSTLY_BF16";
  }
  return "?";
}

// general.file_type for a default target; false for keep.
bool FileTypeFor(const Target& t, LlamaFileType* out) {
  switch (t.kind) {
    case TargetKind::kKeep:
      return false;
    case TargetKind::kCast:
      *out = t.cast_dtype == DType::kF16    ? LlamaFileType::kMostlyF16
             : t.cast_dtype == DType::kBF16 ? LlamaFileType::kMostlyBF16
                                            : LlamaFileType::kAllF32;
      return true;
    case TargetKind::kQuantize:
      switch (BlockType(t.scheme)) {
        case io::GgmlType::kQ4_0:
          *out = LlamaFileType::kMostlyQ4_0;
          break;
        case io::GgmlType::kQ4_1:
          *out = LlamaFileType::kMostlyQ4_1;
          break;
        default:
          *out = LlamaFileType::kMostlyQ8_0;
          break;
      }
      return true;
  }
  return false;
}

// OUT against IN: a usable name, not the input file (same inode: symlinks
// and hard links included), not existing unless `force`.
void CheckOutputFile(const std::string& output, const std::string& input,
                     bool force) {
  if (output.empty()) UsageError("OUT is empty");
  struct stat in_st, out_st, link_st;
  if (::stat(input.c_str(), &in_st) != 0)
    IoError("cannot stat '" + input + "': " + std::strerror(errno));
  const bool target_exists = ::stat(output.c_str(), &out_st) == 0;
  if (target_exists && out_st.st_dev == in_st.st_dev &&
      out_st.st_ino == in_st.st_ino)
    UsageError("OUT '" + output + "' is the input file '" + input + "'");
  if (::lstat(output.c_str(), &link_st) == 0) {
    if ((target_exists && S_ISDIR(out_st.st_mode)) || S_ISDIR(link_st.st_mode))
      UsageError("OUT '" + output + "' is a directory");
    if (!force)
      UsageError("OUT '" + output + "' exists (use --force to replace it)");
  } else if (errno != ENOENT) {
    IoError("cannot stat '" + output + "': " + std::strerror(errno));
  }
}

}  // namespace

bool IsGgufConversion(const ConvertOptions& o) {
  const Sniff in = SniffInput(o.input);
  // A file named *.gguf goes to the GGUF reader whatever it holds, so that
  // a wrong magic is reported as such (with its offset), not as a mismatch.
  const bool in_gguf =
      in == Sniff::kGguf || (in != Sniff::kDirectory && EndsWithGguf(o.input));
  const bool out_gguf = EndsWithGguf(o.output);
  if (in_gguf && !out_gguf)
    UsageError(o.input + ": a GGUF file converts to a GGUF file only: OUT '" +
               o.output + "' must end in .gguf");
  if (!in_gguf && out_gguf && in != Sniff::kUnreadable)
    UsageError("OUT '" + o.output + "' is a GGUF file name, but IN '" +
               o.input +
               "' is not a GGUF file: GGUF output is made from GGUF input "
               "only (safetensors converts to a compressed-tensors "
               "directory)");
  return in_gguf;
}

Status BuildGgufPlan(const RuleSet& rules,
                     const std::vector<io::GgufTensorInfo>& tensors,
                     GgufPlan* out) {
  try {
    *out = GgufPlan();
    GgufPlan& gp = *out;
    Plan& plan = gp.plan;
    std::vector<std::string> strict_errors;
    auto warn = [&](std::string message, bool strict_error) {
      if (strict_error && rules.strict) strict_errors.push_back(message);
      plan.warnings.push_back(std::move(message));
    };
    std::vector<int64_t> matched(rules.rules.size(), 0);
    std::vector<int64_t> decided(rules.rules.size(), 0);
    gp.set_file_type = FileTypeFor(rules.default_target, &gp.file_type);
    const std::string scheme_name = GgufTargetName(rules.default_target);
    const bool has_output = std::any_of(
        tensors.begin(), tensors.end(),
        [](const io::GgufTensorInfo& t) { return t.name == "output.weight"; });
    plan.tensors.reserve(tensors.size());
    gp.types.reserve(tensors.size());

    for (const io::GgufTensorInfo& t : tensors) {
      const std::string& name = t.name;
      const std::string type_name = io::GgmlTypeName(t.type);
      TensorPlan tp;
      tp.name = name;
      tp.dtype = type_name;
      tp.shape = t.ne;
      tp.params = t.n_elements;
      if (t.byte_size > static_cast<uint64_t>(INT64_MAX)) return Overflow(name);
      tp.bytes_before = static_cast<int64_t>(t.byte_size);

      int first = -1;
      for (size_t r = 0; r < rules.rules.size(); ++r) {
        bool hit = false;
        for (const NamePattern& p : rules.rules[r].patterns) {
          if (p.Matches(name)) {
            hit = true;
            break;
          }
        }
        if (hit) {
          ++matched[r];
          if (first < 0) first = static_cast<int>(r);
        }
      }

      DType src = DType::kF32;
      const bool is_float = io::GgmlTypeToKernel(t.type, &src);
      const bool is_output = name == "output.weight" ||
                             (!has_output && name == "token_embd.weight");
      Target target = Target::Keep();
      std::string reason;
      bool check_rows = false;

      if (first >= 0) {
        const Rule& rule = rules.rules[static_cast<size_t>(first)];
        ++decided[static_cast<size_t>(first)];
        tp.rule = first;
        const std::string by = "rule " + rule.Describe();
        if (rule.target.kind == TargetKind::kKeep) {
          reason = by;
        } else if (!is_float) {
          warn("tensor '" + name + "' has type " + type_name + ": " + by +
                   " asks to " +
                   (rule.target.quantized() ? "quantize" : "cast") +
                   " it, but nibble converts F32, F16 and BF16 tensors only "
                   "(no requantization); copied as it is",
               true);
          reason = "type " + type_name + ": copied (" + by + " does not apply)";
        } else if (rule.target.kind == TargetKind::kCast) {
          target = rule.target;
          reason = by;
        } else if (t.ne.size() < 2) {
          reason = "1-D tensor: kept (" + by +
                   " quantizes tensors of 2 or more dimensions only)";
        } else {
          target = rule.target;
          reason = by;
          check_rows = true;
        }
      } else if (!is_float) {
        reason = "type " + type_name + ": copied";
      } else if (t.ne.size() < 2) {
        reason = "1-D tensor: kept";
      } else if (std::string why = DefaultKeepReason(name); !why.empty()) {
        reason = why + ": kept (as llama-quantize)";
      } else {
        target = rules.default_target;
        reason = "default " + scheme_name + " (" + rules.default_origin + ")";
        if (is_output && IsQ4(target)) {
          target = Target::Quantize(GgmlQ8_0());
          reason = std::string(name == "output.weight"
                                   ? "output"
                                   : "token_embd tied to the output") +
                   ": q8_0 under " + scheme_name +
                   " (llama-quantize's Q6_K is not written by nibble)";
        }
        check_rows = target.quantized();
      }

      if (target.kind == TargetKind::kCast && target.cast_dtype == src) {
        reason += ": already " + type_name;
        target = Target::Keep();
      }
      if (check_rows && t.ne[0] % kGgmlBlock != 0) {
        const std::string q = GgufTargetName(target);
        warn("tensor '" + name + "' " + FormatShape(t.ne) + ": " + q +
                 " needs a row length (ne[0]) that is a multiple of 32, got " +
                 std::to_string(t.ne[0]) + "; kept as " + type_name,
             true);
        reason = q + " does not fit row length " + std::to_string(t.ne[0]) +
                 ": kept";
        target = Target::Keep();
      }

      const io::GgmlType type = OutputType(target, t.type);
      int64_t elements = 0;
      uint64_t bytes = 0;
      if (!io::GgmlTensorByteSize(type, t.ne, &elements, &bytes) ||
          bytes > static_cast<uint64_t>(INT64_MAX))
        return Overflow(name);
      tp.bytes_after = static_cast<int64_t>(bytes);
      tp.target = target;
      tp.target_name = GgufTargetName(target);
      tp.reason = std::move(reason);

      PlanTotals& tot = plan.totals;
      ++tot.tensors;
      if (target.kind == TargetKind::kQuantize) {
        ++tot.quantized;
        tot.params_quantized += t.n_elements;
      } else if (target.kind == TargetKind::kCast) {
        ++tot.cast;
      } else {
        ++tot.kept;
      }
      if (__builtin_add_overflow(tot.params, t.n_elements, &tot.params) ||
          __builtin_add_overflow(tot.bytes_before, tp.bytes_before,
                                 &tot.bytes_before) ||
          __builtin_add_overflow(tot.bytes_after, tp.bytes_after,
                                 &tot.bytes_after))
        return Overflow("(totals)");
      plan.tensors.push_back(std::move(tp));
      gp.types.push_back(type);
    }

    for (size_t r = 0; r < rules.rules.size(); ++r) {
      if (matched[r] == 0) {
        warn("rule " + rules.rules[r].Describe() + " matches no tensor", true);
      } else if (decided[r] == 0) {
        warn("rule " + rules.rules[r].Describe() + " matches " +
                 std::to_string(matched[r]) +
                 " tensor(s), all decided by earlier rules",
             false);
      }
    }
    if (!strict_errors.empty()) {
      std::string message = strict_errors.front();
      if (strict_errors.size() > 1)
        message +=
            " (and " + std::to_string(strict_errors.size() - 1) + " more)";
      return Status(StatusCode::kInvalidArgument, message + " [strict]");
    }
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal, "out of memory building the plan");
  }
}

int ConvertGguf(const ConvertOptions& o, const std::string& global_isa) {
  if (o.quiet) spdlog::set_level(spdlog::level::warn);
  const ExecOptions exec = ResolveExecOptions(o.threads, o.isa, global_isa);
  if (o.group_size.has_value())
    UsageError(
        "--group-size does not apply to GGUF output (q8_0, q4_0 and q4_1 "
        "blocks hold 32 values)");

  // Rules first, with GGUF type names: a bad option fails before the input
  // is read.
  const ScopedTargetFormat gguf_names(TargetFormat::kGguf);
  ConfigFile file;
  const bool have_config = !o.config.empty();
  if (have_config) Check(LoadConfigFile(o.config, &file), "");
  // --tensor-type rules are checked here first so that the message quotes
  // the whole rule, not only its type.
  for (const std::string& arg : o.tensor_type) {
    const size_t eq = arg.rfind('=');
    Target check;
    if (eq != std::string::npos && eq > 0 && eq + 1 < arg.size()) {
      const Status st = ParseGgufTarget(arg.substr(eq + 1), &check);
      if (!st.ok()) UsageError("--tensor-type '" + arg + "': " + st.message());
    }
  }
  Overrides ov;
  ov.scheme = o.scheme;
  ov.keep = o.keep;
  ov.tensor_type = o.tensor_type;
  ov.strict = o.strict;
  const bool builtin =
      ov.scheme.empty() && !(have_config && file.default_target.has_value());
  if (builtin) ov.scheme = kGgufBuiltinDefault;
  RuleSet rules;
  Check(BuildRuleSet(have_config ? &file : nullptr, ov, &rules), "");
  if (builtin) rules.default_origin = "built-in";
  if (have_config && file.scale_dtype.has_value())
    spdlog::warn(
        "{}: scale_dtype does not apply to GGUF output (block scales are "
        "F16)",
        o.config);
  if (have_config && file.group_size.has_value())
    spdlog::warn("{}: group_size does not apply to GGUF output (blocks of 32)",
                 o.config);

  std::unique_ptr<io::GgufFile> in;
  Check(io::GgufFile::Open(o.input, &in), "");
  GgufPlan gp;
  const Status plan_status = BuildGgufPlan(rules, in->tensors(), &gp);
  for (const std::string& w : gp.plan.warnings) spdlog::warn("{}", w);
  Check(plan_status, o.input);
  const Plan& plan = gp.plan;
  const std::string metadata_line =
      gp.set_file_type
          ? "metadata: general.file_type = " +
                std::to_string(static_cast<uint32_t>(gp.file_type)) + " (" +
                FileTypeName(gp.file_type) +
                "), general.quantization_version = " +
                std::to_string(kGgmlQuantizationVersion) + ", alignment " +
                std::to_string(in->alignment()) + "\n"
          : "metadata: copied unchanged, alignment " +
                std::to_string(in->alignment()) + "\n";

  if (o.dry_run) {
    std::cout << RenderPlan(plan) << metadata_line;
    return 0;
  }

  CheckOutputFile(o.output, o.input, o.force);

  // A bad report path fails before the work starts; the reports are
  // written at the end.
  const ReportDestination json_check{o.report_path, ""},
      csv_check{o.csv_path, ""};
  json_check.CheckWritable();
  csv_check.CheckWritable();

  io::GgufMetadata metadata = in->metadata();
  if (gp.set_file_type) {
    // In llama-quantize's order, which decides where missing keys go.
    metadata.SetU32(io::kGgufKeyQuantizationVersion, kGgmlQuantizationVersion);
    metadata.SetU32(io::kGgufKeyFileType, static_cast<uint32_t>(gp.file_type));
  }
  const std::vector<io::GgufTensorInfo>& tensors = in->tensors();
  std::vector<io::GgufTensorSpec> specs;
  specs.reserve(tensors.size());
  int64_t total_bytes = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    io::GgufTensorSpec spec;
    Check(io::MakeGgufTensorSpec(tensors[i].name, gp.types[i], tensors[i].ne,
                                 &spec),
          o.input);
    specs.push_back(std::move(spec));
    total_bytes += plan.tensors[i].bytes_before;
  }

  // The handlers go in before the temporary exists, so that no signal can
  // arrive between its creation and the handler that removes it. There is
  // no temporary directory: the writer's AtomicFile registers its temporary
  // file, which the handlers remove (RemoveTemporariesOnSignal).
  InstallInterruptHandlers(fs::path());
  CheckInterrupted();
  io::GgufWriteOptions wopt;
  wopt.version = 3;
  wopt.alignment = 0;  // general.alignment of the metadata, else 32
  wopt.overwrite = o.force;
  std::unique_ptr<io::GgufWriter> writer;
  Check(io::GgufWriter::Create(o.output, metadata, specs, wopt, &writer),
        o.output);

  std::vector<LayerRow> rows;
  rows.reserve(tensors.size());
  const size_t n = tensors.size();
  int64_t bytes_done = 0;
  // No bar under --verbose: the per-tensor debug lines would cut into it.
  Progress progress("converted", static_cast<int64_t>(n), total_bytes,
                    !o.quiet && !spdlog::should_log(spdlog::level::debug));
  std::vector<uint8_t> buffer;
  for (size_t i = 0; i < n; ++i) {
    CheckInterrupted();
    const io::GgufTensorInfo& t = tensors[i];
    const TensorPlan& tp = plan.tensors[i];
    progress.Start(static_cast<int64_t>(i), bytes_done, t.name);
    SetCurrentInput(in->path(), t.name);
    bytes_done += tp.bytes_before;
    const std::string where = in->path() + ": tensor '" + t.name +
                              "' (data at byte " +
                              std::to_string(t.data_offset) + ")";
    const uint8_t* data = nullptr;
    Check(in->TensorData(t, &data), where);
    const std::string write_ctx =
        o.output + ": writing tensor '" + t.name + "'";

    LayerRow row;
    row.name = t.name;
    row.shape = t.ne;
    row.params = t.n_elements;
    row.bytes_in = tp.bytes_before;
    row.scheme = tp.target_name;
    switch (tp.target.kind) {
      case TargetKind::kKeep: {
        Check(writer->WriteTensor(t.name, data, t.byte_size), write_ctx);
        row =
            KeptRow(t.name, t.ne, t.n_elements, tp.bytes_before,
                    t.n_elements > 0 ? 8.0 * static_cast<double>(t.byte_size) /
                                           static_cast<double>(t.n_elements)
                                     : 0);
        break;
      }
      case TargetKind::kCast: {
        DType from;
        if (!io::GgmlTypeToKernel(t.type, &from))
          throw ToolError(4, where + ": planned cast of a non-float tensor");
        const CastResult r = CastElements(data, from, tp.target.cast_dtype,
                                          t.n_elements, &buffer);
        if (r.overflow_index >= 0)
          throw ToolError(
              2, where + ": element " + std::to_string(r.overflow_index) +
                     " (" + std::to_string(r.overflow_value) + ") overflows " +
                     DTypeName(tp.target.cast_dtype));
        Check(writer->WriteTensor(t.name, buffer.data(), buffer.size()),
              write_ctx);
        row.m = r.metrics;
        row.bits_per_weight =
            8.0 * static_cast<double>(DTypeSize(tp.target.cast_dtype));
        row.bytes_out = static_cast<int64_t>(buffer.size());
        break;
      }
      case TargetKind::kQuantize: {
        DType from;
        if (!io::GgmlTypeToKernel(t.type, &from) || t.ne.size() < 2)
          throw ToolError(4, where +
                                 ": planned for quantization but not a float "
                                 "tensor of 2 or more dimensions");
        const int64_t cols = t.ne[0];
        const int64_t rows_n = t.n_elements / cols;
        // F16 and BF16 are widened to F32 inside the kernel (exactly, as
        // ggml's to-float conversion), so the blocks are those of the F32
        // values; the metrics come from the same pass.
        const ConstMatrixView view{data, from, rows_n, cols, cols};
        buffer.resize(static_cast<size_t>(tp.bytes_after));
        ErrorSums sums;
        Check(QuantizeToGgmlBlocks(view, tp.target.scheme, buffer.data(),
                                   buffer.size(), &sums, exec),
              where);
        Check(writer->WriteTensor(t.name, buffer.data(), buffer.size()),
              write_ctx);
        row.m = Summarize(sums);
        row.quantized = true;
        row.bytes_out = tp.bytes_after;
        row.bits_per_weight = 8.0 * static_cast<double>(tp.bytes_after) /
                              static_cast<double>(t.n_elements);
        break;
      }
    }
    ReleasePages(data, t.byte_size);
    spdlog::debug("[{}/{}] {} {} snr {:.2f} dB", i + 1, n, t.name, row.scheme,
                  row.m.snr_db);
    rows.push_back(std::move(row));
  }
  progress.Clear();
  // Large buffers go before the commit's fsync.
  std::vector<uint8_t>().swap(buffer);
  CheckInterrupted();
  Check(writer->Finish(), o.output);
  writer.reset();

  const LayerTotals totals = ComputeTotals(rows);
  if (!o.quiet && !json_check.to_stdout() && !csv_check.to_stdout()) {
    PrintLayerTable(std::cout, rows, totals, o.top);
    std::cout.flush();
  }
  WriteConvertReports(o.report_path, o.csv_path, rows, totals, o.input,
                      o.output);
  spdlog::info("wrote {} ({} tensors, {})", o.output, n,
               gp.set_file_type ? FileTypeName(gp.file_type) : "types kept");
  return 0;
}

}  // namespace nibble::tool
