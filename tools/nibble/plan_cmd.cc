// `nibble plan`: see plan_cmd.h.
#include "plan_cmd.h"

#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config.h"
#include "inspect.h"
#include "layer_report.h"
#include "measure.h"
#include "nibble/io/checkpoint.h"
#include "nibble/io/safetensors.h"
#include "nibble/nibble.h"
#include "output_dir.h"
#include "pattern.h"
#include "plan.h"
#include "progress.h"
#include "report_files.h"
#include "target.h"
#include "text.h"

namespace nibble::tool {

// ---------------------------------------------------------------------------
// The solver.

namespace {

int64_t CheckedAdd(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r))
    throw ToolError(2, "plan: byte count overflows 64 bits");
  return r;
}

// Total bytes and error of one choice; the error summed in group order (the
// order every comparison uses).
void Evaluate(const std::vector<KnapsackGroup>& groups,
              const std::vector<int>& choice, int64_t* bytes, double* error) {
  int64_t b = 0;
  double e = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    const KnapsackOption& o = groups[g].options[static_cast<size_t>(choice[g])];
    b = CheckedAdd(b, o.bytes);
    e += o.error;
  }
  *bytes = b;
  *error = e;
}

// The LP relaxation's optimum: each group's lower convex hull of (bytes,
// error), every group at its hull's first point, then hull segments taken
// by error decrease per byte (largest first) while the capacity lasts, the
// last one fractionally.
double LowerBound(const std::vector<KnapsackGroup>& groups,
                  const std::vector<std::vector<int>>& order,
                  int64_t capacity) {
  struct Segment {
    long double db, de;  // de < 0
    size_t group, pos;
  };
  std::vector<Segment> segments;
  long double error = 0, room = static_cast<long double>(capacity);
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::vector<KnapsackOption>& opts = groups[g].options;
    // Pareto frontier in order of bytes (error strictly decreasing), then
    // its lower convex hull (Andrew's monotone chain).
    std::vector<const KnapsackOption*> sorted;
    for (int k : order[g]) sorted.push_back(&opts[static_cast<size_t>(k)]);
    std::stable_sort(sorted.begin(), sorted.end(),
                     [](const KnapsackOption* a, const KnapsackOption* b) {
                       return a->bytes != b->bytes ? a->bytes < b->bytes
                                                   : a->error < b->error;
                     });
    std::vector<const KnapsackOption*> hull;
    for (const KnapsackOption* p : sorted) {
      if (!hull.empty() && p->error >= hull.back()->error) continue;
      while (hull.size() >= 2) {
        const KnapsackOption* a = hull[hull.size() - 2];
        const KnapsackOption* b = hull.back();
        const long double cross =
            static_cast<long double>(b->bytes - a->bytes) *
                (static_cast<long double>(p->error) - a->error) -
            (static_cast<long double>(b->error) - a->error) *
                static_cast<long double>(p->bytes - a->bytes);
        if (cross > 0) break;
        hull.pop_back();
      }
      hull.push_back(p);
    }
    error += hull.front()->error;
    room -= static_cast<long double>(hull.front()->bytes);
    for (size_t k = 1; k < hull.size(); ++k)
      segments.push_back(
          {static_cast<long double>(hull[k]->bytes - hull[k - 1]->bytes),
           static_cast<long double>(hull[k]->error) - hull[k - 1]->error, g,
           k});
  }
  std::stable_sort(
      segments.begin(), segments.end(), [](const Segment& a, const Segment& b) {
        // -a.de / a.db > -b.de / b.db
        const long double l = -a.de * b.db, r = -b.de * a.db;
        if (l != r) return l > r;
        return a.group != b.group ? a.group < b.group : a.pos < b.pos;
      });
  for (const Segment& s : segments) {
    if (room <= 0) break;
    if (s.db <= room) {
      error += s.de;
      room -= s.db;
    } else {
      error += s.de * (room / s.db);
      room = 0;
    }
  }
  return static_cast<double>(std::max<long double>(error, 0));
}

}  // namespace

KnapsackResult SolveKnapsack(const std::vector<KnapsackGroup>& groups,
                             int64_t capacity,
                             const std::vector<std::vector<int>>& seeds,
                             int64_t max_cells) {
  KnapsackResult r;
  const size_t n = groups.size();
  // Options of each group in tie order: bytes, then index.
  std::vector<std::vector<int>> order(n);
  std::vector<int64_t> base(n);
  for (size_t g = 0; g < n; ++g) {
    const std::vector<KnapsackOption>& opts = groups[g].options;
    if (opts.empty() || opts.size() > 255)
      throw ToolError(4, "plan: a group has " + std::to_string(opts.size()) +
                             " options (1 to 255)");
    order[g].resize(opts.size());
    std::iota(order[g].begin(), order[g].end(), 0);
    std::stable_sort(order[g].begin(), order[g].end(), [&](int a, int b) {
      return opts[static_cast<size_t>(a)].bytes <
             opts[static_cast<size_t>(b)].bytes;
    });
    base[g] = opts[static_cast<size_t>(order[g][0])].bytes;
    r.min_bytes = CheckedAdd(r.min_bytes, base[g]);
  }
  r.feasible = r.min_bytes <= capacity;
  if (!r.feasible) return r;
  const int64_t extra = capacity - r.min_bytes;
  auto bytes_of = [&](size_t g, int k) {
    return groups[g].options[static_cast<size_t>(k)].bytes;
  };
  auto error_of = [&](size_t g, int k) {
    return groups[g].options[static_cast<size_t>(k)].error;
  };

  // Every group at its least-error option, if that fits.
  std::vector<int> best(n);
  int64_t best_extra = 0;
  for (size_t g = 0; g < n; ++g) {
    int k_best = order[g][0];
    for (int k : order[g])
      if (error_of(g, k) < error_of(g, k_best)) k_best = k;
    best[g] = k_best;
    best_extra = CheckedAdd(best_extra, bytes_of(g, k_best) - base[g]);
  }
  if (best_extra <= extra) {
    r.choice = best;
    r.method = "independent";
    r.exact = true;
  } else {
    // The unit: the gcd of every extra, coarsened until the table fits.
    int64_t unit = 0;
    for (size_t g = 0; g < n; ++g)
      for (int k : order[g]) unit = std::gcd(unit, bytes_of(g, k) - base[g]);
    // unit > 0 here: some extra is positive, or best_extra would be 0.
    const int64_t units = extra / unit;
    const int64_t groups_n = static_cast<int64_t>(std::max<size_t>(n, 1));
    const int64_t max_cols = std::max<int64_t>(1, max_cells / groups_n);
    int64_t m = 1;
    if (units + 1 > max_cols)
      m = max_cols >= 2 ? (units + max_cols - 2) / (max_cols - 1) : units + 1;
    r.exact = m == 1;
    r.granularity = unit * m;  // <= extra + unit: no overflow
    const int64_t q = r.granularity;
    const int64_t cols = extra / q + 1;
    r.cells = cols;
    // Weights rounded up; the capacity (cols - 1) was rounded down.
    std::vector<std::vector<int64_t>> w(n);
    for (size_t g = 0; g < n; ++g) {
      w[g].resize(groups[g].options.size());
      for (int k : order[g]) {
        const int64_t x = bytes_of(g, k) - base[g];
        w[g][static_cast<size_t>(k)] = x / q + (x % q != 0 ? 1 : 0);
      }
    }
    std::vector<double> prev(static_cast<size_t>(cols), 0.0),
        cur(static_cast<size_t>(cols));
    std::vector<uint8_t> pick(n * static_cast<size_t>(cols));
    for (size_t g = 0; g < n; ++g) {
      uint8_t* row = pick.data() + g * static_cast<size_t>(cols);
      for (int64_t c = 0; c < cols; ++c) {
        double v_best = std::numeric_limits<double>::infinity();
        int k_best = order[g][0];
        for (int k : order[g]) {
          const int64_t wk = w[g][static_cast<size_t>(k)];
          if (wk > c) continue;
          const double v = prev[static_cast<size_t>(c - wk)] + error_of(g, k);
          if (v < v_best) {
            v_best = v;
            k_best = k;
          }
        }
        cur[static_cast<size_t>(c)] = v_best;
        row[c] = static_cast<uint8_t>(k_best);
      }
      prev.swap(cur);
    }
    r.choice.assign(n, 0);
    int64_t c = cols - 1;
    for (size_t g = n; g-- > 0;) {
      const int k =
          pick[g * static_cast<size_t>(cols) + static_cast<size_t>(c)];
      r.choice[g] = k;
      c -= w[g][static_cast<size_t>(k)];
    }
    r.method = "dp";
    if (!r.exact) {
      // Fix-up: spend what the rounding left, one best move at a time.
      int64_t used = 0;
      for (size_t g = 0; g < n; ++g) used += bytes_of(g, r.choice[g]) - base[g];
      bool moved = false;
      while (true) {
        const int64_t slack = extra - used;
        double gain_best = 0;
        size_t g_best = n;
        int k_best = -1;
        for (size_t g = 0; g < n; ++g) {
          const int now = r.choice[g];
          for (int k : order[g]) {
            if (bytes_of(g, k) - bytes_of(g, now) > slack) continue;
            const double gain = error_of(g, now) - error_of(g, k);
            if (gain > gain_best) {
              gain_best = gain;
              g_best = g;
              k_best = k;
            }
          }
        }
        if (g_best == n) break;
        used += bytes_of(g_best, k_best) - bytes_of(g_best, r.choice[g_best]);
        r.choice[g_best] = k_best;
        moved = true;
      }
      if (moved) r.method = "dp+fixup";
    }
  }
  Evaluate(groups, r.choice, &r.bytes, &r.error);
  for (size_t s = 0; s < seeds.size(); ++s) {
    const std::vector<int>& seed = seeds[s];
    if (seed.size() != n) continue;
    bool valid = true;
    for (size_t g = 0; g < n && valid; ++g)
      valid = seed[g] >= 0 &&
              static_cast<size_t>(seed[g]) < groups[g].options.size();
    if (!valid) continue;
    int64_t b;
    double e;
    Evaluate(groups, seed, &b, &e);
    if (b <= capacity && e < r.error) {
      r.choice = seed;
      r.bytes = b;
      r.error = e;
      r.method = "seed " + std::to_string(s);
    }
  }
  r.lower_bound = LowerBound(groups, order, capacity);
  return r;
}

