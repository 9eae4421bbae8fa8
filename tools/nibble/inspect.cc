// `nibble inspect`: see inspect.h.
#include "inspect.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "config.h"
#include "gguf_convert.h"
#include "nibble/io/checkpoint.h"
#include "nibble/io/gguf.h"
#include "nibble/io/safetensors.h"
#include "nibble/nibble.h"
#include "output_dir.h"
#include "plan.h"
#include "report_files.h"
#include "target.h"
#include "text.h"

namespace nibble::tool {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::ordered_json;

// ---------------------------------------------------------------------------
// Constants of the estimate.

// Context when neither --context nor the model gives one.
constexpr int64_t kDefaultContext = 4096;
// Limits of --context and --batch (and of the model's own values): far
// beyond any model, small enough that every product below stays exact.
constexpr int64_t kMaxContext = int64_t{1} << 32;
constexpr int64_t kMaxBatch = int64_t{1} << 20;
// Layers, heads and head dimensions read from config.json / GGUF metadata.
constexpr int64_t kMaxShapeValue = int64_t{1} << 24;
// config.json larger than this is not a model config.
constexpr uintmax_t kMaxConfigJsonBytes = 64u << 20;
// The runtime band: weights x (1 + low/10) .. weights x (1 + high/10).
constexpr int64_t kBandLowTenths = 2;
constexpr int64_t kBandHighTenths = 4;
// Bytes per element of the KV cache (FP16).
constexpr int64_t kKvBytes = 2;

// The compressed-tensors schemes of the table, in order.
constexpr const char* kIntSchemes[] = {
    "int8",          "int4-g32",  "int4-g32-asym", "int4-g64",
    "int4-g64-asym", "int4-g128", "int4-g128-asym"};
// The GGUF block types (GGUF input only).
constexpr const char* kGgufSchemes[] = {"q8_0", "q4_0", "q4_1"};

// ---------------------------------------------------------------------------
// Parameter classes.

enum class Class : int {
  kMatrix = 0,
  kEmbedding,
  kBias,
  kNorm,
  kOther,
  kBuffer,  // integer tensors (position_ids, ...): not parameters
};
constexpr int kNumClasses = 6;
constexpr const char* kClassKeys[kNumClasses] = {
    "matrices", "embeddings", "biases", "norms", "other", "buffers"};

const char* ClassKey(Class c) { return kClassKeys[static_cast<int>(c)]; }

bool EndsWith(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.compare(0, prefix.size(), prefix) == 0;
}

std::vector<std::string_view> DottedParts(std::string_view name) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = name.find('.', start);
    if (dot == std::string_view::npos) {
      parts.push_back(name.substr(start));
      return parts;
    }
    parts.push_back(name.substr(start, dot - start));
    start = dot + 1;
  }
}

bool ContainsNoCase(std::string_view s, std::string_view needle) {
  if (needle.size() > s.size()) return false;
  for (size_t i = 0; i + needle.size() <= s.size(); ++i) {
    bool hit = true;
    for (size_t j = 0; j < needle.size() && hit; ++j)
      hit = std::tolower(static_cast<unsigned char>(s[i + j])) == needle[j];
    if (hit) return true;
  }
  return false;
}

// Norm layers by name: a dotted part containing "norm" in any letter case
// (LayerNorm, input_layernorm, final_layer_norm, attn_norm, q_norm) or
// GPT-2's "ln_1", "ln_f".
bool IsNormPart(std::string_view part) {
  return ContainsNoCase(part, "norm") || part == "ln" ||
         StartsWith(part, "ln_");
}

// The class of one tensor. `integer`: an integer or bool dtype.
Class Classify(std::string_view name, size_t dims, bool integer, bool gguf) {
  if (integer) return Class::kBuffer;
  const std::vector<std::string_view> parts = DottedParts(name);
  const std::string_view last = parts.back();
  if (last == "bias" || EndsWith(last, "_bias")) return Class::kBias;
  for (std::string_view p : parts)
    if (IsNormPart(p)) return Class::kNorm;
  if (gguf) {
    if (name == "output.weight") return Class::kEmbedding;
    for (std::string_view p : parts)
      if (p == "token_embd" || p == "position_embd" || p == "token_types")
        return Class::kEmbedding;
  } else {
    if (IsEmbeddingName(name)) return Class::kEmbedding;
    for (std::string_view p : parts)
      if (p == "lm_head" || p == "embed_out") return Class::kEmbedding;
  }
  return dims >= 2 ? Class::kMatrix : Class::kOther;
}

// ---------------------------------------------------------------------------
// The model as its headers describe it.

struct Tensor {
  std::string name;
  std::string dtype;          // safetensors dtype or ggml type name
  std::vector<int64_t> dims;  // safetensors shape, or GGUF ne (ne[0] first)
  int64_t elements = 0;
  int64_t bytes = 0;
  Class cls = Class::kOther;
  bool castable = false;  // F32/F16/BF16: what convert quantizes or casts
  DType kernel_dtype = DType::kF32;  // when castable
};

struct Totals {
  int64_t tensors = 0;
  int64_t elements = 0;
  int64_t bytes = 0;
};

[[noreturn]] void Overflow(const std::string& what) {
  throw ToolError(2, what + ": size overflows 64 bits");
}

int64_t Add(int64_t a, int64_t b, const std::string& what) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) Overflow(what);
  return r;
}
int64_t Mul(int64_t a, int64_t b, const std::string& what) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) Overflow(what);
  return r;
}
void Accumulate(Totals* t, const Tensor& x) {
  ++t->tensors;
  t->elements = Add(t->elements, x.elements, "parameter count");
  t->bytes = Add(t->bytes, x.bytes, "byte count");
}

// One row of the memory table.
struct SchemeRow {
  std::string key;    // JSON key and --scheme name ("fp16", "int4-g128")
  std::string label;  // table ("fp16/bf16")
  std::string kind;   // "stored", "cast", "compressed-tensors", "gguf"
  bool in_table = true;
  int64_t bytes = 0;
  // Quantizing rows: tensors quantized, their parameters and output bytes,
  // and the tensors the scheme targets whose shape does not fit it.
  int64_t quantized_tensors = 0;
  int64_t quantized_params = 0;
  int64_t quantized_bytes = 0;
  int64_t not_fitting = 0;
  // Estimates (see Estimate()).
  int64_t runtime_low = 0;
  int64_t runtime_high = 0;
  int64_t need = 0;
};

struct KvCache {
  bool known = false;
  std::string why_unknown;
  std::string source;  // "config.json" path, or "GGUF metadata"
  int64_t layers = 0;
  int64_t kv_heads = 0;  // -1: differs between layers
  int64_t head_dim_k = 0;
  int64_t head_dim_v = 0;
  int64_t elements_per_token = 0;  // sum over layers of kv_heads x (k + v)
  std::optional<int64_t> model_context;
  std::string model_context_key;
  int64_t context = 0;
  std::string context_source;
  int64_t batch = 1;
  int64_t bytes = 0;
};

