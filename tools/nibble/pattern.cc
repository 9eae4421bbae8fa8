#include "pattern.h"

#include <re2/re2.h>

#include <new>
#include <string>

namespace nibble::tool {
namespace {

// RE2 program budget (bytes of compiled program and DFA cache per pattern).
constexpr int64_t kMaxRe2Memory = 4 << 20;

Status Invalid(std::string_view pattern, const std::string& why) {
  return Status(StatusCode::kInvalidArgument,
                "invalid pattern '" + std::string(pattern) + "': " + why);
}

// Translates a glob into an RE2 pattern (matched with ANCHOR_BOTH).
Status GlobToRe2(std::string_view glob, std::string* out) {
  std::string re;
  re.reserve(glob.size() * 2);
  size_t i = 0;
  while (i < glob.size()) {
    const char c = glob[i];
    if (c == '*') {
      // Runs of stars are one star; RE2 is linear either way, this just keeps
      // the program small.
      while (i < glob.size() && glob[i] == '*') ++i;
      re += ".*";
      continue;
    }
    if (c == '?') {
      re += '.';
      ++i;
      continue;
    }
    if (c == '[') {
      size_t j = i + 1;
      bool negate = false;
      if (j < glob.size() && (glob[j] == '!' || glob[j] == '^')) {
        negate = true;
        ++j;
      }
      // As in fnmatch, a ']' right after '[' or '[!' is a member.
      size_t k = j;
      if (k < glob.size() && glob[k] == ']') ++k;
      while (k < glob.size() && glob[k] != ']') ++k;
      if (k >= glob.size()) return Invalid(glob, "'[' without a closing ']'");
      std::string set = "[";
      if (negate) set += '^';
      for (size_t m = j; m < k; ++m) {
        const char d = glob[m];
        const bool range = d == '-' && m > j && m + 1 < k;
        if (range) {
          if (static_cast<unsigned char>(glob[m - 1]) >
              static_cast<unsigned char>(glob[m + 1])) {
            return Invalid(glob, "reversed range in a set");
          }
          set += '-';
        } else if ((d >= '0' && d <= '9') || (d >= 'a' && d <= 'z') ||
                   (d >= 'A' && d <= 'Z') ||
                   static_cast<unsigned char>(d) >= 0x80) {
          set += d;
        } else {
          set += '\\';
          set += d;
        }
      }
      set += ']';
      re += set;
      i = k + 1;
      continue;
    }
    // Copy a literal run (UTF-8 sequences stay whole).
    size_t j = i;
    while (j < glob.size() && glob[j] != '*' && glob[j] != '?' &&
           glob[j] != '[') {
      ++j;
    }
    re += RE2::QuoteMeta(re2::StringPiece(glob.data() + i, j - i));
    i = j;
  }
  *out = std::move(re);
  return Status::Ok();
}

}  // namespace

std::string_view ModuleName(std::string_view name) {
  const size_t dot = name.rfind('.');
  return dot == std::string_view::npos ? name : name.substr(0, dot);
}

Status NamePattern::Compile(std::string_view text, NamePattern* out) {
  if (text.size() > kMaxPatternBytes) {
    return Status(StatusCode::kInvalidArgument,
                  "pattern of " + std::to_string(text.size()) +
                      " bytes is longer than the limit of " +
                      std::to_string(kMaxPatternBytes));
  }
  if (text.find('\0') != std::string_view::npos) {
    return Invalid(text, "it contains a NUL character");
  }
  const bool is_regex = text.substr(0, 3) == "re:";
  std::string source;
  if (is_regex) {
    source = std::string(text.substr(3));
    if (source.empty()) return Invalid(text, "empty regular expression");
  } else {
    if (text.empty()) return Invalid(text, "empty pattern");
    Status st = GlobToRe2(text, &source);
    if (!st.ok()) return st;
  }
  RE2::Options options;
  options.set_log_errors(false);
  options.set_max_mem(kMaxRe2Memory);
  std::shared_ptr<RE2> re;
  try {
    re = std::make_shared<RE2>(source, options);
  } catch (const std::bad_alloc&) {
    return Invalid(text, "out of memory compiling it");
  }
  if (!re->ok()) {
    return Invalid(text, is_regex ? "bad regular expression: " + re->error()
                                  : "bad glob: " + re->error());
  }
  out->text_ = std::string(text);
  out->is_regex_ = is_regex;
  out->re_ = std::move(re);
  return Status::Ok();
}

bool NamePattern::MatchesString(std::string_view s) const {
  if (!re_) return false;
  return re_->Match(re2::StringPiece(s.data(), s.size()), 0, s.size(),
                    is_regex_ ? RE2::ANCHOR_START : RE2::ANCHOR_BOTH, nullptr,
                    0);
}

bool NamePattern::Matches(std::string_view tensor_name) const {
  if (MatchesString(tensor_name)) return true;
  const std::string_view module = ModuleName(tensor_name);
  return module.size() != tensor_name.size() && MatchesString(module);
}

}  // namespace nibble::tool
