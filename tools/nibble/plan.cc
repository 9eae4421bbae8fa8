#include "plan.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <new>
#include <string>
#include <unordered_set>
#include <utility>

namespace nibble::tool {

const char kPlanDefaultsHelp[] =
    "What gets quantized (the plan; --dry-run prints it):\n"
    "  - 2-D F32/F16/BF16 tensors whose name ends in '.weight' (the weights "
    "of\n"
    "    linear layers) get the default scheme (--scheme, or `default` in the\n"
    "    config; int8 when neither is given).\n"
    "  - lm_head (also embed_out) and token embeddings (a name part equal to\n"
    "    embed_tokens, wte, wpe, word_embeddings, tok_embeddings or "
    "embeddings,\n"
    "    or ending in _embeddings) are kept at their precision unless a rule\n"
    "    names them.\n"
    "  - 1-D tensors (biases, norm scales), scalars, tensors of 3 or more\n"
    "    dimensions, tensors not named '*.weight' and empty tensors are kept\n"
    "    (a quantizing rule does not apply to them; a cast rule does).\n"
    "  - Tensors of other dtypes (I64, F8_*, ...) are always kept; a rule "
    "that\n"
    "    asks to quantize or cast a 2-D '.weight' of such a dtype is an "
    "error.\n"
    "Rules: --keep PATTERN and --tensor-type PATTERN=SCHEME (in that order),\n"
    "then the config's [[rule]]s; the first rule whose pattern matches the\n"
    "tensor name or its module name (the name without '.weight') wins.\n"
    "Patterns are globs (*, ?, [abc]) matching the whole name, or\n"
    "'re:REGEX' (RE2, anchored at the start like Python's re.match).\n"
    "Warnings (errors with --strict):\n"
    "  - a rule that matches no tensor;\n"
    "  - a weight whose column count is not a multiple of its group size: it\n"
    "    is kept unquantized;\n"
    "  - q_proj/k_proj/v_proj or gate_proj/up_proj of one layer with "
    "different\n"
    "    targets (vLLM fuses them and refuses mixed schemes).\n"
    "vLLM's fast Marlin kernels take group sizes 32, 64, 128 and per-channel\n"
    "int8; group size 256 loads only on slower kernels, if at all.";

namespace {

struct DTypeEntry {
  const char* name;
  int bits;
};

constexpr DTypeEntry kDTypes[] = {
    {"F64", 64},    {"F32", 32},        {"F16", 16},        {"BF16", 16},
    {"I64", 64},    {"I32", 32},        {"I16", 16},        {"I8", 8},
    {"U64", 64},    {"U32", 32},        {"U16", 16},        {"U8", 8},
    {"BOOL", 8},    {"C64", 64},        {"F8_E4M3", 8},     {"F8_E5M2", 8},
    {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"F4", 4},
    {"F6_E2M3", 6}, {"F6_E3M2", 6},
};

bool MulOverflows(int64_t a, int64_t b, int64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}
bool AddOverflows(int64_t a, int64_t b, int64_t* out) {
  return __builtin_add_overflow(a, b, out);
}

Status Overflow(const std::string& name) {
  return Status(StatusCode::kInvalidArgument,
                "tensor '" + name + "': size overflows 64 bits");
}

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Splits on '.' and calls f on each part until it returns true.
template <typename F>
bool AnyPart(std::string_view name, F f) {
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    const std::string_view part =
        name.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (f(part)) return true;
    if (dot == std::string_view::npos) return false;
    start = dot + 1;
  }
}

bool IsLmHead(std::string_view name) {
  return AnyPart(name, [](std::string_view p) {
    return p == "lm_head" || p == "embed_out";
  });
}

bool IsEmbedding(std::string_view name) {
  return AnyPart(name, [](std::string_view p) {
    return p == "embed_tokens" || p == "wte" || p == "wpe" ||
           p == "word_embeddings" || p == "tok_embeddings" ||
           p == "embeddings" || EndsWith(p, "_embeddings");
  });
}

const char* DimsPhrase(size_t dims) {
  switch (dims) {
    case 0:
      return "scalar";
    case 1:
      return "1-D tensor";
    case 2:
      return "2-D tensor";
    default:
      return "tensor of 3 or more dimensions";
  }
}

// Fused layers of vLLM: parts that must share one target.
struct FusedGroup {
  const char* fused_name;
  const char* parts[3];
  int count;
};
constexpr FusedGroup kFusedGroups[] = {
    {"qkv_proj", {"q_proj", "k_proj", "v_proj"}, 3},
    {"gate_up_proj", {"gate_proj", "up_proj", nullptr}, 2},
};

std::string WithCommas(int64_t v) {
  std::string digits = std::to_string(v < 0 ? -v : v);
  std::string out;
  const int n = static_cast<int>(digits.size());
  for (int i = 0; i < n; ++i) {
    if (i > 0 && (n - i) % 3 == 0) out += ',';
    out += digits[static_cast<size_t>(i)];
  }
  return v < 0 ? "-" + out : out;
}

}  // namespace

