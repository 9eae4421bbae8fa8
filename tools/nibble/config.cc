#include "config.h"

#include <sys/stat.h>
#include <toml++/toml.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <new>
#include <string>
#include <utility>

namespace nibble::tool {
namespace {

std::string Where(const std::string& file, int64_t line, int64_t column) {
  std::string s = file;
  if (line > 0) {
    s += ':' + std::to_string(line);
    if (column > 0) s += ':' + std::to_string(column);
  }
  return s;
}

Status BadFormat(const std::string& file, const SourcePosition& pos,
                 const std::string& what) {
  return Status(StatusCode::kBadFormat,
                Where(file, pos.line, pos.column) + ": " + what);
}

SourcePosition PositionOf(const toml::source_region& region) {
  return SourcePosition{static_cast<int64_t>(region.begin.line),
                        static_cast<int64_t>(region.begin.column)};
}

const char* TypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    default:
      return "nothing";
  }
}

// Rejects lines whose dotted keys could nest tables deeper than
// kMaxDottedKeysPerLine before toml++ sees them (toml++ frees nested tables
// recursively; see config.h). Counts '.' outside strings and comments on each
// line: floats count too, which only makes the check stricter, and a nibble
// config has no floats. Multi-line strings are skipped whole.
Status CheckKeyDepth(std::string_view text, const std::string& file) {
  int64_t line = 1;
  size_t line_start = 0;
  int dots = 0;
  size_t i = 0;
  const size_t n = text.size();
  auto starts = [&](size_t at, const char* s) {
    return text.compare(at, std::strlen(s), s) == 0;
  };
  auto newline = [&](size_t at) {
    ++line;
    line_start = at + 1;
    dots = 0;
  };
  while (i < n) {
    const char c = text[i];
    if (c == '\n') {
      newline(i);
      ++i;
    } else if (c == '#') {
      while (i < n && text[i] != '\n') ++i;
    } else if (starts(i, "\"\"\"") || starts(i, "'''")) {
      const char q = c;
      const bool escapes = q == '"';
      i += 3;
      while (i < n) {
        if (escapes && text[i] == '\\' && i + 1 < n) {
          if (text[i + 1] == '\n') newline(i + 1);
          i += 2;
          continue;
        }
        if (text[i] == q && i + 2 < n && text[i + 1] == q && text[i + 2] == q) {
          i += 3;
          // Up to two more quotes belong to the string's content.
          for (int k = 0; k < 2 && i < n && text[i] == q; ++k) ++i;
          break;
        }
        if (text[i] == '\n') newline(i);
        ++i;
      }
    } else if (c == '"' || c == '\'') {
      const bool escapes = c == '"';
      ++i;
      while (i < n && text[i] != '\n') {
        if (escapes && text[i] == '\\') {
          i += 2;
          continue;
        }
        if (text[i] == c) {
          ++i;
          break;
        }
        ++i;
      }
    } else {
      if (c == '.' && ++dots > kMaxDottedKeysPerLine) {
        return BadFormat(
            file,
            SourcePosition{line, static_cast<int64_t>(i - line_start + 1)},
            "keys nested more than " + std::to_string(kMaxDottedKeysPerLine) +
                " levels deep (more than " +
                std::to_string(kMaxDottedKeysPerLine) +
                " dots on one line outside strings); a nibble config needs "
                "two levels");
      }
      ++i;
    }
  }
  return Status::Ok();
}

Status ParseScaleDType(const std::string& text, std::optional<DType>* out) {
  if (text == "auto") {
    out->reset();
    return Status::Ok();
  }
  DType dtype;
  if (!ParseDType(text, &dtype)) {
    return Status(
        StatusCode::kInvalidArgument,
        "unknown scale dtype '" + text + "' (expected auto, f16, bf16 or f32)");
  }
  *out = dtype;
  return Status::Ok();
}

std::string GroupSizeMessage(int64_t g) {
  return "group size must be 32, 64, 128 or 256, got " + std::to_string(g);
}

