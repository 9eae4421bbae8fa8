// The config file (bad-inputs.md rows 34-37) and the command-line overrides.
#include "config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

namespace nibble::tool {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

Status Parse(const std::string& text, ConfigFile* cfg) {
  return ParseConfigText(text, "cfg.toml", cfg);
}

// Expects a kBadFormat error whose message starts with "cfg.toml:LINE:" and
// contains `what`.
void ExpectError(const std::string& text, int line, const std::string& what) {
  ConfigFile cfg;
  Status st = Parse(text, &cfg);
  ASSERT_FALSE(st.ok()) << text;
  EXPECT_EQ(st.code(), StatusCode::kBadFormat) << st.message();
  EXPECT_THAT(st.message(),
              StartsWith("cfg.toml:" + std::to_string(line) + ":"))
      << text;
  EXPECT_THAT(st.message(), HasSubstr(what)) << text;
}

std::string WriteTemp(const std::string& name, const std::string& text) {
  const std::string path = ::testing::TempDir() + "/" + name;
  std::ofstream f(path, std::ios::binary);
  f << text;
  return path;
}

TEST(Config, ParsesAllKeys) {
  ConfigFile cfg;
  const std::string text =
      "# comment\n"
      "default = \"int4\"\n"
      "group_size = 64\n"
      "scale_dtype = \"bf16\"\n"
      "strict = true\n"
      "[[rule]]\n"
      "match = \"lm_head\"\n"
      "scheme = \"fp16\"\n"
      "[[rule]]\n"
      "match = [\"*.q_proj\", \"*.k_proj\", 're:.*\\.v_proj$']\n"
      "scheme = \"int8\"\n";
  Status st = Parse(text, &cfg);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(cfg.path, "cfg.toml");
  EXPECT_EQ(cfg.default_target.value(), "int4");
  EXPECT_EQ(cfg.default_position.line, 2);
  EXPECT_EQ(cfg.group_size.value(), 64);
  EXPECT_EQ(cfg.scale_dtype.value(), DType::kBF16);
  EXPECT_TRUE(cfg.strict);
  ASSERT_EQ(cfg.rules.size(), 2u);
  EXPECT_EQ(cfg.rules[0].patterns.size(), 1u);
  EXPECT_EQ(cfg.rules[0].scheme, "fp16");
  EXPECT_EQ(cfg.rules[0].position.line, 6);
  EXPECT_EQ(cfg.rules[0].scheme_position.line, 8);
  EXPECT_EQ(cfg.rules[1].patterns.size(), 3u);
  EXPECT_TRUE(cfg.rules[1].patterns[2].is_regex());
  EXPECT_EQ(cfg.rules[1].position.line, 9);

  RuleSet rs;
  st = BuildRuleSet(&cfg, Overrides(), &rs);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(TargetName(rs.default_target), "int4-g64");
  EXPECT_EQ(rs.default_target.scheme.scale_dtype, DType::kBF16);
  EXPECT_EQ(rs.default_origin, "cfg.toml:2");
  EXPECT_FALSE(rs.scale_dtype_auto);
  EXPECT_TRUE(rs.strict);
  ASSERT_EQ(rs.rules.size(), 2u);
  EXPECT_EQ(rs.rules[0].origin, "cfg.toml:6");
  EXPECT_EQ(rs.rules[0].Describe(), "cfg.toml:6 (lm_head -> fp16)");
  EXPECT_EQ(TargetName(rs.rules[1].target), "int8");
}

TEST(Config, EmptyFileGivesBuiltinDefaults) {
  ConfigFile cfg;
  ASSERT_TRUE(Parse("", &cfg).ok());
  RuleSet rs;
  ASSERT_TRUE(BuildRuleSet(&cfg, Overrides(), &rs).ok());
  EXPECT_EQ(TargetName(rs.default_target), kBuiltinDefaultTarget);
  EXPECT_EQ(rs.default_origin, "built-in");
  EXPECT_TRUE(rs.scale_dtype_auto);
  EXPECT_EQ(rs.group_size, 128);
  EXPECT_TRUE(rs.rules.empty());
  // No file at all is the same.
  ASSERT_TRUE(BuildRuleSet(nullptr, Overrides(), &rs).ok());
  EXPECT_EQ(TargetName(rs.default_target), kBuiltinDefaultTarget);
}

TEST(Config, InlineArrayOfRulesIsAccepted) {
  ConfigFile cfg;
  Status st = Parse(
      "rule = [{match = \"a\", scheme = \"keep\"}, {match = \"b\", scheme = "
      "\"int8\"}]\n",
      &cfg);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(cfg.rules.size(), 2u);
}

TEST(Config, ExampleConfigParses) {
  ConfigFile cfg;
  Status st = LoadConfigFile(
      std::string(NIBBLE_TOOL_EXAMPLES_DIR) + "/mixed-precision.toml", &cfg);
  ASSERT_TRUE(st.ok()) << st.message();
  RuleSet rs;
  ASSERT_TRUE(BuildRuleSet(&cfg, Overrides(), &rs).ok());
  EXPECT_EQ(TargetName(rs.default_target), "int4-g128");
  ASSERT_EQ(rs.rules.size(), 2u);
  EXPECT_EQ(TargetName(rs.rules[0].target), "fp16");
  EXPECT_TRUE(rs.rules[0].patterns[0].Matches("lm_head.weight"));
  EXPECT_EQ(TargetName(rs.rules[1].target), "int8");
  EXPECT_TRUE(
      rs.rules[1].patterns[0].Matches("model.layers.7.mlp.down_proj.weight"));
}

// Row 34: not TOML, duplicates, deep nesting.
TEST(ConfigErrors, InvalidTomlHasLineAndColumn) {
  ConfigFile cfg;
  Status st = Parse("default = \"int4\"\n\ngroup_size = = 3\n", &cfg);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.code(), StatusCode::kBadFormat);
  EXPECT_THAT(st.message(), StartsWith("cfg.toml:3:"));
  EXPECT_THAT(st.message(), HasSubstr("invalid TOML"));
  ExpectError("default = \"int4\n", 1, "invalid TOML");  // unterminated
  ExpectError("[[rule]\nmatch = \"x\"\n", 1, "invalid TOML");
  ExpectError("default = \"\xff\"\n", 1, "invalid TOML");  // not UTF-8
  ExpectError("a = 1\n\n\n   b c\n", 4, "invalid TOML");
}