// ---------------------------------------------------------------------------
// The command.

namespace {

using Json = nlohmann::ordered_json;

// The candidate targets of a free tensor, in this order (the order of ties
// and of every list printed). "fp16" only for F32 weights (for F16/BF16 it
// saves nothing over keep).
constexpr const char* kCandidates[] = {
    "keep",     "fp16",          "int8",      "int4-g32",      "int4-g32-asym",
    "int4-g64", "int4-g64-asym", "int4-g128", "int4-g128-asym"};

// Fused layers of vLLM (plan.cc warns when their targets differ).
struct FusedGroup {
  const char* fused_name;
  std::vector<std::string_view> parts;
};
const FusedGroup kFused[] = {
    {"qkv_proj", {"q_proj", "k_proj", "v_proj"}},
    {"gate_up_proj", {"gate_proj", "up_proj"}},
};

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
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

std::string Fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string Snr(double snr_db) {
  if (!std::isfinite(snr_db)) return std::isnan(snr_db) ? "-" : "inf";
  return Fmt("%.2f", snr_db);
}

double Bpw(int64_t bytes, int64_t params) {
  return params > 0
             ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params)
             : 0.0;
}

// A name safe on one line of a terminal or a TOML comment.
std::string OneLine(std::string_view s) {
  std::string out;
  for (char c : EscapeForTerminal(s)) {
    if (c == '\n')
      out += "\\x0a";
    else if (c == '\r')
      out += "\\x0d";
    else
      out += c;
  }
  return out;
}