struct Model {
  std::string path;
  bool gguf = false;
  std::string layout;  // what was opened, in words
  int64_t files = 0;
  int64_t file_bytes = 0;
  std::string architecture;
  std::vector<Tensor> tensors;
  Totals by_class[kNumClasses];
  std::map<std::string, Totals> by_dtype;
  int64_t params = 0;
  int64_t bytes = 0;
  std::vector<SchemeRow> schemes;
  KvCache kv;
  std::vector<std::string> notes;
  // Quantizing rows: dtypes of the embeddings (kept as stored).
  std::string embedding_dtypes;
  int64_t kept_float32_bytes = 0;  // F32 tensors a quantizing row keeps
};

// ---------------------------------------------------------------------------
// Number formatting.

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

std::string Printf(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

// Decimal units, as --gpu and --max-shard-size read them.
std::string HumanBytes(int64_t bytes) {
  static constexpr const char* kUnits[] = {"KB", "MB", "GB", "TB", "PB"};
  const double b = static_cast<double>(bytes < 0 ? -bytes : bytes);
  std::string sign = bytes < 0 ? "-" : "";
  if (b < 1000) return sign + std::to_string(bytes < 0 ? -bytes : bytes) + " B";
  double v = b / 1000;
  size_t u = 0;
  while (v >= 1000 && u + 1 < std::size(kUnits)) {
    v /= 1000;
    ++u;
  }
  return sign + Printf("%.2f ", v) + kUnits[u];
}

std::string HumanCount(int64_t n) {
  const double v = static_cast<double>(n);
  if (n < 1000) return std::to_string(n);
  if (n < 1000000) return Printf("%.2fK", v / 1e3);
  if (n < 1000000000) return Printf("%.2fM", v / 1e6);
  return Printf("%.2fB", v / 1e9);
}

std::string FormatDims(const std::vector<int64_t>& dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i)
    s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}

double BitsPerWeight(int64_t bytes, int64_t params) {
  return params > 0
             ? 8.0 * static_cast<double>(bytes) / static_cast<double>(params)
             : 0.0;
}

// ceil(v * tenths / 10) for 0 <= v and 0 <= tenths <= 10, exactly and
// without overflow.
int64_t Tenths(int64_t v, int64_t tenths) {
  return v / 10 * tenths + (v % 10 * tenths + 9) / 10;
}

// ---------------------------------------------------------------------------
// Opening the input.

bool EndsWithGgufNoCase(const std::string& path) {
  if (path.size() < 5) return false;
  std::string tail = path.substr(path.size() - 5);
  for (char& c : tail)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return tail == ".gguf";
}

// A regular file starting with "GGUF", or any non-directory named *.gguf
// (the GGUF reader then says what is wrong with it), as convert decides.
bool LooksLikeGguf(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return EndsWithGgufNoCase(path);
  if (S_ISDIR(st.st_mode)) return false;
  if (EndsWithGgufNoCase(path)) return true;
  if (!S_ISREG(st.st_mode)) return false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char magic[4];
  ssize_t n;
  do {
    n = ::pread(fd, magic, sizeof magic, 0);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
  return n == static_cast<ssize_t>(sizeof magic) &&
         std::memcmp(magic, "GGUF", 4) == 0;
}

void Summarize(Model* m) {
  for (const Tensor& t : m->tensors) {
    Accumulate(&m->by_class[static_cast<int>(t.cls)], t);
    Accumulate(&m->by_dtype[t.dtype], t);
    if (t.cls != Class::kBuffer)
      m->params = Add(m->params, t.elements, "parameter count");
    m->bytes = Add(m->bytes, t.bytes, "byte count");
  }
  std::vector<std::string> emb;
  for (const Tensor& t : m->tensors)
    if (t.cls == Class::kEmbedding &&
        std::find(emb.begin(), emb.end(), t.dtype) == emb.end())
      emb.push_back(t.dtype);
  for (const std::string& d : emb)
    m->embedding_dtypes += (m->embedding_dtypes.empty() ? "" : "/") + d;
}

// ---------------------------------------------------------------------------
// Memory per scheme.

// The rows every format shares: as stored, and every parameter tensor cast
// to 4 or 2 bytes per element (buffers as stored).
void AddStoredAndCastRows(Model* m) {
  SchemeRow stored;
  stored.key = stored.label = "stored";
  stored.kind = "stored";
  stored.bytes = m->bytes;
  m->schemes.push_back(stored);
  const struct {
    const char* key;
    const char* label;
    int64_t width;
    bool in_table;
  } kCasts[] = {{"fp32", "fp32", 4, true},
                {"fp16", "fp16/bf16", 2, true},
                {"bf16", "bf16", 2, false}};
  for (const auto& c : kCasts) {
    SchemeRow row;
    row.key = c.key;
    row.label = c.label;
    row.kind = "cast";
    row.in_table = c.in_table;
    for (const Tensor& t : m->tensors) {
      const int64_t b =
          t.cls == Class::kBuffer
              ? t.bytes
              : Mul(t.elements, c.width, "tensor '" + t.name + "'");
      row.bytes = Add(row.bytes, b, "byte count");
    }
    m->schemes.push_back(row);
  }
}

RuleSet DefaultRules(const std::string& scheme) {
  Overrides ov;
  ov.scheme = scheme;
  RuleSet rules;
  const Status st = BuildRuleSet(nullptr, ov, &rules);
  if (!st.ok()) throw ToolError(4, "--scheme " + scheme + ": " + st.message());
  return rules;
}

// Safetensors: the plan `nibble convert --scheme S` builds (its --dry-run
// total), for every compressed-tensors scheme of the table.
void AddSafetensorsRows(Model* m) {
  std::vector<TensorInfo> infos;
  infos.reserve(m->tensors.size());
  for (const Tensor& t : m->tensors) infos.push_back({t.name, t.dtype, t.dims});
  int64_t targeted = -1;  // what int8 (fits every width) quantizes
  for (const char* scheme : kIntSchemes) {
    Plan plan;
    const Status st = BuildPlan(DefaultRules(scheme), infos, &plan);
    if (!st.ok()) throw ToolError(2, m->path + ": " + st.message());
    SchemeRow row;
    row.key = row.label = scheme;
    row.kind = "compressed-tensors";
    row.bytes = plan.totals.bytes_after;
    for (const TensorPlan& tp : plan.tensors) {
      if (!tp.target.quantized()) continue;
      ++row.quantized_tensors;
      row.quantized_params += tp.params;
      row.quantized_bytes += tp.bytes_after;
    }
    if (targeted < 0) {
      targeted = row.quantized_tensors;
      for (size_t i = 0; i < plan.tensors.size(); ++i)
        if (!plan.tensors[i].target.quantized() && m->tensors[i].dtype == "F32")
          m->kept_float32_bytes += plan.tensors[i].bytes_after;
    }
    row.not_fitting = targeted - row.quantized_tensors;
    m->schemes.push_back(row);
  }
}

// GGUF: the q8_0/q4_0/q4_1 plans of `nibble convert IN OUT.gguf --scheme T`;
// the compressed-tensors rows quantize the tensors q8_0 quantizes, except
// token_embd/output, with scales in each tensor's dtype.
void AddGgufRows(Model* m, const io::GgufFile& file) {
  std::vector<bool> candidate(m->tensors.size(), false);
  {
    const ScopedTargetFormat gguf_names(TargetFormat::kGguf);
    for (const char* scheme : kGgufSchemes) {
      GgufPlan gp;
      const Status st =
          BuildGgufPlan(DefaultRules(scheme), file.tensors(), &gp);
      if (!st.ok()) throw ToolError(2, m->path + ": " + st.message());
      SchemeRow row;
      row.key = row.label = scheme;
      row.kind = "gguf";
      row.bytes = gp.plan.totals.bytes_after;
      for (size_t i = 0; i < gp.plan.tensors.size(); ++i) {
        const TensorPlan& tp = gp.plan.tensors[i];
        if (!tp.target.quantized()) continue;
        ++row.quantized_tensors;
        row.quantized_params += tp.params;
        row.quantized_bytes += tp.bytes_after;
        if (row.key == "q8_0" && m->tensors[i].cls != Class::kEmbedding)
          candidate[i] = true;
      }
      m->schemes.push_back(row);
    }
  }
  for (size_t i = 0; i < m->tensors.size(); ++i)
    if (!candidate[i] && m->tensors[i].dtype == "F32")
      m->kept_float32_bytes += m->tensors[i].bytes;
  for (const char* name : kIntSchemes) {
    SchemeRow row;
    row.key = row.label = name;
    row.kind = "compressed-tensors";
    for (size_t i = 0; i < m->tensors.size(); ++i) {
      const Tensor& t = m->tensors[i];
      int64_t bytes = t.bytes;
      if (candidate[i]) {
        QuantScheme scheme;
        if (Status st = ParseScheme(name, &scheme); !st.ok())
          throw ToolError(4, std::string(name) + ": " + st.message());
        scheme.scale_dtype = t.kernel_dtype;
        const int64_t cols = t.dims[0];
        QuantizedBytes q;
        if (ComputeQuantizedBytes(scheme, t.elements / cols, cols, &q).ok()) {
          bytes = q.total;
          ++row.quantized_tensors;
          row.quantized_params += t.elements;
          row.quantized_bytes += q.total;
        } else {
          ++row.not_fitting;
        }
      }
      row.bytes = Add(row.bytes, bytes, "byte count");
    }
    m->schemes.push_back(row);
  }
}

// ---------------------------------------------------------------------------
// The attention shape: config.json.

[[noreturn]] void BadConfig(const std::string& where, const std::string& what) {
  throw ToolError(2, where + ": " + what);
}

// The first of `keys` present and not null in `obj`: a positive integer up
// to `limit` (exit 2 otherwise, naming the key). nullopt when none is.
std::optional<int64_t> ConfigInt(const Json& obj,
                                 std::initializer_list<const char*> keys,
                                 const std::string& where, int64_t limit,
                                 std::string* key_found = nullptr) {
  for (const char* key : keys) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) continue;
    if (!it->is_number_integer())
      BadConfig(where,
                std::string("\"") + key +
                    "\": expected a positive integer, got " +
                    EscapeForTerminal(
                        it->dump(-1, ' ', true, Json::error_handler_t::replace)
                            .substr(0, 40)));
    const bool in_range =
        it->is_number_unsigned()
            ? it->get<uint64_t>() >= 1 &&
                  it->get<uint64_t>() <= static_cast<uint64_t>(limit)
            : it->get<int64_t>() >= 1 && it->get<int64_t>() <= limit;
    if (!in_range)
      BadConfig(where, std::string("\"") + key + "\": " + it->dump() +
                           " is out of range (1.." + std::to_string(limit) +
                           ")");
    if (key_found != nullptr) *key_found = key;
    return it->get<int64_t>();
  }
  return std::nullopt;
}