Status ParseRule(const toml::table& rule, const std::string& file,
                 SourcePosition rule_pos, ConfigRule* out) {
  ConfigRule r;
  r.position = rule_pos;
  bool have_match = false;
  bool have_scheme = false;
  for (auto&& [key, node] : rule) {
    const SourcePosition key_pos = PositionOf(key.source());
    const SourcePosition value_pos = PositionOf(node.source());
    if (key.str() == "match") {
      have_match = true;
      std::vector<const toml::node*> items;
      if (node.is_string()) {
        items.push_back(&node);
      } else if (const toml::array* arr = node.as_array()) {
        if (arr->empty()) {
          return BadFormat(file, value_pos, "'match' is an empty list");
        }
        if (arr->size() > kMaxPatternsPerRule) {
          return BadFormat(file, value_pos,
                           "'match' lists more than " +
                               std::to_string(kMaxPatternsPerRule) +
                               " patterns");
        }
        for (const toml::node& item : *arr) items.push_back(&item);
      } else {
        return BadFormat(file, value_pos,
                         std::string("'match' must be a string or a list of "
                                     "strings, got ") +
                             TypeName(node));
      }
      for (const toml::node* item : items) {
        const SourcePosition item_pos = PositionOf(item->source());
        if (!item->is_string()) {
          return BadFormat(file, item_pos,
                           std::string("a 'match' pattern must be a string, "
                                       "got ") +
                               TypeName(*item));
        }
        NamePattern pattern;
        Status st = NamePattern::Compile(item->as_string()->get(), &pattern);
        if (!st.ok()) return BadFormat(file, item_pos, st.message());
        r.patterns.push_back(std::move(pattern));
      }
    } else if (key.str() == "scheme") {
      have_scheme = true;
      if (!node.is_string()) {
        return BadFormat(
            file, value_pos,
            std::string("'scheme' must be a string, got ") + TypeName(node));
      }
      r.scheme = node.as_string()->get();
      r.scheme_position = value_pos;
      Target check;
      Status st = ParseTarget(r.scheme, kBuiltinGroupSize, DType::kF16, &check);
      if (!st.ok()) return BadFormat(file, value_pos, st.message());
    } else {
      return BadFormat(file, key_pos,
                       "unknown key '" + std::string(key.str()) +
                           "' in [[rule]] (expected match, scheme)");
    }
  }
  if (!have_match || !have_scheme) {
    return BadFormat(file, rule_pos,
                     std::string("[[rule]] without '") +
                         (have_match ? "scheme" : "match") +
                         "' (every rule needs match and scheme)");
  }
  *out = std::move(r);
  return Status::Ok();
}

Status ParseDocument(const toml::table& doc, const std::string& file,
                     ConfigFile* out) {
  ConfigFile cfg;
  cfg.path = file;
  for (auto&& [key, node] : doc) {
    const SourcePosition key_pos = PositionOf(key.source());
    const SourcePosition value_pos = PositionOf(node.source());
    const std::string_view k = key.str();
    if (k == "default") {
      if (!node.is_string()) {
        return BadFormat(
            file, value_pos,
            std::string("'default' must be a string, got ") + TypeName(node));
      }
      cfg.default_target = node.as_string()->get();
      cfg.default_position = value_pos;
      Target check;
      Status st = ParseTarget(*cfg.default_target, kBuiltinGroupSize,
                              DType::kF16, &check);
      if (!st.ok()) return BadFormat(file, value_pos, st.message());
    } else if (k == "group_size") {
      if (!node.is_integer()) {
        return BadFormat(file, value_pos,
                         std::string("'group_size' must be an integer, got ") +
                             TypeName(node));
      }
      const int64_t g = node.as_integer()->get();
      if (!IsValidGroupSize(g)) {
        return BadFormat(file, value_pos, GroupSizeMessage(g));
      }
      cfg.group_size = g;
    } else if (k == "scale_dtype") {
      if (!node.is_string()) {
        return BadFormat(file, value_pos,
                         std::string("'scale_dtype' must be a string, got ") +
                             TypeName(node));
      }
      Status st = ParseScaleDType(node.as_string()->get(), &cfg.scale_dtype);
      if (!st.ok()) return BadFormat(file, value_pos, st.message());
    } else if (k == "strict") {
      if (!node.is_boolean()) {
        return BadFormat(file, value_pos,
                         std::string("'strict' must be true or false, got ") +
                             TypeName(node));
      }
      cfg.strict = node.as_boolean()->get();
    } else if (k == "rule") {
      const toml::array* arr = node.as_array();
      if (arr == nullptr || !arr->is_array_of_tables()) {
        return BadFormat(file, key_pos,
                         std::string("'rule' must be an array of tables "
                                     "(write [[rule]] sections), got ") +
                             TypeName(node));
      }
      if (arr->size() > kMaxRules) {
        return BadFormat(file, key_pos,
                         "more than " + std::to_string(kMaxRules) + " rules");
      }
      for (const toml::node& item : *arr) {
        ConfigRule rule;
        Status st =
            ParseRule(*item.as_table(), file, PositionOf(item.source()), &rule);
        if (!st.ok()) return st;
        cfg.rules.push_back(std::move(rule));
      }
    } else {
      return BadFormat(file, key_pos,
                       "unknown key '" + std::string(k) +
                           "' (expected default, group_size, scale_dtype, "
                           "strict or [[rule]])");
    }
  }
  *out = std::move(cfg);
  return Status::Ok();
}