// A TOML basic string.
std::string TomlString(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

// A glob matching exactly `name`: '*', '?' and '[' as one-character sets
// (pattern.h: everything else is literal).
std::string ExactGlob(std::string_view name) {
  std::string out;
  for (char c : name) {
    if (c == '*' || c == '?' || c == '[') {
      out += '[';
      out += c;
      out += ']';
    } else {
      out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------

// One target of one tensor, measured.
struct Option {
  std::string name;  // target name
  TensorPlan plan;   // the tensor's plan entry with this target
  LayerRow row;
  double sse = 0;
  bool dropped = false;  // a cast that overflows: not a candidate
};

enum class Role {
  kFixed,      // not a candidate: kept (or cast by a rule), as convert does
  kPinned,     // a user rule decides it
  kCandidate,  // the plan decides it
};

struct TensorState {
  Role role = Role::kFixed;
  std::vector<Option> options;  // kFixed/kPinned: one
  int group = -1;               // candidates: the knapsack group
  int chosen = 0;               // index into options
  std::string tie;              // why its choice is tied to others
};

struct Group {
  std::vector<size_t> members;     // tensor indices
  std::vector<std::string> names;  // option names common to all members
  std::vector<KnapsackOption> options;
};

struct Budget {
  std::string option;  // "--target-bpw"
  std::string text;    // as given
  int64_t max_bytes = 0;
  std::string what;  // how max_bytes follows from it, for messages
  // --gpu
  bool gpu = false;
  int64_t gpu_bytes = 0;
  KvCacheEstimate kv;
};

// --target-bpw: a decimal number, parsed exactly (at most 9 decimals).
int64_t BpwBudget(const std::string& text, int64_t params) {
  size_t i = 0;
  uint64_t num = 0, den = 1;
  int int_digits = 0, frac_digits = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (++int_digits > 6)
      UsageError("--target-bpw: '" + text + "' is out of range (0 to 64)");
    num = num * 10 + static_cast<uint64_t>(text[i++] - '0');
  }
  if (i < text.size() && text[i] == '.') {
    ++i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      if (++frac_digits > 9)
        UsageError("--target-bpw: '" + text + "' has more than 9 decimals");
      num = num * 10 + static_cast<uint64_t>(text[i++] - '0');
      den *= 10;
    }
  }
  if (i != text.size() || int_digits + frac_digits == 0)
    UsageError("--target-bpw: '" + text +
               "' is not a number of bits per weight (e.g. 4.5)");
  if (num == 0 || num > 64 * den)
    UsageError("--target-bpw: '" + text + "' is out of range (0 to 64)");
  // floor(bpw x params / 8), exactly.
  __extension__ typedef unsigned __int128 U128;  // GCC and Clang
  const U128 bytes = static_cast<U128>(num) * static_cast<uint64_t>(params) /
                     (static_cast<U128>(den) * 8);
  return static_cast<int64_t>(bytes);  // <= 8 x params < 2^66 / 8: fits
}

Budget MakeBudget(const PlanOptions& o, const io::Checkpoint& ckpt,
                  int64_t params) {
  Budget b;
  if (!o.target_bpw.empty()) {
    b.option = "--target-bpw";
    b.text = o.target_bpw;
    if (params == 0) UsageError("--target-bpw: the model has no parameters");
    b.max_bytes = BpwBudget(o.target_bpw, params);
    b.what = "at most " + WithCommas(b.max_bytes) + " bytes of tensor data (" +
             o.target_bpw + " x " + WithCommas(params) + " parameters / 8)";
  } else if (!o.max_size.empty()) {
    b.option = "--max-size";
    b.text = o.max_size;
    b.max_bytes =
        static_cast<int64_t>(ParseSizeOption("--max-size", o.max_size));
    b.what = "at most " + WithCommas(b.max_bytes) + " bytes of tensor data";
  } else {
    b.option = "--gpu";
    b.text = o.gpu;
    b.gpu = true;
    b.gpu_bytes = static_cast<int64_t>(ParseSizeOption("--gpu", o.gpu));
    b.kv = EstimateKvCache(ckpt, o.context, o.batch.value_or(1));
    if (!b.kv.known)
      spdlog::warn(
          "KV cache unknown ({}): the --gpu budget counts the "
          "weights x 1.4 only",
          OneLine(b.kv.why_unknown));
    const int64_t room = b.gpu_bytes - b.kv.bytes;
    // The largest weights W with RuntimeHighBytes(W) <= room (monotone).
    int64_t lo = 0,
            hi = std::min<int64_t>(std::max<int64_t>(room, 0), INT64_MAX / 2);
    if (room < 0) {
      b.max_bytes = -1;
    } else {
      while (lo < hi) {
        const int64_t mid = lo + (hi - lo + 1) / 2;
        if (RuntimeHighBytes(mid) <= room)
          lo = mid;
        else
          hi = mid - 1;
      }
      b.max_bytes = lo;
    }
    const std::string kv =
        b.kv.known ? " + KV cache " + WithCommas(b.kv.bytes) +
                         " bytes (FP16, " + WithCommas(b.kv.context) +
                         " tokens x batch " + std::to_string(b.kv.batch) + ")"
                   : "";
    b.what = room < 0
                 ? "the KV cache alone (" + WithCommas(b.kv.bytes) +
                       " bytes) is more than " + WithCommas(b.gpu_bytes) +
                       " bytes"
                 : "weights x 1.4" + kv + " <= " + WithCommas(b.gpu_bytes) +
                       " bytes: at most " + WithCommas(b.max_bytes) +
                       " bytes of tensor data";
  }
  return b;
}

// The parameters of a checkpoint as inspect counts them: every tensor but
// the integer/bool buffers.
int64_t CountParams(const std::vector<TensorInfo>& infos) {
  int64_t params = 0;
  for (const TensorInfo& t : infos) {
    if (IsBufferDType(t.dtype)) continue;
    int64_t n = 1;
    for (int64_t d : t.shape)
      if (__builtin_mul_overflow(n, d, &n))
        throw ToolError(2, "tensor '" + t.name + "': size overflows 64 bits");
    params = CheckedAdd(params, n);
  }
  return params;
}

// The fused layer a tensor belongs to: "LAYER\nqkv_proj"; empty if none.
std::string FusedKey(const std::string& name) {
  if (!EndsWith(name, ".weight")) return "";
  const std::string_view module = ModuleName(name);
  const size_t dot = module.rfind('.');
  const std::string_view last =
      dot == std::string_view::npos ? module : module.substr(dot + 1);
  const std::string_view layer = dot == std::string_view::npos
                                     ? std::string_view()
                                     : module.substr(0, dot);
  for (const FusedGroup& f : kFused)
    for (std::string_view p : f.parts)
      if (last == p) return std::string(layer) + '\n' + f.fused_name;
  return "";
}

std::string FusedName(const std::string& key) {
  return key.substr(key.find('\n') + 1);
}

int FindOption(const TensorState& s, const std::string& name) {
  for (size_t k = 0; k < s.options.size(); ++k)
    if (!s.options[k].dropped && s.options[k].name == name)
      return static_cast<int>(k);
  return -1;
}

const Option& Chosen(const TensorState& s) {
  return s.options[static_cast<size_t>(s.chosen)];
}

// The uniform configurations: every candidate at `scheme` where it fits
// (else kept); `as_convert`: embeddings and lm_head kept too, as `nibble
// convert --scheme S` keeps them.
struct Uniform {
  std::string scheme;
  bool as_convert = true;
  std::vector<int> choice;  // per group
  int64_t bytes = 0;        // whole checkpoint
  double sse = 0;
  bool fits = false;
};

const char* const kPlanHelp =
    "Chooses one target per tensor so that the checkpoint `nibble convert`\n"
    "writes fits a budget with the least total error, and writes the choice\n"
    "as a config file for `nibble convert --config`.\n"
    "Budget (exactly one): --target-bpw B: 8 x (bytes of all tensor data\n"
    "written, scales and zero points included) / (parameters: the elements\n"
    "of every tensor but integer buffers, as inspect counts them) <= B;\n"
    "--max-size SIZE: tensor bytes <= SIZE; --gpu SIZE: weights x 1.4 + the\n"
    "FP16 KV cache <= SIZE, as `nibble inspect --gpu` computes it (KV shape\n"
    "from config.json; --context N, --batch B; without a known shape,\n"
    "weights x 1.4 alone, with a warning).\n"
    "Input: a safetensors file or model directory, sharded or not (GGUF\n"
    "input is not planned).\n"
    "Candidates: every 2-D F32/F16/BF16 '*.weight' (embeddings and output\n"
    "head included) that no rule of --config/--keep/--tensor-type names.\n"
    "Targets tried: keep, int8 (per channel), int4-g32/g64/g128 symmetric\n"
    "and -asym (those whose group divides the columns), and fp16 for F32\n"
    "weights (unless a value overflows FP16). Tensors a rule names are\n"
    "pinned to the rule's target; everything else is kept as convert keeps\n"
    "it. q/k/v_proj and gate/up_proj of one layer get one target (vLLM fuses\n"
    "them; --split-fused lets them differ); a layer whose pinned members\n"
    "share a target gets it for the others.\n"
    "Measuring: one pass over the weights (each tensor read once) quantizes\n"
    "every candidate with every target in memory with the fused kernels:\n"
    "the same figures `convert --report` gives (about 8 quantizations per\n"
    "candidate tensor, so a few times a convert's time).\n"
    "Error: the sum over tensors of the squared error (MSE x parameters,\n"
    "i.e. ||W - Q(W)||^2 summed). With inputs of equal variance and no\n"
    "correlation, a layer's output noise is proportional to ||W - Q(W)||^2,\n"
    "so this is the total output noise the quantization adds, to first\n"
    "order; it weighs a tensor by its size, and unlike a mean of SNRs a\n"
    "small tensor with a huge relative error cannot hide. It uses no\n"
    "calibration data (activation outliers are invisible to it); pin what\n"
    "you know to be sensitive with a rule.\n"
    "Choice: a multiple-choice knapsack, solved by a dynamic programme over\n"
    "bytes in units of the gcd of the size differences: the least error,\n"
    "exactly. When groups x columns would pass --dp-cells the unit is\n"
    "coarsened and sizes are rounded up, so the result still meets the real\n"
    "budget; a greedy fix-up then spends what the rounding left, and the\n"
    "summary says 'not proven optimal'. Either way the result is never worse\n"
    "than a uniform scheme that fits, and the LP relaxation's bound is\n"
    "printed (no plan has less error). Ties go to the smaller target, then\n"
    "to the order keep, fp16, int8, int4-g32, int4-g32-asym, int4-g64, ...;\n"
    "the result does not depend on --threads or --isa.\n"
    "A budget below the smallest plan (every candidate at its smallest\n"
    "target, int4-g128 where the columns allow, the rest as stored or as the\n"
    "rules say) is an error (exit 1) stating that size.\n"
    "Output: -o FILE, one [[rule]] per tensor with its exact name and a\n"
    "comment with its measured MSE, SNR and bytes (default = \"keep\");\n"
    "building convert's plan from it is checked before it is written, so\n"
    "`nibble convert MODEL OUT --config FILE` writes exactly the predicted\n"
    "bytes and reports exactly the predicted errors. --json: every tensor's\n"
    "row as convert's --report has it plus its options, the totals, the\n"
    "uniform schemes and the solver's figures.\n"
    "Example: nibble plan ./Llama-3.2-1B --target-bpw 4.5 -o plan.toml &&\n"
    "nibble convert ./Llama-3.2-1B ./out --config plan.toml\n";

// ---------------------------------------------------------------------------

class Planner {
 public:
  Planner(const PlanOptions& o, const std::string& global_isa)
      : o_(o), global_isa_(global_isa) {}
  int Run();

 private:
  void CheckOptions();
  void LoadRules();
  void Classify();
  void CheckFeasible(const std::vector<Group>& groups);
  void Measure();
  std::vector<Group> MakeGroups();
  std::vector<Uniform> MakeUniforms(const std::vector<Group>& groups);
  std::string RenderConfig() const;
  void SelfCheck(const std::string& text) const;
  Json ToJson(const std::vector<Group>& groups,
              const std::vector<Uniform>& uniforms) const;
  void PrintSummary(std::ostream& os, const std::vector<Group>& groups,
                    const std::vector<Uniform>& uniforms) const;

  const PlanOptions& o_;
  const std::string& global_isa_;
  ExecOptions exec_;
  RuleSet rules_;
  bool user_scale_dtype_ = false;
  std::unique_ptr<io::Checkpoint> ckpt_;
  std::vector<TensorInfo> infos_;
  Plan base_;      // the user's rules, every unpinned tensor kept
  Plan defaults_;  // no rules, --scheme int8: what convert keeps anyway
  std::vector<TensorState> states_;
  int64_t params_ = 0;
  int64_t fixed_bytes_ = 0;  // tensors outside every group
  Budget budget_;
  KnapsackResult result_;
  std::vector<std::string> printed_warnings_;
};

void Planner::CheckOptions() {
  const int given = (o_.target_bpw.empty() ? 0 : 1) +
                    (o_.max_size.empty() ? 0 : 1) + (o_.gpu.empty() ? 0 : 1);
  if (given != 1)
    UsageError(given == 0
                   ? "give a budget: --target-bpw BITS, --max-size SIZE or "
                     "--gpu SIZE"
                   : "give one budget only: --target-bpw, --max-size or --gpu");
  if (o_.gpu.empty() && (o_.context || o_.batch))
    UsageError(std::string(o_.context ? "--context" : "--batch") +
               " only applies with --gpu");
  CheckKvOptions(o_.context, o_.batch.value_or(1));
  if (o_.top < 0) UsageError("--top must not be negative");
  if (o_.dp_cells < 1 || o_.dp_cells > kKnapsackMaxCellsLimit)
    UsageError("--dp-cells must be between 1 and " +
               std::to_string(kKnapsackMaxCellsLimit) + ", got " +
               std::to_string(o_.dp_cells));
  if (o_.output == "-" && o_.json_path == "-")
    UsageError("-o - and --json - cannot both go to stdout");
  if (!o_.output.empty() && o_.output == o_.json_path)
    UsageError("-o and --json name the same file '" + o_.output + "'");
  exec_ = ResolveExecOptions(o_.threads, o_.isa, global_isa_);
}

void Planner::LoadRules() {
  ConfigFile file;
  if (!o_.config.empty()) Check(LoadConfigFile(o_.config, &file), "");
  Overrides ov;
  ov.keep = o_.keep;
  ov.tensor_type = o_.tensor_type;
  Check(BuildRuleSet(o_.config.empty() ? nullptr : &file, ov, &rules_), "");
  user_scale_dtype_ = !rules_.scale_dtype_auto;
  // The plan decides every unpinned tensor; strictness is convert's business
  // (the config written has no rule that could warn).
  rules_.default_target = Target::Keep();
  rules_.default_origin = "nibble plan";
  rules_.strict = false;
}

void Planner::Classify() {
  Check(io::Checkpoint::Open(o_.input, &ckpt_), "");
  for (const io::CheckpointTensor& t : ckpt_->tensors())
    infos_.push_back(
        {t.info->name, io::StDtypeName(t.info->dtype), t.info->shape});
  Check(BuildPlan(rules_, infos_, &base_), "");
  {
    Overrides ov;
    ov.scheme = "int8";
    RuleSet plain;
    Check(BuildRuleSet(nullptr, ov, &plain), "");
    Check(BuildPlan(plain, infos_, &defaults_), "");
  }
  // The user's rules: what convert would say about them. Fused layers are
  // judged on the final plan instead (here every unpinned tensor is kept).
  for (const std::string& w : base_.warnings) {
    if (w.rfind("layer '", 0) == 0) continue;
    spdlog::warn("{}", w);
    printed_warnings_.push_back(w);
  }
  params_ = CountParams(infos_);
  states_.resize(infos_.size());
  for (size_t i = 0; i < infos_.size(); ++i) {
    const TensorPlan& tp = base_.tensors[i];
    TensorState& s = states_[i];
    DType dtype;
    const bool candidate =
        tp.rule < 0 && IsQuantizableDType(tp.dtype, &dtype) &&
        tp.shape.size() == 2 && EndsWith(tp.name, ".weight") && tp.params > 0;
    if (!candidate) {
      s.role = tp.rule >= 0 ? Role::kPinned : Role::kFixed;
      Option opt;
      opt.name = TargetName(tp.target);
      opt.plan = tp;
      s.options.push_back(std::move(opt));
      continue;
    }
    s.role = Role::kCandidate;
    const DType scale = rules_.scale_dtype_auto ? dtype : rules_.scale_dtype;
    for (const char* name : kCandidates) {
      if (std::string_view(name) == "fp16" && dtype != DType::kF32) continue;
      Target target;
      Check(ParseTarget(name, kBuiltinGroupSize, scale, &target), "");
      TensorPlan p = tp;
      p.target = target;
      p.rule = -1;
      p.reason = "nibble plan";
      if (target.kind == TargetKind::kKeep) {
        p.bytes_after = p.bytes_before;
      } else if (target.kind == TargetKind::kCast) {
        p.bytes_after =
            p.params * static_cast<int64_t>(DTypeSize(target.cast_dtype));
      } else {
        if (!ValidateScheme(target.scheme, tp.shape[1]).ok()) continue;
        QuantizedBytes q;
        Check(
            ComputeQuantizedBytes(target.scheme, tp.shape[0], tp.shape[1], &q),
            "tensor '" + tp.name + "'");
        p.bytes_after = q.total;
      }
      Option opt;
      opt.name = TargetName(target);
      opt.plan = std::move(p);
      s.options.push_back(std::move(opt));
    }
  }
}

std::vector<Group> Planner::MakeGroups() {
  std::vector<Group> groups;
  // Fused layers: members by key, in checkpoint order.
  std::map<std::string, std::vector<size_t>> fused;
  if (!o_.split_fused) {
    for (size_t i = 0; i < states_.size(); ++i) {
      const std::string key = FusedKey(infos_[i].name);
      if (!key.empty() && states_[i].role != Role::kFixed)
        fused[key].push_back(i);
    }
  }
  std::vector<int> group_of(states_.size(), -1);
  for (size_t i = 0; i < states_.size(); ++i) {
    TensorState& s = states_[i];
    if (s.role != Role::kCandidate || group_of[i] >= 0) continue;
    std::vector<size_t> members = {i};
    std::vector<std::string> allowed;  // empty: any
    const std::string key = o_.split_fused ? "" : FusedKey(infos_[i].name);
    if (!key.empty()) {
      members.clear();
      std::vector<size_t> pinned;
      for (size_t m : fused[key])
        (states_[m].role == Role::kCandidate ? members : pinned).push_back(m);
      // Pinned members that agree: the others follow them.
      if (!pinned.empty()) {
        const std::string t = Chosen(states_[pinned[0]]).name;
        bool agree = true;
        for (size_t m : pinned) agree &= Chosen(states_[m]).name == t;
        if (agree) {
          allowed.push_back(t);
          for (size_t m : members)
            states_[m].tie = "tied to " + OneLine(infos_[pinned[0]].name) +
                             " (pinned; vLLM fuses " + FusedName(key) + ")";
        }
      }
      if (allowed.empty() && members.size() > 1)
        for (size_t m : members)
          states_[m].tie = "one target for " + FusedName(key) +
                           " of this layer (vLLM fuses them)";
    }
    Group g;
    g.members = members;
    // Options every member has (in kCandidates order), within `allowed`.
    auto common = [&]() {
      g.names.clear();
      for (const Option& opt : states_[members[0]].options) {
        if (opt.dropped) continue;
        if (!allowed.empty() && std::find(allowed.begin(), allowed.end(),
                                          opt.name) == allowed.end())
          continue;
        bool all = true;
        for (size_t m : members) all &= FindOption(states_[m], opt.name) >= 0;
        if (all) g.names.push_back(opt.name);
      }
    };
    common();
    if (g.names.empty()) {
      // The pinned target does not fit the others (a group size that does
      // not divide their columns): they choose together among themselves
      // ("keep" is always common).
      allowed.clear();
      for (size_t m : members)
        states_[m].tie = members.size() > 1
                             ? "one target for " + FusedName(key) +
                                   " of this layer (vLLM fuses them)"
                             : "";
      common();
    }
    for (const std::string& name : g.names) {
      KnapsackOption ko;
      for (size_t m : members) {
        const Option& opt =
            states_[m]
                .options[static_cast<size_t>(FindOption(states_[m], name))];
        ko.bytes = CheckedAdd(ko.bytes, opt.plan.bytes_after);
        ko.error += opt.sse;
      }
      g.options.push_back(ko);
    }
    for (size_t m : members) {
      group_of[m] = static_cast<int>(groups.size());
      states_[m].group = static_cast<int>(groups.size());
    }
    groups.push_back(std::move(g));
  }
  fixed_bytes_ = 0;
  for (const TensorState& s : states_)
    if (s.role != Role::kCandidate)
      fixed_bytes_ = CheckedAdd(fixed_bytes_, Chosen(s).plan.bytes_after);
  return groups;
}

void Planner::CheckFeasible(const std::vector<Group>& groups) {
  int64_t min_bytes = fixed_bytes_;
  for (const Group& g : groups) {
    int64_t m = g.options[0].bytes;
    for (const KnapsackOption& k : g.options) m = std::min(m, k.bytes);
    min_bytes = CheckedAdd(min_bytes, m);
  }
  if (budget_.max_bytes >= min_bytes) return;
  std::string need;
  if (budget_.gpu)
    need =
        "; on the GPU it needs " +
        WithCommas(CheckedAdd(RuntimeHighBytes(min_bytes), budget_.kv.bytes)) +
        " bytes (weights x 1.4" + (budget_.kv.known ? " + KV cache" : "") + ")";
  throw ToolError(
      1, budget_.option + " " + budget_.text + ": " + budget_.what +
             (budget_.max_bytes < 0 ? "; " : ", but ") +
             "the smallest plan takes " + WithCommas(min_bytes) + " bytes (" +
             HumanBytes(static_cast<double>(min_bytes)) + ", " +
             Fmt("%.3f", Bpw(min_bytes, params_)) +
             " bits per weight: every candidate tensor at its smallest "
             "target, int4-g128 where its columns allow, the rest as stored "
             "or as the rules say)" +
             need);
}

void Planner::Measure() {
  InstallFaultHandler();
  const std::vector<io::CheckpointTensor>& tensors = ckpt_->tensors();
  const size_t n = tensors.size();
  int64_t total_bytes = 0, bytes_done = 0;
  for (const io::CheckpointTensor& t : tensors)
    total_bytes += static_cast<int64_t>(t.info->byte_size());
  const bool quiet_out = o_.quiet || o_.output == "-" || o_.json_path == "-";
  Progress progress("measured", static_cast<int64_t>(n), total_bytes,
                    !quiet_out && !spdlog::should_log(spdlog::level::debug));
  for (size_t i = 0; i < n; ++i) {
    const io::TensorInfo& src = *tensors[i].info;
    const io::SafetensorsFile& shard = *ckpt_->shards()[tensors[i].shard];
    progress.Start(static_cast<int64_t>(i), bytes_done, src.name);
    bytes_done += static_cast<int64_t>(src.byte_size());
    TensorState& s = states_[i];
    bool read = false;
    for (const Option& opt : s.options)
      read |= opt.plan.target.kind != TargetKind::kKeep;
    const uint8_t* data = nullptr;
    if (read) {
      SetCurrentInput(shard.path(), src.name);
      Check(shard.TensorData(src, &data),
            shard.path() + ": tensor '" + src.name + "'");
    }
    for (Option& opt : s.options) {
      const TensorPlan& t = opt.plan;
      if (t.target.kind == TargetKind::kKeep) {
        opt.row = KeptRow(t.name, t.shape, t.params,
                          static_cast<int64_t>(src.byte_size()),
                          io::StDtypeBits(src.dtype));
        opt.sse = 0;
        continue;
      }
      // A candidate's fp16 that overflows is dropped; a rule's cast that
      // overflows is an error, as in convert.
      bool overflow = false;
      opt.row = MeasureRow(t, src, shard, data, exec_, &opt.sse,
                           s.role == Role::kCandidate ? &overflow : nullptr);
      opt.dropped = overflow;
      spdlog::debug("[{}/{}] {} {} snr {:.2f} dB", i + 1, n, t.name, opt.name,
                    opt.row.m.snr_db);
    }
    if (read) ReleasePages(data, src.byte_size());
  }
  progress.Clear();
}

std::vector<Uniform> Planner::MakeUniforms(const std::vector<Group>& groups) {
  std::vector<Uniform> out;
  for (const bool as_convert : {true, false}) {
    for (const char* scheme : kCandidates) {
      if (std::string_view(scheme) == "keep") continue;
      Uniform u;
      u.scheme = scheme;
      u.as_convert = as_convert;
      bool any = false;
      for (const Group& g : groups) {
        bool keep = false;
        if (as_convert)
          for (size_t m : g.members)
            keep |= !defaults_.tensors[m].target.quantized();
        int k = -1, k_keep = 0;
        for (size_t j = 0; j < g.names.size(); ++j) {
          if (g.names[j] == scheme) k = static_cast<int>(j);
          if (g.names[j] == "keep") k_keep = static_cast<int>(j);
        }
        any |= k >= 0 && !keep;
        u.choice.push_back(k >= 0 && !keep ? k : k_keep);
      }
      if (!any) continue;  // fp16 of an F16 model: nothing to compare
      u.bytes = fixed_bytes_;
      for (size_t g = 0; g < groups.size(); ++g) {
        const KnapsackOption& ko =
            groups[g].options[static_cast<size_t>(u.choice[g])];
        u.bytes = CheckedAdd(u.bytes, ko.bytes);
        u.sse += ko.error;
      }
      out.push_back(std::move(u));
    }
  }
  return out;
}

// One line: the measured figures of an option.
std::string Figures(const Option& opt) {
  const LayerRow& r = opt.row;
  std::string s = WithCommas(opt.plan.bytes_after) + " bytes (" +
                  Fmt("%.3f", r.bits_per_weight) + " bits/weight)";
  if (opt.plan.target.kind == TargetKind::kKeep) return s + ", exact";
  return s + ", MSE " + Fmt("%.6e", r.m.mse) + ", SNR " + Snr(r.m.snr_db) +
         " dB";
}

std::string Planner::RenderConfig() const {
  // Which tensors get a rule: every candidate and pinned tensor, every
  // tensor stored other than as kept, and (so that no rule reaches a tensor
  // through its module name) every tensor whose module name has a rule.
  const size_t n = states_.size();
  std::vector<bool> ruled(n, false);
  std::set<std::string> names;
  for (size_t i = 0; i < n; ++i) {
    const TensorState& s = states_[i];
    if (s.role != Role::kFixed ||
        Chosen(s).plan.target.kind != TargetKind::kKeep) {
      ruled[i] = true;
      names.insert(infos_[i].name);
    }
  }
  // A rule for N also matches a tensor whose module name is N: such a tensor
  // gets its own rule, placed before N's (depth: how many ruled names its
  // module names chain through).
  std::vector<int> depth(n, 0);
  for (bool changed = true; changed;) {
    changed = false;
    for (size_t i = 0; i < n; ++i) {
      const std::string module(ModuleName(infos_[i].name));
      if (module == infos_[i].name || names.count(module) == 0) continue;
      if (!ruled[i]) {
        ruled[i] = true;
        names.insert(infos_[i].name);
        changed = true;
      }
    }
  }
  for (size_t i = 0; i < n; ++i) {
    int d = 0;
    std::string name = infos_[i].name;
    while (true) {
      const std::string module(ModuleName(name));
      if (module == name || names.count(module) == 0) break;
      ++d;
      name = module;
    }
    depth[i] = d;
  }
  std::vector<size_t> order;
  for (size_t i = 0; i < n; ++i)
    if (ruled[i]) order.push_back(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return depth[a] > depth[b]; });

  int64_t bytes = 0;
  double sse = 0;
  for (const TensorState& s : states_) {
    bytes += Chosen(s).plan.bytes_after;
    sse += Chosen(s).sse;
  }
  std::string out;
  out += "# Written by `nibble plan` (nibble " NIBBLE_VERSION_STRING ") for " +
         OneLine(o_.input) + "\n";
  out += "# Budget: " + budget_.option + " " + OneLine(budget_.text) + ": " +
         budget_.what + ".\n";
  out += "# Predicted: " + WithCommas(bytes) + " bytes of tensor data (" +
         HumanBytes(static_cast<double>(bytes)) + "), " +
         Fmt("%.4f", Bpw(bytes, params_)) + " bits per weight over " +
         WithCommas(params_) + " parameters;\n";
  out += "# squared error " + Fmt("%.6e", sse) +
         " (sum over tensors of MSE x parameters).\n";
  out += "# Use: nibble convert MODEL OUT --config THIS_FILE\n";
  out +=
      "# One rule per tensor, by exact name; the comment gives what was "
      "measured.\n";
  out += "# Tensors no rule names are kept as stored.\n\n";
  out += "default = \"keep\"\n";
  out += std::string("scale_dtype = \"") +
         (user_scale_dtype_ ? DTypeName(rules_.scale_dtype) : "auto") + "\"\n";
  for (size_t i : order) {
    const TensorState& s = states_[i];
    const Option& opt = Chosen(s);
    const std::string& name = infos_[i].name;
    out += "\n# " + OneLine(name) + " " + FormatShape(infos_[i].shape) + " " +
           infos_[i].dtype + ": " + opt.name + ", " + Figures(opt) + "\n";
    if (s.role == Role::kPinned) {
      const Rule& rule =
          rules_.rules[static_cast<size_t>(base_.tensors[i].rule)];
      out += "#   pinned by " + OneLine(rule.Describe()) + "\n";
    } else if (s.role == Role::kFixed) {
      out += "#   " + OneLine(base_.tensors[i].reason) + "\n";
    } else if (!s.tie.empty()) {
      out += "#   " + s.tie + "\n";
    }
    out += "[[rule]]\nmatch = " + TomlString(ExactGlob(name)) +
           "\nscheme = \"" + opt.name + "\"\n";
  }
  return out;
}

void Planner::SelfCheck(const std::string& text) const {
  auto fail = [](const std::string& what) {
    throw ToolError(4,
                    "internal error: the config written would not "
                    "reproduce the plan: " +
                        what);
  };
  // Named as written, so that convert's warnings (same FILE:LINE) match.
  ConfigFile file;
  Status st = ParseConfigText(
      text, o_.output.empty() || o_.output == "-" ? "<plan>" : o_.output,
      &file);
  if (!st.ok()) fail(st.message());
  RuleSet rules;
  st = BuildRuleSet(&file, Overrides(), &rules);
  if (!st.ok()) fail(st.message());
  Plan plan;
  st = BuildPlan(rules, infos_, &plan);
  if (!st.ok()) fail(st.message());
  for (size_t i = 0; i < states_.size(); ++i) {
    const TensorPlan& want = Chosen(states_[i]).plan;
    const TensorPlan& got = plan.tensors[i];
    const bool same =
        TargetName(got.target) == TargetName(want.target) &&
        got.bytes_after == want.bytes_after &&
        (!want.target.quantized() ||
         got.target.scheme.scale_dtype == want.target.scheme.scale_dtype);
    if (!same)
      fail("tensor '" + OneLine(want.name) + "' gets " +
           TargetName(got.target) + " (" + std::to_string(got.bytes_after) +
           " bytes), not " + TargetName(want.target) + " (" +
           std::to_string(want.bytes_after) + " bytes)");
  }
  // What convert will warn about (embeddings quantized, fused layers split
  // by the user's own rules).
  for (const std::string& w : plan.warnings) {
    if (std::find(printed_warnings_.begin(), printed_warnings_.end(), w) !=
        printed_warnings_.end())
      continue;
    spdlog::warn("{}", w);
  }
}

Json OptionsJson(const TensorState& s) {
  Json j = Json::object();
  for (const Option& opt : s.options) {
    if (opt.dropped) continue;
    Json o;
    o["bytes"] = opt.plan.bytes_after;
    o["sse"] = opt.sse;
    o["mse"] = opt.row.m.mse;
    o["snr_db"] = std::isfinite(opt.row.m.snr_db) ? Json(opt.row.m.snr_db)
                                                  : Json(nullptr);
    j[opt.name] = std::move(o);
  }
  return j;
}

Json Planner::ToJson(const std::vector<Group>& groups,
                     const std::vector<Uniform>& uniforms) const {
  Json j;
  j["nibble_version"] = NIBBLE_VERSION_STRING;
  j["input"] = o_.input;
  j["config"] = o_.output.empty() ? Json(nullptr) : Json(o_.output);
  Json b;
  b["option"] = budget_.option;
  b["value"] = budget_.text;
  b["max_bytes"] = budget_.max_bytes;
  if (budget_.gpu) {
    b["gpu_bytes"] = budget_.gpu_bytes;
    b["kv_cache_bytes"] =
        budget_.kv.known ? Json(budget_.kv.bytes) : Json(nullptr);
    b["context"] = budget_.kv.context;
    b["batch"] = budget_.kv.batch;
  }
  j["budget"] = b;
  j["params"] = params_;
  std::vector<LayerRow> rows;
  Json tensors = Json::array();
  int64_t bytes = 0;
  double sse = 0;
  for (size_t i = 0; i < states_.size(); ++i) {
    const TensorState& s = states_[i];
    const Option& opt = Chosen(s);
    rows.push_back(opt.row);
    bytes += opt.plan.bytes_after;
    sse += opt.sse;
    Json t = LayerRowJson(opt.row);
    t["sse"] = opt.sse;
    t["role"] = s.role == Role::kCandidate ? "candidate"
                : s.role == Role::kPinned  ? "pinned"
                                           : "fixed";
    t["group"] = s.group >= 0 ? Json(s.group) : Json(nullptr);
    if (s.role == Role::kCandidate) t["options"] = OptionsJson(s);
    tensors.push_back(std::move(t));
  }
  Json p;
  p["bytes"] = bytes;
  p["bits_per_weight"] = Bpw(bytes, params_);
  p["sse"] = sse;
  p["mse"] = params_ > 0 ? sse / static_cast<double>(params_) : 0.0;
  p["totals"] = LayerTotalsJson(ComputeTotals(rows));
  j["predicted"] = p;
  Json solver;
  solver["method"] = result_.method;
  solver["groups"] = static_cast<int64_t>(groups.size());
  solver["fixed_bytes"] = fixed_bytes_;
  solver["min_bytes"] = CheckedAdd(fixed_bytes_, result_.min_bytes);
  solver["granularity"] = result_.granularity;
  solver["cells"] = result_.cells;
  solver["exact"] = result_.exact;
  solver["lower_bound_sse"] = result_.lower_bound;
  j["solver"] = solver;
  Json u = Json::array();
  for (const Uniform& x : uniforms)
    u.push_back({{"scheme", x.scheme},
                 {"embeddings", x.as_convert ? "kept" : "quantized"},
                 {"bytes", x.bytes},
                 {"bits_per_weight", Bpw(x.bytes, params_)},
                 {"sse", x.sse},
                 {"fits", x.fits}});
  j["uniform"] = u;
  j["tensors"] = tensors;
  return j;
}

void Planner::PrintSummary(std::ostream& os, const std::vector<Group>& groups,
                           const std::vector<Uniform>& uniforms) const {
  int64_t bytes = 0;
  double sse = 0;
  std::vector<LayerRow> rows;
  int64_t pinned = 0, candidates = 0;
  std::map<std::string, int64_t> chosen_count;
  for (const TensorState& s : states_) {
    bytes += Chosen(s).plan.bytes_after;
    sse += Chosen(s).sse;
    rows.push_back(Chosen(s).row);
    pinned += s.role == Role::kPinned ? 1 : 0;
    if (s.role == Role::kCandidate) {
      ++candidates;
      ++chosen_count[Chosen(s).name];
    }
  }
  os << "model: " << OneLine(o_.input) << " (" << states_.size() << " tensors, "
     << WithCommas(params_) << " parameters)\n";
  os << "budget: " << budget_.option << " " << OneLine(budget_.text) << ": "
     << budget_.what << "\n";
  os << "candidates: " << candidates << " tensors in " << groups.size()
     << " groups; " << pinned << " pinned by rules; "
     << states_.size() - static_cast<size_t>(candidates + pinned)
     << " others kept\n";
  // Per-tensor table, checkpoint order.
  std::vector<std::vector<std::string>> table = {
      {"tensor", "shape", "target", "bytes", "bits", "SNR dB", "MSE"}};
  size_t shown = 0, listed = 0;
  for (size_t i = 0; i < states_.size(); ++i) {
    const TensorState& s = states_[i];
    if (s.role == Role::kFixed &&
        Chosen(s).plan.target.kind == TargetKind::kKeep)
      continue;
    ++listed;
    if (shown >= static_cast<size_t>(o_.top)) continue;
    ++shown;
    const Option& opt = Chosen(s);
    table.push_back(
        {OneLine(infos_[i].name) + (s.role == Role::kPinned ? " (pinned)" : ""),
         FormatShape(infos_[i].shape), opt.name,
         WithCommas(opt.plan.bytes_after), Fmt("%.3f", opt.row.bits_per_weight),
         opt.plan.target.kind == TargetKind::kKeep ? "exact"
                                                   : Snr(opt.row.m.snr_db),
         opt.plan.target.kind == TargetKind::kKeep
             ? "0"
             : Fmt("%.3e", opt.row.m.mse)});
  }
  std::vector<size_t> width(table[0].size(), 0);
  for (const auto& r : table)
    for (size_t c = 0; c < r.size(); ++c)
      width[c] = std::max(width[c], r[c].size());
  for (const auto& r : table) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) {
      const bool right = c >= 3;
      const std::string pad(width[c] - r[c].size(), ' ');
      if (c > 0) line += "  ";
      line += right ? pad + r[c] : (c + 1 < r.size() ? r[c] + pad : r[c]);
    }
    os << line << "\n";
  }
  if (listed > shown)
    os << "... " << listed - shown
       << " more tensors (all in the config and --json)\n";
  std::string mix;
  for (const char* name : kCandidates) {
    auto it = chosen_count.find(name);
    if (it == chosen_count.end()) continue;
    mix += (mix.empty() ? "" : ", ") + std::to_string(it->second) + " " + name;
  }
  os << "chosen: " << (mix.empty() ? "-" : mix) << "\n";
  const LayerTotals totals = ComputeTotals(rows);
  os << "plan: " << WithCommas(bytes) << " bytes ("
     << HumanBytes(static_cast<double>(bytes)) << "), "
     << Fmt("%.4f", Bpw(bytes, params_)) << " bits per weight; squared error "
     << Fmt("%.6e", sse) << " (MSE over all parameters "
     << Fmt("%.3e", params_ > 0 ? sse / static_cast<double>(params_) : 0.0)
     << "); mean SNR " << Snr(totals.mean_snr_db) << " dB";
  if (!totals.worst.empty())
    os << ", worst " << OneLine(totals.worst) << " ("
       << Snr(totals.worst_snr_db) << " dB)";
  os << "\n";
  if (budget_.gpu)
    os << "gpu: need "
       << WithCommas(CheckedAdd(RuntimeHighBytes(bytes), budget_.kv.bytes))
       << " bytes of " << WithCommas(budget_.gpu_bytes) << "\n";
  os << "solver: " << result_.method;
  if (result_.granularity > 0)
    os << ", dynamic programme in units of " << WithCommas(result_.granularity)
       << " bytes (" << WithCommas(result_.cells) << " columns x "
       << groups.size() << " groups)";
  os << (result_.exact ? ", optimal" : ", not proven optimal")
     << "; LP lower bound on the squared error "
     << Fmt("%.6e", result_.lower_bound) << "\n";
  os << "uniform schemes (every candidate at one scheme where its columns "
        "allow; 'convert': embeddings and lm_head kept, as convert --scheme "
        "S):\n";
  std::vector<std::vector<std::string>> ut = {{"scheme", "embeddings", "bytes",
                                               "bits", "squared error",
                                               "vs plan", "fits"}};
  for (const Uniform& u : uniforms) {
    ut.push_back(
        {u.scheme, u.as_convert ? "kept" : "quantized", WithCommas(u.bytes),
         Fmt("%.4f", Bpw(u.bytes, params_)), Fmt("%.6e", u.sse),
         sse > 0 ? Fmt("%.2fx", u.sse / sse) : (u.sse > 0 ? "inf" : "1.00x"),
         u.fits ? "yes" : "no"});
  }
  std::fill(width.begin(), width.end(), 0);
  width.resize(ut[0].size(), 0);
  for (const auto& r : ut)
    for (size_t c = 0; c < r.size(); ++c)
      width[c] = std::max(width[c], r[c].size());
  for (const auto& r : ut) {
    std::string line = " ";
    for (size_t c = 0; c < r.size(); ++c) {
      const bool right = c >= 2 && c <= 5;
      const std::string pad(width[c] - r[c].size(), ' ');
      line +=
          " " + (right ? pad + r[c] : (c + 1 < r.size() ? r[c] + pad : r[c]));
    }
    os << line << "\n";
  }
  if (o_.output.empty())
    os << "config: not written (give -o FILE)\n";
  else if (o_.output != "-")
    os << "config: " << OneLine(o_.output) << " (nibble convert "
       << OneLine(o_.input) << " OUT --config " << OneLine(o_.output) << ")\n";
}