void ReadConfigJson(const fs::path& path, KvCache* kv, std::string* arch) {
  const std::string where = path.string();
  std::error_code ec;
  const uintmax_t size = fs::file_size(path, ec);
  if (ec) IoError("cannot read '" + where + "': " + ec.message());
  if (size > kMaxConfigJsonBytes)
    BadConfig(where, "larger than " + std::to_string(kMaxConfigJsonBytes) +
                         " bytes: not a model config");
  const std::string text = ReadWholeFile(path);
  Json config;
  try {
    config = Json::parse(text);
  } catch (const Json::parse_error& e) {
    BadConfig(where, "invalid JSON at byte " + std::to_string(e.byte) + ": " +
                         e.what());
  }
  if (!config.is_object()) BadConfig(where, "not a JSON object");
  if (auto it = config.find("architectures"); it != config.end() &&
                                              it->is_array() && !it->empty() &&
                                              (*it)[0].is_string())
    *arch = (*it)[0].get<std::string>();
  else if (auto mt = config.find("model_type");
           mt != config.end() && mt->is_string())
    *arch = mt->get<std::string>();
  // Multimodal models describe their language model in text_config.
  const Json* cfg = &config;
  std::string where_cfg = where;
  if (!config.contains("num_hidden_layers") && !config.contains("n_layer")) {
    if (auto tc = config.find("text_config");
        tc != config.end() && tc->is_object()) {
      cfg = &*tc;
      where_cfg = where + ": text_config";
    }
  }
  kv->source = where_cfg;
  std::string context_key;
  kv->model_context =
      ConfigInt(*cfg, {"max_position_embeddings", "n_positions"}, where_cfg,
                kMaxContext, &context_key);
  if (kv->model_context) kv->model_context_key = context_key;
  const auto layers = ConfigInt(*cfg, {"num_hidden_layers", "n_layer"},
                                where_cfg, kMaxShapeValue);
  const auto heads = ConfigInt(*cfg, {"num_attention_heads", "n_head"},
                               where_cfg, kMaxShapeValue);
  const auto kv_heads =
      ConfigInt(*cfg, {"num_key_value_heads"}, where_cfg, kMaxShapeValue);
  const auto hidden =
      ConfigInt(*cfg, {"hidden_size", "n_embd"}, where_cfg, kMaxShapeValue);
  auto head_dim = ConfigInt(*cfg, {"head_dim"}, where_cfg, kMaxShapeValue);
  std::string missing;
  if (!layers)
    missing = "num_hidden_layers";
  else if (!heads)
    missing = "num_attention_heads";
  else if (!head_dim && !hidden)
    missing = "hidden_size (or head_dim)";
  if (!missing.empty()) {
    kv->why_unknown = where_cfg + " has no " + missing;
    return;
  }
  if (!head_dim) {
    if (*hidden % *heads != 0) {
      kv->why_unknown = where_cfg + ": hidden_size " + std::to_string(*hidden) +
                        " is not a multiple of num_attention_heads " +
                        std::to_string(*heads) + " (and no head_dim)";
      return;
    }
    head_dim = *hidden / *heads;
  }
  kv->known = true;
  kv->layers = *layers;
  kv->kv_heads = kv_heads ? *kv_heads : *heads;
  kv->head_dim_k = kv->head_dim_v = *head_dim;
  kv->elements_per_token = Mul(Mul(kv->layers, kv->kv_heads, where_cfg),
                               kv->head_dim_k + kv->head_dim_v, where_cfg);
}