std::string JoinPatterns(const std::vector<NamePattern>& patterns) {
  std::string s;
  for (size_t i = 0; i < patterns.size(); ++i) {
    if (i > 0) s += ", ";
    s += patterns[i].text();
  }
  return s;
}

}  // namespace

Status ParseConfigText(std::string_view text, const std::string& source_name,
                       ConfigFile* out) {
  if (static_cast<int64_t>(text.size()) > kMaxConfigBytes) {
    return Status(StatusCode::kBadFormat,
                  source_name + ": config is " + std::to_string(text.size()) +
                      " bytes, more than the limit of " +
                      std::to_string(kMaxConfigBytes));
  }
  try {
    Status st = CheckKeyDepth(text, source_name);
    if (!st.ok()) return st;
    toml::table doc = toml::parse(text, std::string_view(source_name));
    return ParseDocument(doc, source_name, out);
  } catch (const toml::parse_error& e) {
    return BadFormat(source_name, PositionOf(e.source()),
                     "invalid TOML: " + std::string(e.description()));
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kBadFormat,
                  source_name + ": out of memory parsing the config");
  } catch (const std::exception& e) {
    return Status(
        StatusCode::kInternal,
        source_name + ": unexpected error parsing the config: " + e.what());
  }
}

Status LoadConfigFile(const std::string& path, ConfigFile* out) {
  struct stat sb;
  if (::stat(path.c_str(), &sb) != 0) {
    return Status(StatusCode::kIoError,
                  "cannot open config '" + path + "': " + std::strerror(errno));
  }
  if (S_ISDIR(sb.st_mode)) {
    return Status(StatusCode::kIoError,
                  "cannot read config '" + path + "': it is a directory");
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    return Status(StatusCode::kIoError,
                  "cannot open config '" + path + "': " + std::strerror(errno));
  }
  // Read at most one byte past the limit, whatever stat said: the file may
  // be a FIFO, a device or growing.
  std::string text;
  try {
    char buf[65536];
    while (static_cast<int64_t>(text.size()) <= kMaxConfigBytes) {
      const size_t got = std::fread(buf, 1, sizeof buf, f);
      text.append(buf, got);
      if (got < sizeof buf) break;
    }
  } catch (const std::bad_alloc&) {
    std::fclose(f);
    return Status(StatusCode::kIoError, "out of memory reading '" + path + "'");
  }
  const bool read_error = std::ferror(f) != 0;
  const int read_errno = errno;
  std::fclose(f);
  if (read_error) {
    return Status(StatusCode::kIoError, "cannot read config '" + path +
                                            "': " + std::strerror(read_errno));
  }
  if (static_cast<int64_t>(text.size()) > kMaxConfigBytes) {
    return Status(StatusCode::kBadFormat,
                  path + ": config is larger than the limit of " +
                      std::to_string(kMaxConfigBytes) + " bytes");
  }
  return ParseConfigText(text, path, out);
}

std::string Rule::Describe() const {
  return origin + " (" + JoinPatterns(patterns) + " -> " + TargetName(target) +
         ")";
}