int Planner::Run() {
  if (o_.quiet) spdlog::set_level(spdlog::level::warn);
  CheckOptions();
  LoadRules();
  ReportDestination config{o_.output, ""}, json{o_.json_path, ""};
  config.CheckWritable();
  json.CheckWritable();
  Classify();
  budget_ = MakeBudget(o_, *ckpt_, params_);
  // Fail before reading a weight when even the smallest plan is too big.
  {
    std::vector<Group> shapes_only = MakeGroups();
    CheckFeasible(shapes_only);
    for (TensorState& s : states_) {
      s.group = -1;
      s.tie.clear();
    }
  }
  Measure();
  const std::vector<Group> groups = MakeGroups();
  CheckFeasible(groups);  // a dropped fp16 can only make it larger
  std::vector<KnapsackGroup> items(groups.size());
  for (size_t g = 0; g < groups.size(); ++g)
    items[g].options = groups[g].options;
  std::vector<Uniform> uniforms = MakeUniforms(groups);
  std::vector<std::vector<int>> seeds;
  for (const Uniform& u : uniforms) seeds.push_back(u.choice);
  const int64_t capacity = budget_.max_bytes - fixed_bytes_;
  result_ = SolveKnapsack(items, capacity, seeds, o_.dp_cells);
  if (!result_.feasible)
    throw ToolError(4,
                    "internal error: the budget check and the solver "
                    "disagree");
  for (Uniform& u : uniforms) u.fits = u.bytes <= budget_.max_bytes;
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string& name =
        groups[g].names[static_cast<size_t>(result_.choice[g])];
    for (size_t m : groups[g].members)
      states_[m].chosen = FindOption(states_[m], name);
  }
  int64_t total = 0;
  for (const TensorState& s : states_) total += Chosen(s).plan.bytes_after;
  if (total > budget_.max_bytes)
    throw ToolError(4, "internal error: the plan takes " +
                           std::to_string(total) +
                           " bytes, over the budget of " +
                           std::to_string(budget_.max_bytes));

  const std::string text = RenderConfig();
  SelfCheck(text);
  if (config.enabled()) config.text = text;
  if (json.enabled())
    json.text = ToJson(groups, uniforms)
                    .dump(2, ' ', false, Json::error_handler_t::replace) +
                "\n";
  if (!o_.quiet && !config.to_stdout() && !json.to_stdout()) {
    PrintSummary(std::cout, groups, uniforms);
    std::cout.flush();
  }
  WriteReports({&config, &json});
  return 0;
}

}  // namespace