// The attention shape of a safetensors checkpoint: the config.json of its
// model directory, if it has one.
void ReadCheckpointShape(const io::Checkpoint& ckpt, KvCache* kv,
                         std::string* arch) {
  bool have_config = false;
  if (ckpt.layout() != io::Checkpoint::Layout::kFile)
    for (const std::string& name : ckpt.other_files())
      have_config = have_config || name == "config.json";
  if (have_config) {
    ReadConfigJson(fs::path(ckpt.directory()) / "config.json", kv, arch);
  } else {
    kv->why_unknown =
        ckpt.layout() == io::Checkpoint::Layout::kFile
            ? "no config.json read (give the model directory to use it)"
            : "the model directory has no config.json";
  }
}

// ---------------------------------------------------------------------------
// The attention shape: GGUF metadata.

std::string KeyWhere(const io::GgufFile& f, const io::GgufKv& kv) {
  return f.path() + ": key '" + EscapeForTerminal(kv.key()) + "' at byte " +
         std::to_string(kv.offset());
}

// Element i (0 for a scalar) of an unsigned-integer value in 1..limit (0
// allowed with allow_zero): exit 2 naming the key otherwise.
int64_t GgufCount(const io::GgufFile& f, const io::GgufKv& kv, uint64_t i,
                  int64_t limit, bool allow_zero) {
  uint64_t v = 0;
  if (!kv.GetUint(&v, i))
    throw ToolError(2, KeyWhere(f, kv) +
                           ": expected an unsigned integer, got " +
                           (kv.is_array() ? std::string("an array of ") : "") +
                           GgufTypeName(kv.element_type()));
  if ((v == 0 && !allow_zero) || v > static_cast<uint64_t>(limit))
    throw ToolError(2, KeyWhere(f, kv) + ": " + std::to_string(v) +
                           " is out of range (" + (allow_zero ? "0" : "1") +
                           ".." + std::to_string(limit) + ")");
  return static_cast<int64_t>(v);
}

// A scalar count; nullopt when absent. An array is refused.
std::optional<int64_t> GgufScalar(const io::GgufFile& f, const std::string& key,
                                  int64_t limit) {
  const io::GgufKv* kv = f.metadata().Find(key);
  if (kv == nullptr) return std::nullopt;
  if (kv->is_array())
    throw ToolError(2, KeyWhere(f, *kv) +
                           ": expected one unsigned integer, "
                           "got an array");
  return GgufCount(f, *kv, 0, limit, false);
}

void ReadGgufShape(const io::GgufFile& f, KvCache* kv, std::string* arch_out) {
  const io::GgufKv* arch_kv = f.metadata().Find("general.architecture");
  std::string_view arch_view;
  if (arch_kv == nullptr || !arch_kv->GetString(&arch_view)) {
    kv->why_unknown = arch_kv == nullptr
                          ? "the GGUF metadata has no general.architecture"
                          : "general.architecture is not a string";
    return;
  }
  const std::string arch(arch_view);
  *arch_out = arch;
  kv->source = "GGUF metadata (" + arch + ".*)";
  const std::string p = arch + ".";
  kv->model_context = GgufScalar(f, p + "context_length", kMaxContext);
  if (kv->model_context) kv->model_context_key = p + "context_length";
  const auto layers = GgufScalar(f, p + "block_count", kMaxShapeValue);
  const auto embd = GgufScalar(f, p + "embedding_length", kMaxShapeValue);
  const io::GgufKv* heads_kv = f.metadata().Find(p + "attention.head_count");
  const io::GgufKv* kv_heads_kv =
      f.metadata().Find(p + "attention.head_count_kv");
  auto key_len = GgufScalar(f, p + "attention.key_length", kMaxShapeValue);
  auto value_len = GgufScalar(f, p + "attention.value_length", kMaxShapeValue);
  std::string missing;
  if (!layers)
    missing = p + "block_count";
  else if (heads_kv == nullptr)
    missing = p + "attention.head_count";
  if (!missing.empty()) {
    kv->why_unknown = "the GGUF metadata has no " + missing;
    return;
  }
  // head_count and head_count_kv: one value, or one per layer (hybrid
  // models list 0 for layers without attention).
  auto per_layer = [&](const io::GgufKv& v, int64_t l) {
    if (v.is_array() && v.count() != static_cast<uint64_t>(*layers))
      throw ToolError(2, KeyWhere(f, v) + ": " + std::to_string(v.count()) +
                             " entries for " + std::to_string(*layers) +
                             " layers");
    return GgufCount(f, v, v.is_array() ? static_cast<uint64_t>(l) : 0,
                     kMaxShapeValue, true);
  };
  const io::GgufKv& kvh = kv_heads_kv != nullptr ? *kv_heads_kv : *heads_kv;
  // The head dimension: key_length, else embedding_length / head_count (of
  // the first layer with attention), as llama.cpp derives it.
  if (!key_len) {
    int64_t heads = 0;
    for (int64_t l = 0; l < *layers && heads == 0; ++l)
      heads = per_layer(*heads_kv, l);
    if (!embd || heads == 0 || *embd % heads != 0) {
      kv->why_unknown =
          !embd ? "the GGUF metadata has neither " + p +
                      "attention.key_length nor " + p + "embedding_length"
                : p + "embedding_length is not a multiple of " + p +
                      "attention.head_count (and no key_length)";
      return;
    }
    key_len = *embd / heads;
  }
  if (!value_len) value_len = key_len;
  int64_t per_token = 0;
  int64_t first = -1;
  bool uniform = true;
  for (int64_t l = 0; l < *layers; ++l) {
    const int64_t h = per_layer(kvh, l);
    if (first < 0) first = h;
    uniform = uniform && h == first;
    per_token =
        Add(per_token, Mul(h, *key_len + *value_len, kv->source), kv->source);
  }
  kv->known = true;
  kv->layers = *layers;
  kv->kv_heads = uniform ? first : -1;
  kv->head_dim_k = *key_len;
  kv->head_dim_v = *value_len;
  kv->elements_per_token = per_token;
}

void FinishKv(const InspectOptions& o, KvCache* kv) {
  if (o.context) {
    kv->context = *o.context;
    kv->context_source = "--context";
  } else if (kv->model_context) {
    kv->context = *kv->model_context;
    kv->context_source = kv->model_context_key;
  } else {
    kv->context = kDefaultContext;
    kv->context_source = "default (the model gives no maximum context)";
  }
  kv->batch = o.batch;
  if (!kv->known) return;
  const std::string what = "KV cache";
  kv->bytes =
      Mul(Mul(Mul(kv->elements_per_token, kKvBytes, what), kv->context, what),
          kv->batch, what);
}

