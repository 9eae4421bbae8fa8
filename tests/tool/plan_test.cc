// The quantization plan: defaults, rules, fused groups, sizes, --dry-run text,
// and bad-inputs.md row 38 (a rule that matches nothing).
#include "plan.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

#include "config.h"
#include "nibble/scheme.h"

namespace nibble::tool {
namespace {

using ::testing::HasSubstr;

RuleSet Rules(const std::string& toml, Overrides cli = Overrides()) {
  ConfigFile cfg;
  Status st = ParseConfigText(toml, "mp.toml", &cfg);
  EXPECT_TRUE(st.ok()) << st.message();
  RuleSet rs;
  st = BuildRuleSet(&cfg, cli, &rs);
  EXPECT_TRUE(st.ok()) << st.message();
  return rs;
}

// A two-layer Llama-style checkpoint (hidden 256, GQA k/v 64, MLP 512,
// vocab 1000) in `dtype`, with q/k/v biases and an I64 buffer.
std::vector<TensorInfo> Llama(const std::string& dtype) {
  std::vector<TensorInfo> t;
  t.push_back({"model.embed_tokens.weight", dtype, {1000, 256}});
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    t.push_back({p + "self_attn.q_proj.weight", dtype, {256, 256}});
    t.push_back({p + "self_attn.q_proj.bias", dtype, {256}});
    t.push_back({p + "self_attn.k_proj.weight", dtype, {64, 256}});
    t.push_back({p + "self_attn.k_proj.bias", dtype, {64}});
    t.push_back({p + "self_attn.v_proj.weight", dtype, {64, 256}});
    t.push_back({p + "self_attn.v_proj.bias", dtype, {64}});
    t.push_back({p + "self_attn.o_proj.weight", dtype, {256, 256}});
    t.push_back({p + "mlp.gate_proj.weight", dtype, {512, 256}});
    t.push_back({p + "mlp.up_proj.weight", dtype, {512, 256}});
    t.push_back({p + "mlp.down_proj.weight", dtype, {256, 512}});
    t.push_back({p + "input_layernorm.weight", dtype, {256}});
    t.push_back({p + "post_attention_layernorm.weight", dtype, {256}});
  }
  t.push_back({"model.norm.weight", dtype, {256}});
  t.push_back({"lm_head.weight", dtype, {1000, 256}});
  t.push_back({"model.rotary_emb.position_ids", "I64", {1, 2048}});
  return t;
}

std::map<std::string, std::string> Targets(const Plan& plan) {
  std::map<std::string, std::string> m;
  for (const TensorPlan& tp : plan.tensors) m[tp.name] = TargetName(tp.target);
  return m;
}

class PlanDefaults : public ::testing::TestWithParam<const char*> {};

TEST_P(PlanDefaults, LlamaCheckpoint) {
  const std::string dtype = GetParam();
  Overrides cli;
  cli.scheme = "int4";
  RuleSet rs;
  ASSERT_TRUE(BuildRuleSet(nullptr, cli, &rs).ok());
  Plan plan;
  Status st = BuildPlan(rs, Llama(dtype), &plan);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_TRUE(plan.warnings.empty()) << plan.warnings[0];
  auto m = Targets(plan);
  for (const char* w :
       {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
        "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}) {
    EXPECT_EQ(m["model.layers.1." + std::string(w) + ".weight"], "int4-g128")
        << w;
  }
  EXPECT_EQ(m["model.layers.0.self_attn.q_proj.bias"], "keep");
  EXPECT_EQ(m["model.layers.0.input_layernorm.weight"], "keep");
  EXPECT_EQ(m["model.norm.weight"], "keep");
  EXPECT_EQ(m["model.embed_tokens.weight"], "keep");
  EXPECT_EQ(m["lm_head.weight"], "keep");
  EXPECT_EQ(m["model.rotary_emb.position_ids"], "keep");
  EXPECT_EQ(plan.totals.tensors, 28);
  EXPECT_EQ(plan.totals.quantized, 14);
  EXPECT_EQ(plan.totals.cast, 0);
  EXPECT_EQ(plan.totals.kept, 14);
  // Scales default to the weight's dtype.
  DType d;
  ASSERT_TRUE(IsQuantizableDType(dtype, &d));
  for (const TensorPlan& tp : plan.tensors) {
    if (tp.target.quantized()) {
      EXPECT_EQ(tp.target.scheme.scale_dtype, d);
    }
  }
  // Reasons say why.
  const std::map<std::string, std::string> reasons = {
      {"lm_head.weight", "lm_head"},
      {"model.embed_tokens.weight", "embedding"},
      {"model.norm.weight", "1-D"},
      {"model.rotary_emb.position_ids", "I64"},
      {"model.layers.0.mlp.up_proj.weight", "default int4-g128 (--scheme)"},
  };
  for (const TensorPlan& tp : plan.tensors) {
    auto it = reasons.find(tp.name);
    if (it != reasons.end()) {
      EXPECT_THAT(tp.reason, HasSubstr(it->second)) << tp.name;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, PlanDefaults,
                         ::testing::Values("F16", "BF16", "F32"));

TEST(Plan, ExampleConfigOnLlama) {
  ConfigFile cfg;
  ASSERT_TRUE(
      LoadConfigFile(
          std::string(NIBBLE_TOOL_EXAMPLES_DIR) + "/mixed-precision.toml", &cfg)
          .ok());
  RuleSet rs;
  ASSERT_TRUE(BuildRuleSet(&cfg, Overrides(), &rs).ok());
  Plan plan;
  Status st = BuildPlan(rs, Llama("BF16"), &plan);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_TRUE(plan.warnings.empty());
  auto m = Targets(plan);
  EXPECT_EQ(m["lm_head.weight"], "fp16");
  EXPECT_EQ(m["model.layers.0.mlp.down_proj.weight"], "int8");
  EXPECT_EQ(m["model.layers.1.mlp.down_proj.weight"], "int8");
  EXPECT_EQ(m["model.layers.1.mlp.up_proj.weight"], "int4-g128");
  EXPECT_EQ(m["model.embed_tokens.weight"], "keep");
}

TEST(Plan, FirstMatchWinsAndRulesNameKeptTensors) {
  RuleSet rs = Rules(
      "default = \"int4\"\n"
      "[[rule]]\nmatch = \"model.layers.0.*\"\nscheme = \"int8\"\n"
      "[[rule]]\nmatch = \"*.mlp.*\"\nscheme = \"int4-g32\"\n"
      "[[rule]]\nmatch = \"re:model\\\\.embed_tokens\"\nscheme = \"int8\"\n"
      "[[rule]]\nmatch = \"*norm*\"\nscheme = \"fp32\"\n");
  Plan plan;
  Status st = BuildPlan(rs, Llama("F16"), &plan);
  ASSERT_TRUE(st.ok()) << st.message();
  auto m = Targets(plan);
  EXPECT_EQ(m["model.layers.0.mlp.up_proj.weight"], "int8");  // rule 1 first
  EXPECT_EQ(m["model.layers.1.mlp.up_proj.weight"], "int4-g32");
  EXPECT_EQ(m["model.layers.1.self_attn.q_proj.weight"], "int4-g128");
  // A rule names the embedding: quantized, with a warning about loaders.
  EXPECT_EQ(m["model.embed_tokens.weight"], "int8");
  // A quantizing rule does not apply to 1-D tensors; a cast rule does.
  EXPECT_EQ(m["model.layers.0.self_attn.q_proj.bias"], "keep");
  EXPECT_EQ(m["model.layers.1.input_layernorm.weight"], "fp32");
  EXPECT_EQ(m["model.norm.weight"], "fp32");
  for (const TensorPlan& tp : plan.tensors) {
    if (tp.name == "model.layers.1.mlp.up_proj.weight") {
      EXPECT_EQ(tp.rule, 1);
      EXPECT_THAT(tp.reason, HasSubstr("mp.toml:5"));
    }
    if (tp.name == "model.layers.0.self_attn.q_proj.bias") {
      EXPECT_EQ(tp.rule, 0);
      EXPECT_THAT(tp.reason, HasSubstr("quantizes 2-D weights only"));
    }
  }
  ASSERT_EQ(plan.warnings.size(), 1u);
  EXPECT_THAT(plan.warnings[0], HasSubstr("token embedding"));
}

TEST(Plan, OverridesBeatTheFile) {
  Overrides cli;
  cli.keep = {"*.down_proj"};
  cli.tensor_type = {"lm_head=int8", "*.mlp.*=int4-g64"};
  cli.scheme = "int4-g32-asym";
  RuleSet rs = Rules(
      "default = \"int8\"\n"
      "[[rule]]\nmatch = \"*.mlp.*\"\nscheme = \"fp16\"\n"
      "[[rule]]\nmatch = \"lm_head\"\nscheme = \"keep\"\n",
      cli);
  Plan plan;
  Status st = BuildPlan(rs, Llama("F16"), &plan);
  ASSERT_TRUE(st.ok()) << st.message();
  auto m = Targets(plan);
  EXPECT_EQ(m["model.layers.0.mlp.down_proj.weight"], "keep");
  EXPECT_EQ(m["model.layers.0.mlp.gate_proj.weight"], "int4-g64");
  EXPECT_EQ(m["lm_head.weight"], "int8");
  EXPECT_EQ(m["model.layers.0.self_attn.o_proj.weight"], "int4-g32-asym");
  // The file's rules are shadowed: a warning, never an error.
  int shadowed = 0;
  for (const std::string& w : plan.warnings) {
    if (w.find("all decided by earlier rules") != std::string::npos) ++shadowed;
  }
  EXPECT_EQ(shadowed, 2);
  rs.strict = true;
  EXPECT_TRUE(BuildPlan(rs, Llama("F16"), &plan).ok());
}

// Row 38.
TEST(Plan, RuleMatchingNothingWarnsOrFailsWhenStrict) {
  RuleSet rs = Rules(
      "default = \"int4\"\n"
      "\n"
      "[[rule]]\nmatch = \"*.mlp.down_projection\"\nscheme = \"int8\"\n");
  Plan plan;
  ASSERT_TRUE(BuildPlan(rs, Llama("F16"), &plan).ok());
  ASSERT_EQ(plan.warnings.size(), 1u);
  EXPECT_EQ(plan.warnings[0],
            "rule mp.toml:3 (*.mlp.down_projection -> int8) matches no tensor");
  rs.strict = true;
  Status st = BuildPlan(rs, Llama("F16"), &plan);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("mp.toml:3"));
  EXPECT_THAT(st.message(), HasSubstr("matches no tensor"));
  EXPECT_THAT(st.message(), HasSubstr("strict"));
  // `strict = true` in the file does the same.
  rs = Rules(
      "strict = true\n[[rule]]\nmatch = \"nothing\"\nscheme = \"keep\"\n");
  EXPECT_FALSE(BuildPlan(rs, Llama("F16"), &plan).ok());
}

TEST(Plan, FusedGroupsSplitByRules) {
  RuleSet rs = Rules(
      "default = \"int4\"\n"
      "[[rule]]\nmatch = \"model.layers.1.self_attn.k_proj\"\n"
      "scheme = \"int8\"\n"
      "[[rule]]\nmatch = \"model.layers.0.mlp.up_proj\"\nscheme = \"keep\"\n");
  Plan plan;
  ASSERT_TRUE(BuildPlan(rs, Llama("F16"), &plan).ok());
  ASSERT_EQ(plan.warnings.size(), 2u);
  EXPECT_THAT(plan.warnings[0], HasSubstr("layer 'model.layers.0.mlp'"));
  EXPECT_THAT(plan.warnings[0], HasSubstr("gate_proj int4-g128, up_proj keep"));
  EXPECT_THAT(plan.warnings[0], HasSubstr("gate_up_proj"));
  EXPECT_THAT(plan.warnings[1], HasSubstr("layer 'model.layers.1.self_attn'"));
  EXPECT_THAT(plan.warnings[1],
              HasSubstr("q_proj int4-g128, k_proj int8, v_proj int4-g128"));
  EXPECT_THAT(plan.warnings[1], HasSubstr("qkv_proj"));
  rs.strict = true;
  Status st = BuildPlan(rs, Llama("F16"), &plan);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("and 1 more"));
  // One rule for all three parts: no warning.
  rs = Rules(
      "[[rule]]\nmatch = \"*.self_attn.[qkv]_proj\"\nscheme = \"int8\"\n");
  ASSERT_TRUE(BuildPlan(rs, Llama("F16"), &plan).ok());
  EXPECT_TRUE(plan.warnings.empty());
}

TEST(Plan, ColumnsNotDivisibleByTheGroupFallBackToKeep) {
  Overrides cli;
  cli.scheme = "int4-g128";
  RuleSet rs;
  ASSERT_TRUE(BuildRuleSet(nullptr, cli, &rs).ok());
  const std::vector<TensorInfo> t = {
      {"a.weight", "F16", {8, 200}},  // 200 % 128 != 0
      {"b.weight", "F16", {8, 256}},
      {"c.weight", "F16", {0, 256}},  // empty: kept, no warning
      {"d.weight", "F16", {8, 0}},
  };
  Plan plan;
  ASSERT_TRUE(BuildPlan(rs, t, &plan).ok());
  EXPECT_EQ(TargetName(plan.tensors[0].target), "keep");
  EXPECT_THAT(plan.tensors[0].reason, HasSubstr("200 columns"));
  EXPECT_EQ(TargetName(plan.tensors[1].target), "int4-g128");
  EXPECT_EQ(TargetName(plan.tensors[2].target), "keep");
  EXPECT_EQ(TargetName(plan.tensors[3].target), "keep");
  ASSERT_EQ(plan.warnings.size(), 1u);
  EXPECT_THAT(plan.warnings[0], HasSubstr("'a.weight' [8, 200]"));
  EXPECT_THAT(plan.warnings[0], HasSubstr("kept unquantized"));
  rs.strict = true;
  Status st = BuildPlan(rs, t, &plan);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("a.weight"));
  // Per-channel int8 takes any column count.
  cli.scheme = "int8";
  ASSERT_TRUE(BuildRuleSet(nullptr, cli, &rs).ok());
  ASSERT_TRUE(BuildPlan(rs, t, &plan).ok());
  EXPECT_EQ(TargetName(plan.tensors[0].target), "int8");
}

TEST(Plan, NonFloatDtypes) {
  RuleSet rs = Rules("[[rule]]\nmatch = \"*\"\nscheme = \"int8\"\n");
  Plan plan;
  // Buffers and 1-D non-float tensors are kept even when a rule matches.
  Status st = BuildPlan(rs,
                        {{"x.weight", "F16", {4, 32}},
                         {"position_ids", "I64", {1, 16}},
                         {"y.scales", "U8", {7}}},
                        &plan);
  ASSERT_TRUE(st.ok()) << st.message();
  EXPECT_EQ(TargetName(plan.tensors[1].target), "keep");
  EXPECT_THAT(plan.tensors[1].reason, HasSubstr("dtype I64"));
  // A 2-D .weight the rule asks to quantize but that is not float: an error
  // naming the tensor.
  st = BuildPlan(rs, {{"q.weight", "I8", {4, 32}}}, &plan);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("'q.weight' has dtype I8"));
  rs = Rules("[[rule]]\nmatch = \"q\"\nscheme = \"bf16\"\n");
  st = BuildPlan(rs, {{"q.weight", "F8_E4M3", {4, 32}}}, &plan);
  EXPECT_THAT(st.message(), HasSubstr("cast"));
  // Without a rule: kept.
  RuleSet def;
  ASSERT_TRUE(BuildRuleSet(nullptr, Overrides(), &def).ok());
  ASSERT_TRUE(BuildPlan(def, {{"q.weight", "I8", {4, 32}}}, &plan).ok());
  EXPECT_EQ(TargetName(plan.tensors[0].target), "keep");
}