CLI::App* AddPlanCommand(CLI::App* app, PlanOptions* o) {
  CLI::App* cmd = app->add_subcommand(
      "plan",
      "Choose a target per tensor (int4 groups, int8, keep) that fits a "
      "size, bits-per-weight or GPU budget with the least total error, and "
      "write it as a config for convert --config");
  cmd->add_option("MODEL", o->input, "A .safetensors file or a model directory")
      ->required();
  cmd->add_option("--target-bpw", o->target_bpw,
                  "Budget: bits per weight over the whole model (e.g. 4.5)")
      ->type_name("BITS");
  cmd->add_option("--max-size", o->max_size,
                  "Budget: bytes of tensor data, e.g. 3.8GB, 500MiB")
      ->type_name("SIZE");
  cmd->add_option("--gpu", o->gpu,
                  "Budget: GPU memory for weights x 1.4 + KV cache, e.g. 24GB")
      ->type_name("SIZE");
  cmd->add_option("--context", o->context,
                  "With --gpu: tokens per sequence for the KV cache (default: "
                  "the model's maximum context, else 4096)")
      ->type_name("N");
  cmd->add_option("--batch", o->batch,
                  "With --gpu: sequences for the KV cache (default 1)")
      ->type_name("B");
  cmd->add_option("-o,--output", o->output,
                  "Write the config here ('-': stdout, then no summary)")
      ->type_name("FILE.toml");
  cmd->add_option("--json", o->json_path,
                  "Write every tensor's choice, options and the totals as "
                  "JSON ('-': stdout, then no summary)")
      ->type_name("FILE");
  cmd->add_option("--config", o->config,
                  "Rules that pin tensors (TOML, as convert's; its default "
                  "is ignored)")
      ->type_name("FILE");
  cmd->add_option("--keep", o->keep,
                  "Pin tensors matching PATTERN to keep (repeatable)")
      ->type_name("PATTERN");
  cmd->add_option("--tensor-type", o->tensor_type,
                  "Pin tensors matching PATTERN to SCHEME (repeatable)")
      ->type_name("PATTERN=SCHEME");
  cmd->add_flag("--split-fused", o->split_fused,
                "Let q/k/v_proj and gate/up_proj of a layer take different "
                "targets (vLLM then refuses the checkpoint)");
  cmd->add_option("--dp-cells", o->dp_cells,
                  "Most cells (groups x columns) of the dynamic programme: "
                  "fewer is faster and coarser (the budget still holds)")
      ->type_name("N")
      ->capture_default_str();
  cmd->add_option("--threads", o->threads,
                  "OpenMP threads, 1 to 1024 (default: all cores)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--isa", o->isa, "Kernel path: auto|scalar|avx2|avx512")
      ->check(CLI::IsMember({"auto", "scalar", "avx2", "avx512"}));
  cmd->add_option("--top", o->top, "Rows of the per-tensor table")
      ->capture_default_str();
  cmd->add_flag("-q,--quiet", o->quiet,
                "Print no summary, only warnings and errors");
  cmd->footer(kPlanHelp);
  return cmd;
}

int RunPlanCommand(const PlanOptions& o, const std::string& global_isa,
                   std::string* error) {
  return RunReportingErrors(
      [&] {
        Planner p(o, global_isa);
        return p.Run();
      },
      error);
}

}  // namespace nibble::tool