// ---------------------------------------------------------------------------

void Estimate(Model* m) {
  for (SchemeRow& r : m->schemes) {
    r.runtime_low = Add(r.bytes, Tenths(r.bytes, kBandLowTenths), "estimate");
    r.runtime_high = Add(r.bytes, Tenths(r.bytes, kBandHighTenths), "estimate");
    r.need = m->kv.known ? Add(r.runtime_high, m->kv.bytes, "estimate")
                         : r.runtime_high;
  }
}

Model Load(const InspectOptions& o) {
  Model m;
  m.path = o.input;
  if (LooksLikeGguf(o.input)) {
    std::unique_ptr<io::GgufFile> f;
    Check(io::GgufFile::Open(o.input, &f), "");
    m.gguf = true;
    m.layout = "GGUF v" + std::to_string(f->version()) + " file";
    m.files = 1;
    m.file_bytes = static_cast<int64_t>(f->file_size());
    for (const io::GgufTensorInfo& g : f->tensors()) {
      Tensor t;
      t.name = g.name;
      t.dtype = io::GgmlTypeName(g.type);
      t.dims = g.ne;
      t.elements = g.n_elements;
      if (g.byte_size > static_cast<uint64_t>(INT64_MAX))
        Overflow(f->path() + ": tensor '" + EscapeForTerminal(g.name) + "'");
      t.bytes = static_cast<int64_t>(g.byte_size);
      const bool integer =
          g.type == io::GgmlType::kI8 || g.type == io::GgmlType::kI16 ||
          g.type == io::GgmlType::kI32 || g.type == io::GgmlType::kI64;
      t.castable = io::GgmlTypeToKernel(g.type, &t.kernel_dtype);
      t.cls = Classify(t.name, t.dims.size(), integer, true);
      m.tensors.push_back(std::move(t));
    }
    Summarize(&m);
    AddStoredAndCastRows(&m);
    AddGgufRows(&m, *f);
    ReadGgufShape(*f, &m.kv, &m.architecture);
  } else {
    std::unique_ptr<io::Checkpoint> ckpt;
    Check(io::Checkpoint::Open(o.input, &ckpt), "");
    switch (ckpt->layout()) {
      case io::Checkpoint::Layout::kFile:
        m.layout = "safetensors file";
        break;
      case io::Checkpoint::Layout::kDirectory:
        m.layout = "safetensors model directory";
        break;
      case io::Checkpoint::Layout::kShardedDirectory:
        m.layout = "sharded safetensors model directory (" +
                   std::to_string(ckpt->shards().size()) + " shards)";
        break;
    }
    for (const auto& shard : ckpt->shards()) {
      ++m.files;
      m.file_bytes = Add(m.file_bytes, static_cast<int64_t>(shard->file_size()),
                         "file sizes");
    }
    bool packed = false;
    for (const io::CheckpointTensor& ct : ckpt->tensors()) {
      const io::TensorInfo& info = *ct.info;
      Tensor t;
      t.name = info.name;
      t.dtype = io::StDtypeName(info.dtype);
      t.dims = info.shape;
      t.elements = info.num_elements;
      if (info.byte_size() > static_cast<uint64_t>(INT64_MAX))
        Overflow("tensor '" + EscapeForTerminal(info.name) + "'");
      t.bytes = static_cast<int64_t>(info.byte_size());
      const bool integer = IsBufferDType(t.dtype);
      t.castable = IsQuantizableDType(t.dtype, &t.kernel_dtype);
      t.cls = Classify(t.name, t.dims.size(), integer, false);
      packed = packed || EndsWith(t.name, ".weight_packed");
      m.tensors.push_back(std::move(t));
    }
    if (packed)
      m.notes.push_back(
          "this checkpoint is already quantized (*.weight_packed): its "
          "packed integer tensors are counted as buffers, as stored, not as "
          "the parameters they encode");
    Summarize(&m);
    AddStoredAndCastRows(&m);
    AddSafetensorsRows(&m);
    ReadCheckpointShape(*ckpt, &m.kv, &m.architecture);
  }
  FinishKv(o, &m.kv);
  Estimate(&m);
  return m;
}

// ---------------------------------------------------------------------------
// Output.

struct Fit {
  bool given = false;
  std::string text;
  int64_t bytes = 0;
};

std::vector<const Tensor*> Largest(const Model& m, int top) {
  std::vector<const Tensor*> order;
  order.reserve(m.tensors.size());
  for (const Tensor& t : m.tensors) order.push_back(&t);
  // Ties keep file order.
  std::stable_sort(
      order.begin(), order.end(),
      [](const Tensor* a, const Tensor* b) { return a->bytes > b->bytes; });
  if (order.size() > static_cast<size_t>(top))
    order.resize(static_cast<size_t>(top));
  return order;
}

std::string NeedWhat(const Model& m) {
  return m.kv.known ? "weights + 40% (the band's upper end) + the KV cache"
                    : "weights + 40% (the band's upper end; no KV cache: " +
                          m.kv.why_unknown + ")";
}

