// NamePattern: a glob or an RE2 regular expression on tensor names.
//
// Syntax
//   glob         `*` any run of characters (dots included), `?` one
//                character, `[abc]`, `[a-z]`, `[!abc]` one character of (or not
//                of) a set; everything else is literal. A glob must match the
//                whole name.
//   re:<regex>   RE2 syntax (https://github.com/google/re2/wiki/Syntax),
//                matched like Python's re.match, as compressed-tensors and vLLM
//                match their `re:` targets: anchored at the start of the name,
//                not at the end (write `$` to anchor the end).
// A pattern matches a tensor when it matches the full tensor name
// (`model.layers.0.mlp.down_proj.weight`) or its module name (the name without
// its last dot-separated part: `model.layers.0.mlp.down_proj`). So `lm_head`,
// `*.down_proj` and `*.down_proj.weight` all select the down projections'
// weights (the first two their biases too).
//
// Safety: both kinds compile to RE2, whose matching is linear in the name's
// length (no backtracking, no recursion per character), so a pattern such as
// `re:(a*)*b` cannot hang on a long name. Patterns longer than
// kMaxPatternBytes and programs larger than RE2's memory budget are rejected.
//
// A compiled pattern is immutable and safe to share between threads; copies
// share the compiled program.
#ifndef NIBBLE_TOOLS_PATTERN_H_
#define NIBBLE_TOOLS_PATTERN_H_

#include <memory>
#include <string>
#include <string_view>

#include "nibble/status.h"

namespace re2 {
class RE2;
}

namespace nibble::tool {

inline constexpr size_t kMaxPatternBytes = 1024;

// The module name of a tensor: its name without the last dot-separated part;
// the name itself when it has no dot.
std::string_view ModuleName(std::string_view tensor_name);

class NamePattern {
 public:
  NamePattern() = default;  // matches nothing

  // Compiles a glob or "re:" pattern. On error returns kInvalidArgument with a
  // message that quotes the pattern and says what is wrong (callers add the
  // file and line); `*out` is unchanged.
  static Status Compile(std::string_view text, NamePattern* out);

  // The pattern as written.
  const std::string& text() const { return text_; }
  bool is_regex() const { return is_regex_; }

  // Matches one string (see the anchoring rules above).
  bool MatchesString(std::string_view s) const;
  // Matches the full tensor name or its module name.
  bool Matches(std::string_view tensor_name) const;

 private:
  std::string text_;
  bool is_regex_ = false;
  std::shared_ptr<const re2::RE2> re_;
};

}  // namespace nibble::tool

#endif  // NIBBLE_TOOLS_PATTERN_H_
