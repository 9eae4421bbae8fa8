// The mixed-precision config file of `nibble convert` / `nibble report`, the
// command-line overrides, and the rule set they combine into.
//
// File format (TOML, parsed with toml++; see examples/mixed-precision.toml):
//
//   default = "int4"      # target of 2-D linear weights no rule matches
//   group_size = 128      # group of int4 names without -gN: 32, 64, 128, 256
//   scale_dtype = "auto"  # auto (= the weight's dtype), f16, bf16 or f32
//   strict = false        # turn plan warnings into errors (as --strict)
//   [[rule]]              # ordered: the first rule that matches wins
//   match = "lm_head"     # a pattern (pattern.h), or a list of patterns
//   scheme = "fp16"       # any target name (target.h)
//
// Every key is optional except a rule's `match` and `scheme`. Unknown keys,
// wrong types, bad patterns, unknown scheme names and bad group sizes are
// errors reported as "FILE:LINE:COLUMN: what" with the position of the
// offending key or value. TOML errors (syntax, a duplicate key or table) come
// with toml++'s line and column.
//
// Limits: the file is at most kMaxConfigBytes; at most kMaxRules rules of at
// most kMaxPatternsPerRule patterns; dotted keys nested at most
// kMaxDottedKeysPerLine deep on a line (toml++ recurses once per level when
// it frees a table, so a 1 MB key of 500,000 levels would overflow the stack;
// arrays and inline tables are capped by toml++ at 256 levels).
//
// Errors: kBadFormat for the file's contents, kIoError when it cannot be read,
// kInvalidArgument for bad command-line overrides. No function here throws.
#ifndef NIBBLE_TOOLS_CONFIG_H_
#define NIBBLE_TOOLS_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nibble/status.h"
#include "nibble/types.h"
#include "pattern.h"
#include "target.h"

namespace nibble::tool {

inline constexpr int64_t kMaxConfigBytes = 1 << 20;
inline constexpr size_t kMaxRules = 1024;
inline constexpr size_t kMaxPatternsPerRule = 256;
inline constexpr int kMaxDottedKeysPerLine = 64;
// Used when neither the file nor --scheme names a default target.
inline constexpr char kBuiltinDefaultTarget[] = "int8";
inline constexpr int64_t kBuiltinGroupSize = 128;

// 1-based line and column in a config file; 0 when unknown.
struct SourcePosition {
  int64_t line = 0;
  int64_t column = 0;
};

// One [[rule]] as written. Its scheme is kept as text: an "int4" without a
// group part takes the group size in force when the rule set is built, which
// --group-size may change. The text was checked when the file was parsed.
struct ConfigRule {
  std::vector<NamePattern> patterns;
  std::string scheme;
  SourcePosition position;         // the [[rule]] header
  SourcePosition scheme_position;  // the scheme value
};

// A parsed config file.
struct ConfigFile {
  std::string path;  // as given; used in messages
  std::optional<std::string> default_target;
  SourcePosition default_position;
  std::optional<int64_t> group_size;
  std::optional<DType> scale_dtype;  // nullopt: auto (the weight's dtype)
  bool strict = false;
  std::vector<ConfigRule> rules;
};

// Parses config text. `source_name` is the file name used in messages.
Status ParseConfigText(std::string_view text, const std::string& source_name,
                       ConfigFile* out);
// Reads (at most kMaxConfigBytes; regular files only) and parses a file.
Status LoadConfigFile(const std::string& path, ConfigFile* out);

// Command-line overrides. Empty / nullopt fields were not given.
struct Overrides {
  std::string scheme;                      // --scheme: replaces `default`
  std::optional<int64_t> group_size;       // --group-size
  std::optional<std::string> scale_dtype;  // --scale-dtype (auto|f16|bf16|f32)
  std::vector<std::string> keep;           // --keep PATTERN (repeatable)
  std::vector<std::string> tensor_type;    // --tensor-type PATTERN=SCHEME
  bool strict = false;                     // --strict
};

// A rule with its target resolved.
struct Rule {
  std::vector<NamePattern> patterns;
  Target target;
  // Where it came from: "FILE:LINE" or the command-line option
  // ("--keep lm_head", "--tensor-type *.down_proj=int8").
  std::string origin;
  // "FILE:LINE: rule match = \"lm_head\" scheme = fp16", for messages.
  std::string Describe() const;
};

struct RuleSet {
  Target default_target;
  std::string default_origin;       // "FILE:LINE", "--scheme" or "built-in"
  bool scale_dtype_auto = true;     // scales in the weight's dtype
  DType scale_dtype = DType::kF16;  // when !scale_dtype_auto
  int64_t group_size = kBuiltinGroupSize;
  bool strict = false;
  std::vector<Rule> rules;  // command-line rules first, then the file's
};

// Combines an optional file (nullptr: none) with the overrides. Command-line
// rules come first (all --keep rules, then all --tensor-type rules, each in
// the order given), then the file's rules in file order; --scheme,
// --group-size, --scale-dtype replace the file's values; strict is on when
// either asks. Errors in the overrides are kInvalidArgument naming the
// option.
Status BuildRuleSet(const ConfigFile* file, const Overrides& overrides,
                    RuleSet* out);

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_CONFIG_H_