Json ToJson(const Model& m, const InspectOptions& o, const Fit& fit) {
  Json j;
  j["nibble_version"] = NIBBLE_VERSION_STRING;
  j["input"] = m.path;
  j["format"] = m.gguf ? "gguf" : "safetensors";
  j["layout"] = m.layout;
  j["architecture"] = m.architecture;
  j["files"] = m.files;
  j["file_bytes"] = m.file_bytes;
  j["tensors"] = static_cast<int64_t>(m.tensors.size());
  Json params;
  params["total"] = m.params;
  for (int c = 0; c < kNumClasses - 1; ++c)
    params[kClassKeys[c]] = m.by_class[c].elements;
  j["params"] = params;
  j["bytes"] = m.bytes;
  Json classes;
  for (int c = 0; c < kNumClasses; ++c) {
    classes[kClassKeys[c]] = {{"tensors", m.by_class[c].tensors},
                              {"elements", m.by_class[c].elements},
                              {"bytes", m.by_class[c].bytes}};
  }
  j["classes"] = classes;
  Json buffers = Json::array();
  for (const Tensor& t : m.tensors)
    if (t.cls == Class::kBuffer) buffers.push_back(t.name);
  j["buffer_names"] = buffers;
  Json dtypes;
  for (const auto& [name, t] : m.by_dtype)
    dtypes[name] = {
        {"tensors", t.tensors}, {"elements", t.elements}, {"bytes", t.bytes}};
  j["dtypes"] = dtypes;
  Json largest = Json::array();
  for (const Tensor* t : Largest(m, o.top)) {
    largest.push_back({{"name", t->name},
                       {"dtype", t->dtype},
                       {m.gguf ? "ne" : "shape", t->dims},
                       {"class", ClassKey(t->cls)},
                       {"elements", t->elements},
                       {"bytes", t->bytes}});
  }
  j["largest"] = largest;
  Json memory;
  for (const SchemeRow& r : m.schemes) memory[r.key] = r.bytes;
  j["memory"] = memory;
  Json schemes = Json::array();
  for (const SchemeRow& r : m.schemes) {
    Json s;
    s["scheme"] = r.key;
    s["kind"] = r.kind;
    s["bytes"] = r.bytes;
    s["bits_per_weight"] = BitsPerWeight(r.bytes, m.params);
    if (r.kind == "compressed-tensors" || r.kind == "gguf") {
      s["quantized_tensors"] = r.quantized_tensors;
      s["quantized_params"] = r.quantized_params;
      s["quantized_bytes"] = r.quantized_bytes;
      s["quantized_bits_per_weight"] =
          BitsPerWeight(r.quantized_bytes, r.quantized_params);
      s["kept_bytes"] = r.bytes - r.quantized_bytes;
      if (r.kind == "compressed-tensors") s["not_fitting"] = r.not_fitting;
    }
    s["runtime_low"] = r.runtime_low;
    s["runtime_high"] = r.runtime_high;
    s["need"] = r.need;
    if (fit.given) {
      s["fits"] = r.need <= fit.bytes;
      s["margin"] = fit.bytes - r.need;
    }
    schemes.push_back(s);
  }
  j["schemes"] = schemes;
  j["runtime_band"] = {{"low", 1.0 + kBandLowTenths / 10.0},
                       {"high", 1.0 + kBandHighTenths / 10.0},
                       {"rule",
                        "20-40% over the weights for KV cache, activations and "
                        "framework"},
                       {"need", NeedWhat(m)}};
  Json kv;
  kv["known"] = m.kv.known;
  if (m.kv.known) {
    kv["source"] = m.kv.source;
    kv["layers"] = m.kv.layers;
    if (m.kv.kv_heads >= 0)
      kv["kv_heads"] = m.kv.kv_heads;
    else
      kv["kv_heads"] = nullptr;  // differs between layers
    kv["head_dim_k"] = m.kv.head_dim_k;
    kv["head_dim_v"] = m.kv.head_dim_v;
    kv["bytes_per_token"] = m.kv.elements_per_token * kKvBytes;
  } else {
    kv["why_unknown"] = m.kv.why_unknown;
  }
  kv["context"] = m.kv.context;
  kv["context_source"] = m.kv.context_source;
  kv["batch"] = m.kv.batch;
  kv["dtype"] = "F16";
  kv["bytes"] = m.kv.known ? Json(m.kv.bytes) : Json(nullptr);
  j["kv_cache"] = kv;
  if (fit.given)
    j["gpu"] = {{"text", fit.text}, {"bytes", fit.bytes}};
  else
    j["gpu"] = nullptr;
  j["notes"] = m.notes;
  return j;
}