bool IsEmbeddingName(std::string_view name) { return IsEmbedding(name); }

int SafetensorsDTypeBits(std::string_view dtype) {
  for (const DTypeEntry& e : kDTypes) {
    if (dtype == e.name) return e.bits;
  }
  return 0;
}

bool IsQuantizableDType(std::string_view dtype, DType* out) {
  DType d;
  if (dtype == "F32") {
    d = DType::kF32;
  } else if (dtype == "F16") {
    d = DType::kF16;
  } else if (dtype == "BF16") {
    d = DType::kBF16;
  } else {
    return false;
  }
  if (out != nullptr) *out = d;
  return true;
}

Status ComputeQuantizedBytes(const QuantScheme& scheme, int64_t rows,
                             int64_t cols, QuantizedBytes* out) {
  Status st = ValidateScheme(scheme, cols);
  if (!st.ok()) return st;
  if (rows < 0) {
    return Status(StatusCode::kInvalidArgument,
                  "row count must not be negative");
  }
  const std::string what = std::to_string(rows) + " x " + std::to_string(cols);
  QuantizedBytes q;
  int64_t bits_per_row = 0;
  int64_t words = 0;
  if (MulOverflows(cols, scheme.bits, &bits_per_row)) return Overflow(what);
  words = bits_per_row / 32 + (bits_per_row % 32 != 0 ? 1 : 0);
  if (MulOverflows(rows, words, &q.packed) ||
      MulOverflows(q.packed, 4, &q.packed)) {
    return Overflow(what);
  }
  const int64_t groups = GroupsPerRow(scheme, cols);
  if (MulOverflows(rows, groups, &q.scale) ||
      MulOverflows(q.scale, static_cast<int64_t>(DTypeSize(scheme.scale_dtype)),
                   &q.scale)) {
    return Overflow(what);
  }
  if (!scheme.symmetric) {
    const int64_t zp_rows = rows / 8 + (rows % 8 != 0 ? 1 : 0);
    if (MulOverflows(zp_rows, groups, &q.zero_point) ||
        MulOverflows(q.zero_point, 4, &q.zero_point)) {
      return Overflow(what);
    }
  }
  q.shape = 16;
  if (AddOverflows(q.packed, q.scale, &q.total) ||
      AddOverflows(q.total, q.zero_point, &q.total) ||
      AddOverflows(q.total, q.shape, &q.total)) {
    return Overflow(what);
  }
  *out = q;
  return Status::Ok();
}