TEST(Plan, RejectsBadTensorLists) {
  RuleSet rs;
  ASSERT_TRUE(BuildRuleSet(nullptr, Overrides(), &rs).ok());
  Plan plan;
  EXPECT_THAT(
      BuildPlan(rs, {{"a", "F16", {2}}, {"a", "F16", {2}}}, &plan).message(),
      HasSubstr("listed twice"));
  EXPECT_THAT(BuildPlan(rs, {{"a", "F17", {2}}}, &plan).message(),
              HasSubstr("unknown dtype 'F17'"));
  EXPECT_THAT(BuildPlan(rs, {{"a", "F16", {2, -1}}}, &plan).message(),
              HasSubstr("negative dimension"));
  EXPECT_THAT(
      BuildPlan(rs, {{"a", "F16", {int64_t{1} << 40, int64_t{1} << 40}}}, &plan)
          .message(),
      HasSubstr("overflows"));
}

TEST(Plan, PathologicalRuleOnLongNamesIsFast) {
  RuleSet rs = Rules(
      "[[rule]]\nmatch = \"re:(a*)*b\"\nscheme = \"int8\"\n"
      "[[rule]]\nmatch = \"*a*a*a*a*a*a*b\"\nscheme = \"int8\"\n");
  std::vector<TensorInfo> t;
  for (int i = 0; i < 20; ++i) {
    t.push_back({std::string(50000, 'a') + std::to_string(i) + ".weight",
                 "F16",
                 {4, 32}});
  }
  Plan plan;
  ASSERT_TRUE(BuildPlan(rs, t, &plan).ok());
  EXPECT_EQ(plan.warnings.size(), 2u);  // both match nothing
}