TEST(ConfigErrors, DuplicateKeyOrTable) {
  ExpectError("default = \"int4\"\ndefault = \"int8\"\n", 2, "invalid TOML");
  ExpectError("[x]\na = 1\n[x]\nb = 2\n", 3, "invalid TOML");
  ExpectError("[[rule]]\nmatch = \"a\"\nmatch = \"b\"\nscheme = \"int8\"\n", 3,
              "invalid TOML");
}

TEST(ConfigErrors, DeepNestingIsAnErrorNotACrash) {
  // Dotted keys: toml++ would build (and free, recursively) 200,000 nested
  // tables. Rejected before parsing.
  std::string dotted = "a";
  for (int i = 0; i < 200000; ++i) dotted += ".a";
  ExpectError("x = 1\n" + dotted + " = 1\n", 2, "nested more than");
  // Deep table header.
  ExpectError("[" + dotted + "]\n", 1, "nested more than");
  // Dots inside strings and comments do not count.
  std::string dots(1000, '.');  // within the pattern length limit
  ConfigFile cfg;
  Status st = Parse(
      "# " + dots + "\n[[rule]]\nmatch = \"" + dots + "\"\nscheme = 'keep'\n",
      &cfg);
  EXPECT_TRUE(st.ok()) << st.message();
  st = Parse("default = \"\"\"" + dots + "\n" + dots + "\"\"\"\n", &cfg);
  EXPECT_FALSE(st.ok());
  EXPECT_THAT(st.message(), HasSubstr("unknown scheme"));  // not "nested"
  // Nested arrays and inline tables: toml++ stops at 256 levels.
  const int n = 100000;
  ExpectError("x = " + std::string(n, '[') + std::string(n, ']') + "\n", 1,
              "invalid TOML");
  std::string inl = "x = ";
  for (int i = 0; i < n; ++i) inl += "{a=";
  inl += "1" + std::string(n, '}') + "\n";
  ExpectError(inl, 1, "invalid TOML");
  // Nesting within the limits is valid TOML but not a nibble config.
  ExpectError("a.b.c = 1\n", 1, "unknown key 'a'");
}

TEST(ConfigErrors, FileTooLarge) {
  ConfigFile cfg;
  const std::string big(static_cast<size_t>(kMaxConfigBytes) + 1, '#');
  Status st = Parse(big, &cfg);
  EXPECT_EQ(st.code(), StatusCode::kBadFormat);
  EXPECT_THAT(st.message(), HasSubstr("limit"));
  const std::string path = WriteTemp("nibble-big.toml", big);
  st = LoadConfigFile(path, &cfg);
  EXPECT_EQ(st.code(), StatusCode::kBadFormat);
  EXPECT_THAT(st.message(), HasSubstr(path));
  std::remove(path.c_str());
  // A device that never ends is cut at the limit.
  st = LoadConfigFile("/dev/zero", &cfg);
  EXPECT_FALSE(st.ok());
}

