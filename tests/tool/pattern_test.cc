// Name patterns (globs and re:) and target names.
#include "pattern.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

#include "target.h"

namespace nibble::tool {
namespace {

NamePattern Compiled(const std::string& text) {
  NamePattern p;
  Status st = NamePattern::Compile(text, &p);
  EXPECT_TRUE(st.ok()) << text << ": " << st.message();
  return p;
}

TEST(ModuleName, DropsLastPart) {
  EXPECT_EQ(ModuleName("model.layers.0.mlp.down_proj.weight"),
            "model.layers.0.mlp.down_proj");
  EXPECT_EQ(ModuleName("lm_head.weight"), "lm_head");
  EXPECT_EQ(ModuleName("scalar"), "scalar");
}

TEST(NamePattern, GlobMatchesWholeTensorOrModuleName) {
  const std::string w = "model.layers.0.mlp.down_proj.weight";
  const std::string b = "model.layers.0.mlp.down_proj.bias";
  EXPECT_TRUE(Compiled("*.mlp.down_proj").Matches(w));  // module name
  EXPECT_TRUE(Compiled("*.mlp.down_proj").Matches(b));
  EXPECT_TRUE(Compiled("*.mlp.down_proj.weight").Matches(w));  // full name
  EXPECT_FALSE(Compiled("*.mlp.down_proj.weight").Matches(b));
  EXPECT_TRUE(Compiled("*.mlp.down_proj*").Matches(w));
  EXPECT_TRUE(Compiled("lm_head").Matches("lm_head.weight"));
  EXPECT_FALSE(Compiled("lm_head").Matches("model.lm_head.weight"));
  EXPECT_TRUE(Compiled("*lm_head").Matches("model.lm_head.weight"));
  // A glob is anchored at both ends: a substring is not enough.
  EXPECT_FALSE(Compiled("down_proj").Matches(w));
  EXPECT_FALSE(Compiled("mlp").Matches(w));
  // `*` crosses dots; `?` is one character; dots are literal.
  EXPECT_TRUE(Compiled("model.layers.?.mlp.*").Matches(w));
  EXPECT_FALSE(Compiled("model.layers.?.mlp.*")
                   .Matches("model.layers.10.mlp.down_proj.weight"));
  EXPECT_TRUE(Compiled("model?layers*").Matches("model.layers.0.x"));
  EXPECT_FALSE(Compiled("model.layers.0").Matches("modelXlayersX0.weight"));
  // Sets.
  EXPECT_TRUE(Compiled("*.[qkv]_proj")
                  .Matches("model.layers.3.self_attn.k_proj.weight"));
  EXPECT_FALSE(Compiled("*.[qkv]_proj")
                   .Matches("model.layers.3.self_attn.o_proj.weight"));
  EXPECT_TRUE(Compiled("*.[!qkv]_proj")
                  .Matches("model.layers.3.self_attn.o_proj.weight"));
  EXPECT_TRUE(Compiled("model.layers.[0-2].*").Matches("model.layers.1.a.b"));
  EXPECT_FALSE(Compiled("model.layers.[0-2].*").Matches("model.layers.3.a.b"));
  // Regex metacharacters in a glob are literal.
  EXPECT_TRUE(Compiled("a+b(c)|d").Matches("a+b(c)|d"));
  EXPECT_FALSE(Compiled("a+b").Matches("aab"));
}

TEST(NamePattern, RegexIsAnchoredAtTheStartOnly) {
  const std::string w = "model.layers.0.mlp.down_proj.weight";
  NamePattern p = Compiled(R"(re:.*mlp\.down_proj$)");
  EXPECT_TRUE(p.is_regex());
  EXPECT_TRUE(p.Matches(w));  // through the module name
  EXPECT_TRUE(p.Matches("model.layers.0.mlp.down_proj.bias"));
  EXPECT_FALSE(p.Matches("model.layers.0.mlp.down_proj_x.weight"));
  // Like re.match: a prefix is enough, a substring is not.
  EXPECT_TRUE(Compiled("re:model\\.layers\\.1")
                  .Matches("model.layers.12.mlp.up_proj.weight"));
  EXPECT_FALSE(Compiled("re:layers").Matches(w));
  EXPECT_TRUE(Compiled(R"(re:model\.layers\.(0|1)\.self_attn\.[qkv]_proj$)")
                  .Matches("model.layers.1.self_attn.v_proj.weight"));
}

TEST(NamePattern, RejectsBadPatterns) {
  NamePattern p;
  for (const char* bad : {"re:(", "re:a[", "re:*a", "re:", "", "abc[",
                          "re:(?<name>x)", "re:a{2,1}", "[z-a]"}) {
    Status st = NamePattern::Compile(bad, &p);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find("pattern"), std::string::npos) << bad;
  }
  // Backreferences and lookarounds are not RE2 (they need backtracking).
  EXPECT_FALSE(NamePattern::Compile("re:(a)\\1", &p).ok());
  EXPECT_FALSE(NamePattern::Compile("re:a(?=b)", &p).ok());
  // Length cap.
  EXPECT_FALSE(
      NamePattern::Compile(std::string(kMaxPatternBytes + 1, 'a'), &p).ok());
  EXPECT_TRUE(
      NamePattern::Compile(std::string(kMaxPatternBytes, 'a'), &p).ok());
  // A program too large for RE2's memory budget is an error, not a hang.
  EXPECT_FALSE(
      NamePattern::Compile("re:((((a{100}){100}){100}){100})", &p).ok());
  // The default pattern matches nothing.
  EXPECT_FALSE(NamePattern().Matches("x"));
}

TEST(NamePattern, PathologicalPatternsFinishFast) {
  // (a*)*b backtracks exponentially in std::regex / PCRE; RE2 is linear.
  const std::string name(200000, 'a');
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(Compiled("re:(a*)*b").Matches(name));
  EXPECT_FALSE(Compiled("re:(a|aa)*c").Matches(name));
  EXPECT_FALSE(Compiled("re:(a+)+$b").Matches(name));
  EXPECT_FALSE(Compiled("*a*a*a*a*a*a*a*a*a*b").Matches(name));
  EXPECT_TRUE(Compiled("re:(a*)*").Matches(name));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
          .count();
  EXPECT_LT(seconds, 5.0);
}

TEST(Target, NamesRoundTrip) {
  struct Case {
    const char* text;
    const char* name;
  };
  const Case cases[] = {
      {"int8", "int8"},
      {"int4", "int4-g128"},
      {"int4-g32", "int4-g32"},
      {"int4-g64-asym", "int4-g64-asym"},
      {"int4-asym", "int4-g128-asym"},
      {"int4-row", "int4-row"},
      {"int8-g128", "int8-g128"},
      {"keep", "keep"},
      {"fp16", "fp16"},
      {"f16", "fp16"},
      {"bf16", "bf16"},
      {"fp32", "fp32"},
      {"f32", "fp32"},
  };
  for (const Case& c : cases) {
    Target t;
    ASSERT_TRUE(ParseTarget(c.text, 128, DType::kF16, &t).ok()) << c.text;
    EXPECT_EQ(TargetName(t), c.name);
    Target again;
    ASSERT_TRUE(ParseTarget(TargetName(t), 128, DType::kF16, &again).ok());
    EXPECT_EQ(TargetName(again), c.name);
  }
  Target t;
  ASSERT_TRUE(ParseTarget("int4", 32, DType::kBF16, &t).ok());
  EXPECT_EQ(TargetName(t), "int4-g32");
  EXPECT_EQ(t.scheme.scale_dtype, DType::kBF16);
  ASSERT_TRUE(ParseTarget("int4-asym", 64, DType::kF16, &t).ok());
  EXPECT_EQ(TargetName(t), "int4-g64-asym");
  // Explicit groups and int8 ignore the default group size.
  ASSERT_TRUE(ParseTarget("int4-g256", 32, DType::kF16, &t).ok());
  EXPECT_EQ(TargetName(t), "int4-g256");
  ASSERT_TRUE(ParseTarget("int8", 32, DType::kF16, &t).ok());
  EXPECT_EQ(TargetName(t), "int8");
  for (const char* bad : {"int3", "", "int4-g100", "int4-g0", "INT8", "fp8",
                          "keep-asym", "int4-", "q4_0"}) {
    Status st = ParseTarget(bad, 128, DType::kF16, &t);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_NE(ParseTarget("int3", 128, DType::kF16, &t).message().find("'int3'"),
            std::string::npos);
}

}  // namespace
}  // namespace nibble::tool