// Sizes worked out by hand from the compressed-tensors layout.
TEST(Plan, DryRunTotalsByHand) {
  RuleSet rs = Rules(
      "default = \"int4\"\n"
      "[[rule]]\nmatch = \"b\"\nscheme = \"int8\"\n"
      "[[rule]]\nmatch = \"c\"\nscheme = \"int4-g64-asym\"\n"
      "[[rule]]\nmatch = \"lm_head\"\nscheme = \"fp32\"\n");
  const std::vector<TensorInfo> t = {
      {"a.weight", "F16", {4, 256}},       {"b.weight", "BF16", {16, 64}},
      {"c.weight", "F32", {9, 128}},       {"norm.weight", "F32", {128}},
      {"lm_head.weight", "F16", {10, 64}}, {"ids", "I64", {3}},
  };
  Plan plan;
  Status st = BuildPlan(rs, t, &plan);
  ASSERT_TRUE(st.ok()) << st.message();
  ASSERT_EQ(plan.tensors.size(), 6u);
  // a: int4-g128, F16 scales. packed 4 rows x 256*4/32 = 32 words x 4 B = 512;
  // scales 4 x 2 groups x 2 B = 16; shape 16. Total 544 (2048 before).
  EXPECT_EQ(plan.tensors[0].bytes_before, 2048);
  EXPECT_EQ(plan.tensors[0].bytes_after, 544);
  // The same from the library's bits per weight: 4.125 b/w x 1024 / 8 + 16.
  QuantScheme s = plan.tensors[0].target.scheme;
  EXPECT_EQ(BitsPerWeight(s, 256) * 1024 / 8 + 16, 544.0);
  // b: int8 per channel, BF16 scales. packed 16 x 16 words x 4 = 1024;
  // scales 16 x 1 x 2 = 32; shape 16. Total 1072 (2048 before).
  EXPECT_EQ(plan.tensors[1].bytes_before, 2048);
  EXPECT_EQ(plan.tensors[1].bytes_after, 1072);
  EXPECT_EQ(plan.tensors[1].target.scheme.scale_dtype, DType::kBF16);
  // c: int4-g64-asym, F32 scales. packed 9 x 16 x 4 = 576; scales 9 x 2 x 4 =
  // 72; zero points ceil(9/8) = 2 x 2 groups x 4 = 16; shape 16. Total 680.
  EXPECT_EQ(plan.tensors[2].bytes_before, 4608);
  EXPECT_EQ(plan.tensors[2].bytes_after, 680);
  QuantizedBytes q;
  ASSERT_TRUE(
      ComputeQuantizedBytes(plan.tensors[2].target.scheme, 9, 128, &q).ok());
  EXPECT_EQ(q.packed, 576);
  EXPECT_EQ(q.scale, 72);
  EXPECT_EQ(q.zero_point, 16);
  EXPECT_EQ(q.shape, 16);
  // norm kept 512; lm_head cast F16 -> F32: 1280 -> 2560; ids kept 24.
  EXPECT_EQ(plan.tensors[3].bytes_after, 512);
  EXPECT_EQ(plan.tensors[4].bytes_before, 1280);
  EXPECT_EQ(plan.tensors[4].bytes_after, 2560);
  EXPECT_EQ(plan.tensors[5].bytes_after, 24);
  const PlanTotals& tot = plan.totals;
  EXPECT_EQ(tot.tensors, 6);
  EXPECT_EQ(tot.quantized, 3);
  EXPECT_EQ(tot.cast, 1);
  EXPECT_EQ(tot.kept, 2);
  EXPECT_EQ(tot.params, 1024 + 1024 + 1152 + 128 + 640 + 3);
  EXPECT_EQ(tot.params_quantized, 1024 + 1024 + 1152);
  EXPECT_EQ(tot.bytes_before, 2048 + 2048 + 4608 + 512 + 1280 + 24);
  EXPECT_EQ(tot.bytes_after, 544 + 1072 + 680 + 512 + 2560 + 24);

  const std::string text = RenderPlan(plan);
  EXPECT_THAT(text, HasSubstr("tensor"));
  EXPECT_THAT(text, HasSubstr("bytes before -> after"));
  EXPECT_THAT(text, HasSubstr("a.weight"));
  EXPECT_THAT(text, HasSubstr("[4, 256]"));
  EXPECT_THAT(text, HasSubstr("int4-g64-asym"));
  EXPECT_THAT(text, HasSubstr("4608 -> 680"));
  EXPECT_THAT(text,
              HasSubstr("total: 6 tensors (3 quantized, 1 cast, 2 kept), "
                        "3,971 parameters (3,200 quantized), 10520 -> 5392 "
                        "bytes (1.95x smaller)"));
}

TEST(Plan, ComputeQuantizedBytesChecks) {
  QuantizedBytes q;
  QuantScheme s;
  s.bits = 4;
  s.group_size = 128;
  EXPECT_FALSE(ComputeQuantizedBytes(s, 4, 100, &q).ok());
  EXPECT_FALSE(ComputeQuantizedBytes(s, int64_t{1} << 62, 128, &q).ok());
  s.group_size = 0;  // int4-row: odd columns round up to whole words
  ASSERT_TRUE(ComputeQuantizedBytes(s, 2, 9, &q).ok());
  EXPECT_EQ(q.packed, 2 * 2 * 4);
  EXPECT_EQ(q.scale, 2 * 1 * 2);
}

TEST(Plan, HelpTextMentionsTheDefaults) {
  const std::string help = kPlanDefaultsHelp;
  for (const char* s : {"lm_head", "embed_tokens", "1-D", "--strict",
                        "re:", "Marlin", "first rule"}) {
    EXPECT_THAT(help, HasSubstr(s));
  }
}

}  // namespace
}  // namespace nibble::tool