TEST(ConfigErrors, FileErrors) {
  ConfigFile cfg;
  Status st = LoadConfigFile("/nonexistent-nibble-dir/x.toml", &cfg);
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_THAT(st.message(), HasSubstr("/nonexistent-nibble-dir/x.toml"));
  st = LoadConfigFile(::testing::TempDir(), &cfg);
  EXPECT_EQ(st.code(), StatusCode::kIoError);
  EXPECT_THAT(st.message(), HasSubstr("directory"));
  const std::string path =
      WriteTemp("nibble-typo.toml", "default = \"int4\"\ndefualt = \"int8\"\n");
  st = LoadConfigFile(path, &cfg);
  EXPECT_EQ(st.code(), StatusCode::kBadFormat);
  EXPECT_THAT(st.message(), StartsWith(path + ":2:1: unknown key 'defualt'"));
  std::remove(path.c_str());
}

// Row 35: unknown keys, with the line.
TEST(ConfigErrors, UnknownKeys) {
  ExpectError("default = \"int4\"\n\ndefualt = \"int8\"\n", 3,
              "unknown key 'defualt'");
  ExpectError("[[rule]]\nmatch = \"x\"\nschme = \"int8\"\n", 3,
              "unknown key 'schme' in [[rule]]");
  ExpectError("[options]\nstrict = true\n", 1, "unknown key 'options'");
  ExpectError("[rule]\nmatch = \"x\"\nscheme = \"int8\"\n", 1,
              "array of tables");
  ExpectError("[[rule]]\nmatch = \"x\"\n", 1, "without 'scheme'");
  ExpectError("x = 1\n[[rule]]\nscheme = \"int8\"\n", 2, "without 'match'");
}

TEST(ConfigErrors, WrongTypes) {
  ExpectError("default = 4\n", 1, "'default' must be a string");
  ExpectError("group_size = \"128\"\n", 1, "'group_size' must be an integer");
  ExpectError("group_size = 128.0\n", 1, "'group_size' must be an integer");
  ExpectError("strict = 1\n", 1, "'strict' must be true or false");
  ExpectError("scale_dtype = 2\n", 1, "'scale_dtype' must be a string");
  ExpectError("[[rule]]\nmatch = 3\nscheme = \"int8\"\n", 2,
              "'match' must be a string or a list");
  ExpectError("[[rule]]\nmatch = []\nscheme = \"int8\"\n", 2, "empty list");
  ExpectError("[[rule]]\nmatch = [\"a\",\n  7]\nscheme = \"int8\"\n", 3,
              "pattern must be a string");
  ExpectError("[[rule]]\nmatch = \"x\"\nscheme = [\"int8\"]\n", 3,
              "'scheme' must be a string");
}

// Row 36: unknown scheme, bad group sizes.
TEST(ConfigErrors, BadSchemesAndGroupSizes) {
  ExpectError("default = \"int3\"\n", 1, "unknown scheme 'int3'");
  ExpectError("x = 1\n[[rule]]\nmatch = \"x\"\nscheme = \"int4-g100\"\n", 4,
              "unknown scheme 'int4-g100'");
  ExpectError("\n[[rule]]\nmatch = \"x\"\nscheme = \"fp8\"\n", 4,
              "unknown scheme 'fp8'");
  ExpectError("group_size = 0\n", 1,
              "group size must be 32, 64, 128 or 256, got 0");
  ExpectError("group_size = -128\n", 1, "got -128");
  ExpectError("group_size = 100\n", 1, "got 100");
  ExpectError("group_size = 9223372036854775807\n", 1, "group size");
  ExpectError("scale_dtype = \"f64\"\n", 1, "unknown scale dtype 'f64'");
  // Column (1-based) of the value.
  ConfigFile cfg;
  Status st = Parse("default   = \"int3\"\n", &cfg);
  EXPECT_THAT(st.message(), StartsWith("cfg.toml:1:13: "));
}

// Row 37: invalid regular expressions, with the line.
TEST(ConfigErrors, BadPatterns) {
  ExpectError("[[rule]]\nmatch = \"re:(\"\nscheme = \"int8\"\n", 2,
              "bad regular expression");
  ExpectError(
      "[[rule]]\nmatch = \"x\"\nscheme = \"int8\"\n[[rule]]\n"
      "match = ['ok', 're:a[']\nscheme = \"keep\"\n",
      5, "invalid pattern 're:a['");
  ExpectError("[[rule]]\nmatch = \"layers.[0-\"\nscheme = \"int8\"\n", 2,
              "'[' without a closing ']'");
  ExpectError("[[rule]]\nmatch = \"" + std::string(5000, 'a') +
                  "\"\nscheme = \"int8\"\n",
              2, "longer than the limit");
}