Status BuildRuleSet(const ConfigFile* file, const Overrides& cli,
                    RuleSet* out) {
  try {
    RuleSet rs;
    const std::string path = file != nullptr ? file->path : std::string();

    if (cli.group_size.has_value()) {
      if (!IsValidGroupSize(*cli.group_size)) {
        return Status(StatusCode::kInvalidArgument,
                      "--group-size: " + GroupSizeMessage(*cli.group_size));
      }
      rs.group_size = *cli.group_size;
    } else if (file != nullptr && file->group_size.has_value()) {
      rs.group_size = *file->group_size;
    }

    std::optional<DType> scale;
    if (cli.scale_dtype.has_value()) {
      Status st = ParseScaleDType(*cli.scale_dtype, &scale);
      if (!st.ok()) {
        return Status(StatusCode::kInvalidArgument,
                      "--scale-dtype: " + st.message());
      }
    } else if (file != nullptr) {
      scale = file->scale_dtype;
    }
    rs.scale_dtype_auto = !scale.has_value();
    rs.scale_dtype = scale.value_or(DType::kF16);
    rs.strict = cli.strict || (file != nullptr && file->strict);

    if (!cli.scheme.empty()) {
      Status st = ParseTarget(cli.scheme, rs.group_size, rs.scale_dtype,
                              &rs.default_target);
      if (!st.ok()) {
        return Status(StatusCode::kInvalidArgument,
                      "--scheme: " + st.message());
      }
      rs.default_origin = "--scheme";
    } else if (file != nullptr && file->default_target.has_value()) {
      Status st = ParseTarget(*file->default_target, rs.group_size,
                              rs.scale_dtype, &rs.default_target);
      if (!st.ok()) {
        return BadFormat(path, file->default_position, st.message());
      }
      rs.default_origin = Where(path, file->default_position.line, 0);
    } else {
      Status st = ParseTarget(kBuiltinDefaultTarget, rs.group_size,
                              rs.scale_dtype, &rs.default_target);
      if (!st.ok()) return Status(StatusCode::kInternal, st.message());
      rs.default_origin = "built-in";
    }

    for (const std::string& p : cli.keep) {
      Rule rule;
      NamePattern pattern;
      Status st = NamePattern::Compile(p, &pattern);
      if (!st.ok()) {
        return Status(StatusCode::kInvalidArgument, "--keep: " + st.message());
      }
      rule.patterns.push_back(std::move(pattern));
      rule.target = Target::Keep();
      rule.origin = "--keep";
      rs.rules.push_back(std::move(rule));
    }
    for (const std::string& arg : cli.tensor_type) {
      // Scheme names never contain '=', patterns rarely do: split at the last.
      const size_t eq = arg.rfind('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == arg.size()) {
        return Status(StatusCode::kInvalidArgument,
                      "--tensor-type '" + arg +
                          "': expected PATTERN=SCHEME, e.g. "
                          "'*.down_proj=int8'");
      }
      Rule rule;
      NamePattern pattern;
      Status st = NamePattern::Compile(arg.substr(0, eq), &pattern);
      if (!st.ok()) {
        return Status(StatusCode::kInvalidArgument,
                      "--tensor-type: " + st.message());
      }
      st = ParseTarget(arg.substr(eq + 1), rs.group_size, rs.scale_dtype,
                       &rule.target);
      if (!st.ok()) {
        return Status(StatusCode::kInvalidArgument,
                      "--tensor-type: " + st.message());
      }
      rule.patterns.push_back(std::move(pattern));
      rule.origin = "--tensor-type";
      rs.rules.push_back(std::move(rule));
    }
    if (file != nullptr) {
      for (const ConfigRule& cr : file->rules) {
        Rule rule;
        rule.patterns = cr.patterns;
        Status st =
            ParseTarget(cr.scheme, rs.group_size, rs.scale_dtype, &rule.target);
        if (!st.ok()) return BadFormat(path, cr.scheme_position, st.message());
        rule.origin = Where(path, cr.position.line, 0);
        rs.rules.push_back(std::move(rule));
      }
    }
    *out = std::move(rs);
    return Status::Ok();
  } catch (const std::bad_alloc&) {
    return Status(StatusCode::kInternal, "out of memory building the rules");
  }
}

}  // namespace nibble::tool