std::string FormatShape(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

Status BuildPlan(const RuleSet& rules, const std::vector<TensorInfo>& tensors,
                 Plan* out) {
  try {
    *out = Plan();
    Plan& plan = *out;
    std::vector<std::string> strict_errors;
    auto warn = [&](std::string message, bool strict_error) {
      if (strict_error && rules.strict) strict_errors.push_back(message);
      plan.warnings.push_back(std::move(message));
    };
    std::vector<int64_t> matched(rules.rules.size(), 0);
    std::vector<int64_t> decided(rules.rules.size(), 0);
    std::unordered_set<std::string_view> seen;
    seen.reserve(tensors.size());
    plan.tensors.reserve(tensors.size());

    for (const TensorInfo& info : tensors) {
      const std::string& name = info.name;
      if (!seen.insert(std::string_view(name)).second) {
        return Status(StatusCode::kInvalidArgument,
                      "tensor '" + name + "' is listed twice");
      }
      TensorPlan tp;
      tp.name = name;
      tp.dtype = info.dtype;
      tp.shape = info.shape;

      const int bits = SafetensorsDTypeBits(info.dtype);
      if (bits == 0) {
        return Status(
            StatusCode::kInvalidArgument,
            "tensor '" + name + "': unknown dtype '" + info.dtype + "'");
      }
      int64_t numel = 1;
      for (int64_t d : info.shape) {
        if (d < 0) {
          return Status(StatusCode::kInvalidArgument,
                        "tensor '" + name + "': negative dimension in shape " +
                            FormatShape(info.shape));
        }
        if (MulOverflows(numel, d, &numel)) return Overflow(name);
      }
      int64_t total_bits = 0;
      if (MulOverflows(numel, bits, &total_bits)) return Overflow(name);
      tp.params = numel;
      tp.bytes_before = total_bits / 8 + (total_bits % 8 != 0 ? 1 : 0);

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

      DType src_dtype = DType::kF32;
      const bool is_float = IsQuantizableDType(info.dtype, &src_dtype);
      const bool is_matrix =
          info.shape.size() == 2 && EndsWith(name, ".weight");
      Target target = Target::Keep();
      std::string reason;
      // A quantizing target still has to fit the tensor's columns.
      bool check_columns = false;

      if (first >= 0) {
        const Rule& rule = rules.rules[static_cast<size_t>(first)];
        ++decided[static_cast<size_t>(first)];
        tp.rule = first;
        const std::string by = "rule " + rule.Describe();
        if (rule.target.kind == TargetKind::kKeep) {
          reason = by;
        } else if (!is_float) {
          if (is_matrix) {
            return Status(StatusCode::kInvalidArgument,
                          "tensor '" + name + "' has dtype " + info.dtype +
                              ": " + by + " asks to " +
                              (rule.target.quantized() ? "quantize" : "cast") +
                              " it, but only F32, F16 and BF16 tensors can be");
          }
          reason =
              "dtype " + info.dtype + " is kept (" + by + " does not apply)";
        } else if (rule.target.kind == TargetKind::kCast) {
          target = rule.target;
          reason = by;
        } else if (!is_matrix) {
          reason = std::string(is_float && info.shape.size() == 2
                                   ? "not a '.weight'"
                                   : DimsPhrase(info.shape.size())) +
                   ": kept (" + by + " quantizes 2-D weights only)";
        } else if (numel == 0) {
          reason = "empty tensor: kept";
        } else {
          target = rule.target;
          reason = by;
          check_columns = true;
          if (IsEmbedding(name)) {
            warn("tensor '" + name + "' is a token embedding quantized by " +
                     by +
                     ": loaders that quantize Linear layers only (vLLM's "
                     "compressed-tensors) may not load it",
                 false);
          }
        }
      } else if (!is_float) {
        reason = "dtype " + info.dtype + ": kept";
      } else if (!is_matrix) {
        reason = std::string(info.shape.size() == 2
                                 ? "not a '.weight'"
                                 : DimsPhrase(info.shape.size())) +
                 ": kept";
      } else if (IsLmHead(name)) {
        reason = "lm_head: kept unless a rule names it";
      } else if (IsEmbedding(name)) {
        reason = "token embedding: kept unless a rule names it";
      } else if (numel == 0) {
        reason = "empty tensor: kept";
      } else {
        target = rules.default_target;
        reason =
            "default " + TargetName(target) + " (" + rules.default_origin + ")";
        check_columns = target.quantized();
      }

      if (target.quantized()) {
        target.scheme.scale_dtype =
            rules.scale_dtype_auto ? src_dtype : rules.scale_dtype;
      }
      if (check_columns) {
        const int64_t cols = info.shape[1];
        Status fits = ValidateScheme(target.scheme, cols);
        if (!fits.ok()) {
          warn("tensor '" + name + "' " + FormatShape(info.shape) + ": " +
                   TargetName(target) + " does not fit: " + fits.message() +
                   "; kept unquantized",
               true);
          reason = TargetName(target) + " does not fit " +
                   std::to_string(cols) + " columns: kept";
          target = Target::Keep();
        }
      }

      tp.target = target;
      tp.reason = std::move(reason);
      switch (target.kind) {
        case TargetKind::kKeep:
          tp.bytes_after = tp.bytes_before;
          break;
        case TargetKind::kCast:
          if (MulOverflows(numel,
                           static_cast<int64_t>(DTypeSize(target.cast_dtype)),
                           &tp.bytes_after)) {
            return Overflow(name);
          }
          break;
        case TargetKind::kQuantize: {
          QuantizedBytes q;
          Status st = ComputeQuantizedBytes(target.scheme, info.shape[0],
                                            info.shape[1], &q);
          if (!st.ok()) {
            return Status(st.code(), "tensor '" + name + "': " + st.message());
          }
          tp.bytes_after = q.total;
          break;
        }
      }

      PlanTotals& t = plan.totals;
      ++t.tensors;
      if (target.kind == TargetKind::kQuantize) {
        ++t.quantized;
        t.params_quantized += numel;
      } else if (target.kind == TargetKind::kCast) {
        ++t.cast;
      } else {
        ++t.kept;
      }
      if (AddOverflows(t.params, numel, &t.params) ||
          AddOverflows(t.bytes_before, tp.bytes_before, &t.bytes_before) ||
          AddOverflows(t.bytes_after, tp.bytes_after, &t.bytes_after)) {
        return Overflow("(totals)");
      }
      plan.tensors.push_back(std::move(tp));
    }

    // Rules that decide nothing.
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

    // Fused layers split by the rules. Key: layer prefix + fused name.
    struct Parts {
      std::string layer;
      const FusedGroup* group;
      std::vector<std::pair<std::string, std::string>> members;  // part, target
    };
    std::map<std::string, size_t> index;
    std::vector<Parts> fused;
    for (const TensorPlan& tp : plan.tensors) {
      if (!EndsWith(tp.name, ".weight")) continue;
      const std::string_view module = ModuleName(tp.name);
      const size_t dot = module.rfind('.');
      const std::string_view last =
          dot == std::string_view::npos ? module : module.substr(dot + 1);
      const std::string_view layer = dot == std::string_view::npos
                                         ? std::string_view()
                                         : module.substr(0, dot);
      for (const FusedGroup& g : kFusedGroups) {
        for (int p = 0; p < g.count; ++p) {
          if (last != g.parts[p]) continue;
          const std::string key = std::string(layer) + '\n' + g.fused_name;
          auto it = index.find(key);
          if (it == index.end()) {
            it = index.emplace(key, fused.size()).first;
            fused.push_back(Parts{std::string(layer), &g, {}});
          }
          fused[it->second].members.emplace_back(std::string(last),
                                                 TargetName(tp.target));
        }
      }
    }
    for (const Parts& f : fused) {
      bool split = false;
      for (const auto& m : f.members) split |= m.second != f.members[0].second;
      if (!split) continue;
      std::string list;
      for (const auto& m : f.members) {
        if (!list.empty()) list += ", ";
        list += m.first + " " + m.second;
      }
      warn("layer '" + f.layer + "': " + list + ": vLLM fuses them into " +
               f.group->fused_name + " and needs one target for all",
           true);
    }

    if (!strict_errors.empty()) {
      std::string message = strict_errors.front();
      if (strict_errors.size() > 1) {
        message +=
            " (and " + std::to_string(strict_errors.size() - 1) + " more)";
      }
      return Status(StatusCode::kInvalidArgument, message + " [strict]");
    }
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal, "out of memory building the plan");
  }
}