// Aligned columns: two spaces apart, numbers (right[c]) right-aligned, no
// trailing spaces.
std::string Columns(const std::vector<std::vector<std::string>>& rows,
                    const std::vector<bool>& right, const std::string& indent) {
  std::vector<size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t c = 0; c < row.size(); ++c)
      width[c] = std::max(width[c], row[c].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line = indent;
    for (size_t c = 0; c < row.size(); ++c) {
      const size_t pad = width[c] - row[c].size();
      const bool r = c < right.size() && right[c];
      if (c > 0) line += "  ";
      if (r) line.append(pad, ' ');
      line += row[c];
      if (!r && c + 1 < row.size()) line.append(pad, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  return out;
}

// `text` as lines of at most kWrapWidth columns (words longer than that
// stand alone), each indented by two spaces.
constexpr size_t kWrapWidth = 96;
std::string Wrap(const std::string& text) {
  std::string out;
  std::string line = " ";
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find(' ', pos);
    if (end == std::string::npos) end = text.size();
    const std::string word = text.substr(pos, end - pos);
    pos = end + 1;
    if (word.empty()) continue;
    if (line.size() > 1 && line.size() + 1 + word.size() > kWrapWidth) {
      out += line + "\n";
      line = " ";
    }
    line += " " + word;
  }
  if (line.size() > 1) out += line + "\n";
  return out;
}

std::string Percent(int64_t part, int64_t whole) {
  return whole > 0 ? Printf("%.1f%%", 100.0 * static_cast<double>(part) /
                                          static_cast<double>(whole))
                   : "-";
}

std::string Table(const Model& m, const InspectOptions& o, const Fit& fit) {
  std::string out;
  out += "model: " + EscapeForTerminal(m.path) + " (" + m.layout + ", " +
         WithCommas(m.files) + (m.files == 1 ? " file, " : " files, ") +
         WithCommas(m.file_bytes) + " bytes)\n";
  if (!m.architecture.empty())
    out += "architecture: " + EscapeForTerminal(m.architecture) + "\n";
  out += "parameters: " + WithCommas(m.params) + " (" + HumanCount(m.params) +
         ")\n";
  {
    std::vector<std::vector<std::string>> rows = {
        {"class", "parameters", "share", "tensors", "bytes"}};
    for (int c = 0; c < kNumClasses - 1; ++c) {
      const Totals& t = m.by_class[c];
      rows.push_back({kClassKeys[c], WithCommas(t.elements),
                      Percent(t.elements, m.params), WithCommas(t.tensors),
                      WithCommas(t.bytes)});
    }
    out += Columns(rows, {false, true, true, true, true}, "  ");
  }
  const Totals& buf = m.by_class[static_cast<int>(Class::kBuffer)];
  if (buf.tensors > 0) {
    std::string names;
    int listed = 0;
    for (const Tensor& t : m.tensors) {
      if (t.cls != Class::kBuffer) continue;
      if (listed == 3) {
        names += ", ...";
        break;
      }
      names += (listed++ ? ", " : "") + EscapeForTerminal(t.name);
    }
    out += "  not parameters: " + WithCommas(buf.tensors) + " integer " +
           (buf.tensors == 1 ? "tensor" : "tensors") + " (buffers: " + names +
           "), " + WithCommas(buf.elements) + " elements, " +
           WithCommas(buf.bytes) + " bytes\n";
  }
  out += "dtypes:\n";
  {
    std::vector<std::vector<std::string>> rows = {
        {"dtype", "tensors", "elements", "bytes"}};
    for (const auto& [name, t] : m.by_dtype)
      rows.push_back({name, WithCommas(t.tensors), WithCommas(t.elements),
                      WithCommas(t.bytes)});
    out += Columns(rows, {false, true, true, true}, "  ");
  }
  out += "tensor data on disk: " + WithCommas(m.bytes) + " bytes (" +
         HumanBytes(m.bytes) + ")\n";
  if (o.top > 0 && !m.tensors.empty()) {
    out += "largest tensors:\n";
    std::vector<std::vector<std::string>> rows = {
        {"tensor", m.gguf ? "ne" : "shape", "dtype", "class", "elements",
         "bytes"}};
    for (const Tensor* t : Largest(m, o.top))
      rows.push_back({EscapeForTerminal(t->name), FormatDims(t->dims), t->dtype,
                      ClassKey(t->cls), WithCommas(t->elements),
                      HumanBytes(t->bytes)});
    out += Columns(rows, {false, false, false, false, true, true}, "  ");
  }

  if (m.kv.known) {
    std::string heads = m.kv.kv_heads >= 0
                            ? std::to_string(m.kv.kv_heads) + " KV heads"
                            : "per-layer KV heads";
    std::string dims =
        m.kv.head_dim_k == m.kv.head_dim_v
            ? "2 (K, V) x " + std::to_string(m.kv.head_dim_k) + " head dim"
            : "(" + std::to_string(m.kv.head_dim_k) + " K + " +
                  std::to_string(m.kv.head_dim_v) + " V head dim)";
    out += "KV cache at FP16: " + std::to_string(m.kv.layers) + " layers x " +
           heads + " x " + dims + " x 2 bytes x " + WithCommas(m.kv.context) +
           " tokens x batch " + std::to_string(m.kv.batch) + " = " +
           WithCommas(m.kv.bytes) + " bytes (" + HumanBytes(m.kv.bytes) +
           ")\n  shape from " + EscapeForTerminal(m.kv.source) +
           "; context from " + m.kv.context_source + "\n";
  } else {
    out += "KV cache: unknown (" + EscapeForTerminal(m.kv.why_unknown) + ")\n";
  }

  // Already quantized models: the quantizing rows would only repeat
  // `stored` (nibble does not requantize).
  bool nothing_to_quantize = true;
  for (const SchemeRow& r : m.schemes)
    if ((r.kind == "compressed-tensors" || r.kind == "gguf") &&
        r.quantized_tensors > 0)
      nothing_to_quantize = false;
  out += "memory for the weights (whole model; bpw = 8 x bytes / " +
         WithCommas(m.params) + " parameters):\n";
  {
    std::vector<std::string> head = {
        "scheme", "bytes", "size", "bpw", "quantized", "runtime x1.2 .. x1.4"};
    head.push_back(m.kv.known ? "need (+KV)" : "need");
    if (fit.given) head.push_back("fits " + fit.text);
    std::vector<std::vector<std::string>> rows = {head};
    for (const SchemeRow& r : m.schemes) {
      if (!r.in_table ||
          (nothing_to_quantize && r.kind != "stored" && r.kind != "cast"))
        continue;
      std::vector<std::string> row = {
          r.label,
          WithCommas(r.bytes),
          HumanBytes(r.bytes),
          m.params > 0 ? Printf("%.2f", BitsPerWeight(r.bytes, m.params)) : "-",
          r.kind == "compressed-tensors" || r.kind == "gguf"
              ? std::to_string(r.quantized_tensors) + " tensors"
              : "-",
          HumanBytes(r.runtime_low) + " .. " + HumanBytes(r.runtime_high),
          HumanBytes(r.need)};
      if (fit.given) {
        const int64_t margin = fit.bytes - r.need;
        row.push_back(margin >= 0 ? "yes, " + HumanBytes(margin) + " spare"
                                  : "no, " + HumanBytes(-margin) + " short");
      }
      rows.push_back(row);
    }
    out +=
        Columns(rows, {false, true, true, true, true, true, true, false}, "  ");
  }
  // What each row counts.
  out += Wrap(
      "stored: the tensors as they are. fp32, fp16/bf16: every parameter "
      "tensor at 4 / 2 bytes per element (buffers as stored).");
  const SchemeRow* int8 = nullptr;
  int64_t worst = 0;
  for (const SchemeRow& r : m.schemes) {
    if (r.key == "int8") int8 = &r;
    if (r.kind == "compressed-tensors") worst = std::max(worst, r.not_fitting);
  }
  std::string quantized;
  if (int8 != nullptr) {
    quantized =
        " " + std::to_string(int8->quantized_tensors) + " of " +
        std::to_string(m.by_class[static_cast<int>(Class::kMatrix)].tensors) +
        " matrices quantized";
    if (worst > 0)
      quantized += "; with some group sizes up to " + std::to_string(worst) +
                   " fewer (columns not a multiple of the group size: kept)";
    quantized += ".";
  }
  if (!m.gguf) {
    const std::string emb =
        m.embedding_dtypes.empty() ? "" : " (" + m.embedding_dtypes + " here)";
    out += Wrap(
        "int8 (per channel), int4-gN[-asym]: what `nibble convert --scheme "
        "S` writes (its --dry-run total): the 2-D '*.weight' F32/F16/BF16 "
        "tensors quantized in the compressed-tensors layout (codes, scales in "
        "the weight's dtype, zero points if asym, weight_shape); embeddings "
        "and output head" +
        emb + ", biases, norms and buffers kept as stored." + quantized);
    if (int8 != nullptr && m.kept_float32_bytes * 20 >= int8->bytes)
      out += Wrap("Of what they keep, " + HumanBytes(m.kept_float32_bytes) +
                  " is F32: a cast rule (convert --tensor-type PATTERN=fp16) "
                  "would save " +
                  HumanBytes(m.kept_float32_bytes / 2) + ".");
  } else {
    out += Wrap(
        "q8_0, q4_0, q4_1: what `nibble convert IN OUT.gguf --scheme T` "
        "writes (llama-quantize's choices: norms kept, output or tied "
        "token_embd at q8_0 under q4_*, other types copied). int8, "
        "int4-gN[-asym], for comparison: the tensors q8_0 quantizes except "
        "token_embd/output, in the compressed-tensors layout (scales in the "
        "tensor's dtype); everything else as stored." +
        quantized);
  }
  if (nothing_to_quantize)
    out += Wrap(std::string("Quantizing schemes (") +
                (m.gguf ? "q8_0, q4_0, q4_1, " : "") +
                "int8, int4-gN[-asym]) are not listed: no tensor here is one "
                "they quantize (F32/F16/BF16 matrices; nibble does not "
                "requantize), so each would equal `stored` (--json has "
                "them).");
  out += Wrap(
      "runtime: weights x 1.2 .. x 1.4 (rule of thumb: 20-40% over the "
      "weights for KV cache, activations and framework). need: " +
      NeedWhat(m) + ".");
  for (const std::string& n : m.notes) out += "note: " + n + "\n";
  return out;
}

int Inspect(const InspectOptions& o) {
  CheckKvOptions(o.context, o.batch);
  if (o.top < 0) UsageError("--top must not be negative");
  Fit fit;
  if (!o.gpu.empty()) {
    const uint64_t b = ParseSizeOption("--gpu", o.gpu);
    fit.given = true;
    fit.text = o.gpu;
    fit.bytes = static_cast<int64_t>(b);  // ParseSize caps at 9e18
  }
  ReportDestination json{o.json_path, ""};
  json.CheckWritable();

  const Model m = Load(o);
  for (const std::string& n : m.notes) spdlog::warn("{}", n);
  if (json.enabled())
    json.text =
        ToJson(m, o, fit).dump(2, ' ', false, Json::error_handler_t::replace) +
        "\n";
  WriteReports({&json});
  if (!json.to_stdout()) {
    std::cout << Table(m, o, fit);
    std::cout.flush();
  }
  return 0;
}

const char* const kInspectHelp =
    "Reads the headers only (never the tensor data), with convert's strict\n"
    "readers: a safetensors file, model directory or sharded model directory,\n"
    "or a GGUF file. Errors name the file, tensor or key and the byte offset\n"
    "(exit 2).\n"
    "Parameters: the elements of every floating-point or quantized tensor;\n"
    "integer tensors (e.g. position_ids) are buffers, listed apart. Classes,\n"
    "in this order: biases (last name part 'bias' or '*_bias'); norms (a name\n"
    "part containing 'norm' in any case, or 'ln_*'); embeddings (token and\n"
    "position embeddings and the output head: convert's embedding names and\n"
    "lm_head/embed_out; GGUF token_embd, output, position_embd,\n"
    "token_types); matrices (every other tensor of 2 or more dimensions);\n"
    "other. Bytes on disk: the tensors' data (no headers, no padding).\n"
    "Memory rows (bytes of the whole model, all tensors):\n"
    "  stored     the tensors as they are;\n"
    "  fp32, fp16/bf16  every parameter tensor at 4 or 2 bytes per element,\n"
    "             buffers as stored;\n"
    "  int8, int4-g32/g64/g128 and -asym  exactly what `nibble convert\n"
    "             --scheme S` writes (its --dry-run total): 2-D '*.weight'\n"
    "             F32/F16/BF16 tensors quantized in the compressed-tensors\n"
    "             layout (codes, scales in the weight's dtype, zero points,\n"
    "             weight_shape), everything else - embeddings and output\n"
    "             head, biases, norms, buffers - kept AS STORED (an F32\n"
    "             checkpoint keeps F32 embeddings). GGUF input: the tensors\n"
    "             q8_0 quantizes except token_embd/output, for comparison;\n"
    "  q8_0, q4_0, q4_1 (GGUF input)  what `nibble convert IN OUT.gguf\n"
    "             --scheme T` writes.\n"
    "bpw = 8 x bytes / parameters. runtime = weights x 1.2 .. x 1.4 (rule of\n"
    "thumb: 20-40% over the weights for KV cache, activations and framework).\n"
    "KV cache at FP16 = layers x KV heads x (K + V head dim) x 2 bytes x\n"
    "context x batch, from the config.json of a model directory\n"
    "(num_hidden_layers, num_attention_heads, num_key_value_heads,\n"
    "head_dim or hidden_size / heads; text_config for multimodal models) or\n"
    "the GGUF metadata ({arch}.block_count, .attention.head_count(_kv): one\n"
    "value or one per layer, .attention.key_length/value_length or\n"
    "embedding_length / head_count). Context:\n"
    "--context, else max_position_embeddings / {arch}.context_length, else\n"
    "4096. --gpu: need = weights x 1.4 (the band's upper end) + the KV cache;\n"
    "fits when need <= SIZE; the margin is SIZE - need. SIZE units: B, KB,\n"
    "MB, GB, TB (powers of 1000), KiB, MiB, GiB (powers of 1024).\n"
    "Largest tensors: by bytes, file order on ties.\n"
    "Example: nibble inspect ./Llama-3.2-1B --gpu 8GB --context 8192 --json "
    "-\n";

}  // namespace