TEST(ConfigErrors, TooManyRules) {
  std::string text;
  for (size_t i = 0; i <= kMaxRules; ++i) {
    text += "[[rule]]\nmatch = \"x\"\nscheme = \"keep\"\n";
  }
  ConfigFile cfg;
  Status st = Parse(text, &cfg);
  EXPECT_EQ(st.code(), StatusCode::kBadFormat);
  EXPECT_THAT(st.message(), HasSubstr("more than"));
}

TEST(Overrides, WinOverTheFile) {
  ConfigFile cfg;
  ASSERT_TRUE(
      Parse("default = \"int4\"\ngroup_size = 64\n"
            "[[rule]]\nmatch = \"*.down_proj\"\nscheme = \"int4-asym\"\n",
            &cfg)
          .ok());
  Overrides cli;
  cli.scheme = "int4";
  cli.group_size = 32;
  cli.scale_dtype = "f32";
  cli.keep = {"lm_head", "re:.*norm"};
  cli.tensor_type = {"*.down_proj=int8", "*.up_proj=int4-g128"};
  cli.strict = true;
  RuleSet rs;
  Status st = BuildRuleSet(&cfg, cli, &rs);
  ASSERT_TRUE(st.ok()) << st.message();
  // --group-size replaces the file's group size everywhere "int4" has no -gN,
  // the file's rules included.
  EXPECT_EQ(TargetName(rs.default_target), "int4-g32");
  EXPECT_EQ(rs.default_origin, "--scheme");
  EXPECT_EQ(rs.default_target.scheme.scale_dtype, DType::kF32);
  EXPECT_TRUE(rs.strict);
  ASSERT_EQ(rs.rules.size(), 5u);
  EXPECT_EQ(rs.rules[0].origin, "--keep");
  EXPECT_EQ(TargetName(rs.rules[0].target), "keep");
  EXPECT_EQ(rs.rules[1].origin, "--keep");
  EXPECT_EQ(rs.rules[2].origin, "--tensor-type");
  EXPECT_EQ(TargetName(rs.rules[2].target), "int8");
  EXPECT_EQ(rs.rules[2].Describe(), "--tensor-type (*.down_proj -> int8)");
  EXPECT_EQ(TargetName(rs.rules[3].target), "int4-g128");
  EXPECT_EQ(rs.rules[4].origin, "cfg.toml:3");
  EXPECT_EQ(TargetName(rs.rules[4].target), "int4-g32-asym");

  // Without overrides the file's values stand.
  ASSERT_TRUE(BuildRuleSet(&cfg, Overrides(), &rs).ok());
  EXPECT_EQ(TargetName(rs.default_target), "int4-g64");
  EXPECT_EQ(TargetName(rs.rules[0].target), "int4-g64-asym");
  EXPECT_FALSE(rs.strict);
}

TEST(Overrides, BadOverridesNameTheOption) {
  struct Case {
    Overrides cli;
    const char* what;
  };
  std::vector<Case> cases(8);
  cases[0].cli.scheme = "int5";
  cases[0].what = "--scheme: unknown scheme 'int5'";
  cases[1].cli.group_size = 0;
  cases[1].what = "--group-size: group size must be 32, 64, 128 or 256, got 0";
  cases[2].cli.group_size = -64;
  cases[2].what = "--group-size";
  cases[3].cli.keep = {"re:("};
  cases[3].what = "--keep: invalid pattern 're:('";
  cases[4].cli.tensor_type = {"*.down_proj"};
  cases[4].what = "--tensor-type '*.down_proj': expected PATTERN=SCHEME";
  cases[5].cli.tensor_type = {"*.down_proj=int9"};
  cases[5].what = "--tensor-type: unknown scheme 'int9'";
  cases[6].cli.tensor_type = {"=int8"};
  cases[6].what = "expected PATTERN=SCHEME";
  cases[7].cli.scale_dtype = "int8";
  cases[7].what = "--scale-dtype: unknown scale dtype";
  for (const Case& c : cases) {
    RuleSet rs;
    Status st = BuildRuleSet(nullptr, c.cli, &rs);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << c.what;
    EXPECT_THAT(st.message(), HasSubstr(c.what));
  }
  // A pattern containing '=' splits at the last '='.
  Overrides cli;
  cli.tensor_type = {"re:a=b=int8"};
  RuleSet rs;
  ASSERT_TRUE(BuildRuleSet(nullptr, cli, &rs).ok());
  EXPECT_EQ(rs.rules[0].patterns[0].text(), "re:a=b");
}

}  // namespace
}  // namespace nibble::tool