std::string RenderPlan(const Plan& plan) {
  const std::vector<std::string> headers = {
      "tensor", "shape", "dtype", "target", "bytes before -> after", "reason"};
  std::vector<std::vector<std::string>> rows;
  rows.reserve(plan.tensors.size());
  for (const TensorPlan& tp : plan.tensors) {
    rows.push_back(
        {tp.name, FormatShape(tp.shape), tp.dtype,
         tp.target_name.empty() ? TargetName(tp.target) : tp.target_name,
         std::to_string(tp.bytes_before) + " -> " +
             std::to_string(tp.bytes_after),
         tp.reason});
  }
  std::vector<size_t> width(headers.size());
  for (size_t c = 0; c < headers.size(); ++c) width[c] = headers[c].size();
  for (const auto& row : rows) {
    for (size_t c = 0; c < row.size(); ++c) {
      width[c] = std::max(width[c], row[c].size());
    }
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string s;
    for (size_t c = 0; c < cells.size(); ++c) {
      if (c + 1 == cells.size()) {
        s += cells[c];  // no trailing padding after the last column
      } else {
        s += cells[c];
        s.append(width[c] - cells[c].size() + 2, ' ');
      }
    }
    return s + "\n";
  };
  std::string out = line(headers);
  for (const auto& row : rows) out += line(row);
  for (const std::string& w : plan.warnings) out += "warning: " + w + "\n";
  const PlanTotals& t = plan.totals;
  char ratio[64];
  if (t.bytes_after > 0) {
    std::snprintf(ratio, sizeof ratio, "%.2fx smaller",
                  static_cast<double>(t.bytes_before) /
                      static_cast<double>(t.bytes_after));
  } else {
    std::snprintf(ratio, sizeof ratio, "empty");
  }
  out += "total: " + std::to_string(t.tensors) + " tensors (" +
         std::to_string(t.quantized) + " quantized, " + std::to_string(t.cast) +
         " cast, " + std::to_string(t.kept) + " kept), " +
         WithCommas(t.params) + " parameters (" +
         WithCommas(t.params_quantized) + " quantized), " +
         std::to_string(t.bytes_before) + " -> " +
         std::to_string(t.bytes_after) + " bytes (" + ratio + ")\n";
  return out;
}

}  // namespace nibble::tool