CLI::App* AddInspectCommand(CLI::App* app, InspectOptions* o) {
  CLI::App* cmd = app->add_subcommand(
      "inspect",
      "Count the parameters of a safetensors checkpoint or GGUF file (per "
      "class and dtype) and estimate its memory per scheme, its KV cache and "
      "whether it fits a GPU (reads the headers only)");
  cmd->add_option("MODEL", o->input,
                  "A .safetensors file, a model directory or a .gguf file")
      ->required();
  cmd->add_option("--json", o->json_path,
                  "Write the figures as JSON ('-': stdout, instead of the "
                  "table)")
      ->type_name("FILE");
  cmd->add_option("--context", o->context,
                  "Tokens per sequence for the KV cache (default: the "
                  "model's maximum context, else 4096)")
      ->type_name("N");
  cmd->add_option("--batch", o->batch, "Sequences for the KV cache")
      ->type_name("B")
      ->capture_default_str();
  cmd->add_option("--gpu", o->gpu,
                  "GPU memory to check each scheme against, e.g. 24GB, "
                  "80GiB, 16000MB")
      ->type_name("SIZE");
  cmd->add_option("--top", o->top, "Largest tensors listed")
      ->type_name("N")
      ->capture_default_str();
  cmd->footer(kInspectHelp);
  return cmd;
}

int RunInspect(const InspectOptions& o, std::string* error) {
  return RunReportingErrors([&] { return Inspect(o); }, error);
}

bool IsBufferDType(std::string_view dtype) {
  return !dtype.empty() &&
         (dtype[0] == 'I' || dtype[0] == 'U' || dtype == "BOOL");
}

uint64_t ParseSizeOption(const std::string& option, const std::string& text) {
  try {
    return ParseSize(text);
  } catch (const ToolError& e) {
    // ParseSize names --max-shard-size; say which option it was.
    std::string msg = e.what();
    const std::string from = "--max-shard-size";
    if (StartsWith(msg, from)) msg = option + msg.substr(from.size());
    UsageError(msg);
  }
}

void CheckKvOptions(const std::optional<int64_t>& context, int64_t batch) {
  if (context && (*context < 1 || *context > kMaxContext))
    UsageError("--context must be between 1 and " +
               std::to_string(kMaxContext) + ", got " +
               std::to_string(*context));
  if (batch < 1 || batch > kMaxBatch)
    UsageError("--batch must be between 1 and " + std::to_string(kMaxBatch) +
               ", got " + std::to_string(batch));
}

KvCacheEstimate EstimateKvCache(const io::Checkpoint& ckpt,
                                const std::optional<int64_t>& context,
                                int64_t batch) {
  KvCache kv;
  std::string arch;
  ReadCheckpointShape(ckpt, &kv, &arch);
  InspectOptions o;
  o.context = context;
  o.batch = batch;
  FinishKv(o, &kv);
  KvCacheEstimate out;
  out.known = kv.known;
  out.why_unknown = kv.why_unknown;
  out.source = kv.source;
  out.context = kv.context;
  out.context_source = kv.context_source;
  out.batch = kv.batch;
  out.bytes = kv.known ? kv.bytes : 0;
  return out;
}

int64_t RuntimeHighBytes(int64_t weight_bytes) {
  return Add(weight_bytes, Tenths(weight_bytes, kBandHighTenths), "estimate");
}

}  // namespace nibble::tool
