// Scheme names, parsing, sizes and bits per weight; dtype / ISA / status
// names; metric summaries.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "nibble/nibble.h"
#include "test_util.h"

namespace nibble::test {
namespace {

using ::testing::HasSubstr;

bool SameScheme(const QuantScheme& a, const QuantScheme& b) {
  return a.bits == b.bits && a.symmetric == b.symmetric &&
         a.group_size == b.group_size && a.scale_dtype == b.scale_dtype;
}

TEST(SchemeNameTest, CanonicalNames) {
  const std::vector<std::string> want = {
      "int8",      "int8-asym",      "int8-g32",  "int8-g32-asym",
      "int4-g32",  "int4-g32-asym",  "int4-g64",  "int4-g64-asym",
      "int4-g128", "int4-g128-asym", "int4-g256", "int4-g256-asym",
      "int4-row",  "int4-row-asym"};
  std::vector<std::string> got;
  for (const QuantScheme& s : AllSchemes()) got.push_back(SchemeName(s));
  EXPECT_EQ(got, want);
  EXPECT_EQ(SchemeName({8, true, 256, DType::kF16}), "int8-g256");
}

TEST(SchemeNameTest, ParseAndNameRoundTripForEveryScheme) {
  for (int bits : {4, 8}) {
    for (bool sym : {true, false}) {
      for (int64_t g : {0, 32, 64, 128, 256}) {
        for (DType sd : AllDTypes()) {
          const QuantScheme s{bits, sym, g, sd};
          const std::string name = SchemeName(s);
          SCOPED_TRACE(name);
          QuantScheme parsed;
          parsed.scale_dtype = sd;  // not part of the name: kept from *out
          const Status st = ParseScheme(name, &parsed);
          ASSERT_TRUE(st.ok()) << st.ToString();
          EXPECT_TRUE(SameScheme(parsed, s));
          EXPECT_EQ(SchemeName(parsed), name);
        }
      }
    }
  }
}

TEST(SchemeNameTest, Aliases) {
  struct Case {
    const char* text;
    QuantScheme want;
  };
  const Case cases[] = {
      {"int4", {4, true, 128, DType::kF16}},
      {"int4-asym", {4, false, 128, DType::kF16}},
      {"int4-sym", {4, true, 128, DType::kF16}},
      {"int4-g128-sym", {4, true, 128, DType::kF16}},
      {"int8-channel", {8, true, 0, DType::kF16}},
      {"int8-row", {8, true, 0, DType::kF16}},
      {"int4-channel-asym", {4, false, 0, DType::kF16}},
  };
  for (const Case& c : cases) {
    QuantScheme s;
    s.scale_dtype = DType::kF16;
    ASSERT_TRUE(ParseScheme(c.text, &s).ok()) << c.text;
    EXPECT_TRUE(SameScheme(s, c.want))
        << c.text << " parsed as " << SchemeName(s);
  }
  // The scale dtype of *out survives parsing.
  QuantScheme s;
  s.scale_dtype = DType::kBF16;
  ASSERT_TRUE(ParseScheme("int4-g32", &s).ok());
  EXPECT_EQ(s.scale_dtype, DType::kBF16);
}

TEST(SchemeNameTest, RejectsBadNames) {
  for (const char* bad :
       {"",          "int",       "int5",        "int16",
        "INT4",      "int4-",     "int4--asym",  "int4-asym-",
        "int4-g",    "int4-gx",   "int4-g0",     "int4-g48",
        "int4-g16",  "int4-g512", "int4-g99999", "int4-g128-foo",
        "int4_g128", "int8x",     "int4-g128 ",  " int4",
        "uint8",     "int4-g-32", "int4-g+32", "int4-g0128"}) {
    SCOPED_TRACE(std::string("'") + bad + "'");
    QuantScheme s;
    const Status st = ParseScheme(bad, &s);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), HasSubstr(std::string("'") + bad + "'"));
  }
}

// GGML's q8_0, q4_0, q4_1: names, fixed group and scale dtype, sizes.
TEST(GgmlSchemeTest, NamesParseToFixedSchemes) {
  struct Case {
    const char* name;
    int bits;
    bool symmetric;
    double bits_per_weight;  // the ggml block's size * 8 / 32
  };
  const Case cases[] = {
      {"q8_0", 8, true, 8.5}, {"q4_0", 4, true, 4.5}, {"q4_1", 4, false, 5.0}};
  const std::vector<QuantScheme> made = {GgmlQ8_0(), GgmlQ4_0(), GgmlQ4_1()};
  for (size_t i = 0; i < 3; ++i) {
    const Case& c = cases[i];
    SCOPED_TRACE(c.name);
    for (DType preset : AllDTypes()) {
      QuantScheme s;
      s.scale_dtype = preset;  // ignored: GGML stores F16 scales
      ASSERT_TRUE(ParseScheme(c.name, &s).ok());
      EXPECT_EQ(s.family, SchemeFamily::kGgml);
      EXPECT_EQ(s.bits, c.bits);
      EXPECT_EQ(s.symmetric, c.symmetric);
      EXPECT_EQ(s.group_size, 32);
      EXPECT_EQ(s.scale_dtype, DType::kF16);
      EXPECT_EQ(SchemeName(s), c.name);
      EXPECT_TRUE(SameScheme(s, made[i]));
      EXPECT_EQ(made[i].family, SchemeFamily::kGgml);
    }
    const QuantScheme& s = made[i];
    EXPECT_TRUE(IsGgml(s));
    EXPECT_FALSE(HasZeroPoints(s));
    EXPECT_EQ(HasOffsets(s), !c.symmetric);
    EXPECT_TRUE(ValidateScheme(s, 32).ok());
    EXPECT_TRUE(ValidateScheme(s, 4096).ok());
    EXPECT_EQ(GroupLength(s, 4096), 32);
    EXPECT_EQ(GroupsPerRow(s, 4096), 128);
    EXPECT_EQ(CodeBytesPerRow(s, 4096), c.bits == 8 ? 4096 : 2048);
    EXPECT_EQ(BitsPerWeight(s, 4096), c.bits_per_weight);
    QuantizedBuffers b;
    ASSERT_TRUE(b.Allocate(s, 3, 64).ok());
    EXPECT_EQ(b.codes.size(), c.bits == 8 ? 192u : 96u);
    EXPECT_EQ(b.scales.size(), 12u);
    EXPECT_TRUE(b.zero_points.empty());
    EXPECT_EQ(b.offsets.size(), c.symmetric ? 0u : 12u);
    EXPECT_EQ(b.view().offsets == nullptr, c.symmetric);
  }
  // nibble's asymmetric schemes keep zero points and have no offsets.
  const QuantScheme asym{4, false, 32, DType::kF16};
  EXPECT_FALSE(IsGgml(asym));
  EXPECT_TRUE(HasZeroPoints(asym));
  EXPECT_FALSE(HasOffsets(asym));
}

TEST(GgmlSchemeTest, ValidateRejectsWhatGgmlCannotStore) {
  for (const QuantScheme& s : GgmlSchemes()) {
    SCOPED_TRACE(SchemeName(s));
    for (int64_t cols : {0, -32, 16, 31, 33, 48, 4097}) {
      const Status st = ValidateScheme(s, cols);
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << cols;
      EXPECT_THAT(st.message(), HasSubstr(std::to_string(cols)));
    }
    for (int64_t g : {0, 64, 128, 256}) {
      QuantScheme bad = s;
      bad.group_size = g;
      const Status st = ValidateScheme(bad, 256);
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << g;
      EXPECT_THAT(st.message(), HasSubstr("32"));
    }
    for (DType sd : {DType::kBF16, DType::kF32}) {
      QuantScheme bad = s;
      bad.scale_dtype = sd;
      const Status st = ValidateScheme(bad, 256);
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
      EXPECT_THAT(st.message(), HasSubstr("F16"));
    }
  }
  QuantScheme q8_asym = GgmlQ8_0();
  q8_asym.symmetric = false;
  EXPECT_EQ(ValidateScheme(q8_asym, 64).code(), StatusCode::kInvalidArgument);
  QuantScheme q5 = GgmlQ4_0();
  q5.bits = 5;
  EXPECT_EQ(ValidateScheme(q5, 64).code(), StatusCode::kInvalidArgument);
  QuantScheme odd = GgmlQ4_0();
  odd.family = static_cast<SchemeFamily>(7);
  EXPECT_EQ(ValidateScheme(odd, 64).code(), StatusCode::kInvalidArgument);
}

TEST(GgmlSchemeTest, RejectsOtherGgmlNames) {
  for (const char* bad : {"Q4_0", "q4_0-asym", "q4_0-g32", "q5_0", "q4_2",
                          "q8_1", "q4", "q8", "q4_0 ", "q4-0", "q4_k"}) {
    SCOPED_TRACE(std::string("'") + bad + "'");
    QuantScheme s;
    const Status st = ParseScheme(bad, &s);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), HasSubstr(std::string("'") + bad + "'"));
  }
}

TEST(SchemeSizeTest, GroupsAndCodeBytes) {
  const QuantScheme g128{4, true, 128, DType::kF16};
  EXPECT_EQ(GroupLength(g128, 4096), 128);
  EXPECT_EQ(GroupsPerRow(g128, 4096), 32);
  EXPECT_EQ(CodeBytesPerRow(g128, 4096), 2048);
  const QuantScheme row4{4, false, 0, DType::kF16};
  EXPECT_EQ(GroupLength(row4, 7), 7);
  EXPECT_EQ(GroupsPerRow(row4, 7), 1);
  EXPECT_EQ(CodeBytesPerRow(row4, 7), 4);
  EXPECT_EQ(CodeBytesPerRow(row4, 1), 1);
  const QuantScheme i8{8, true, 0, DType::kF16};
  EXPECT_EQ(CodeBytesPerRow(i8, 7), 7);
  EXPECT_EQ(GroupsPerRow(i8, 4096), 1);
}

TEST(SchemeSizeTest, BitsPerWeight) {
  // Powers of two: these are exact in double.
  EXPECT_EQ(BitsPerWeight({4, true, 128, DType::kF16}, 4096), 4.125);
  EXPECT_EQ(BitsPerWeight({4, true, 128, DType::kBF16}, 4096), 4.125);
  EXPECT_EQ(BitsPerWeight({4, true, 128, DType::kF32}, 4096), 4.25);
  EXPECT_EQ(BitsPerWeight({8, true, 0, DType::kF16}, 4096), 8.0 + 16.0 / 4096);
  EXPECT_EQ(BitsPerWeight({4, true, 32, DType::kF32}, 64), 5.0);
  // Asymmetric: 8 more bits per group for the zero point.
  EXPECT_EQ(BitsPerWeight({4, false, 128, DType::kF16}, 4096),
            4.125 + 8.0 / 128);
  EXPECT_EQ(BitsPerWeight({8, false, 0, DType::kF16}, 4096), 8.0 + 24.0 / 4096);
  EXPECT_EQ(BitsPerWeight({8, false, 32, DType::kBF16}, 4096), 8.0 + 24.0 / 32);
  // Odd INT4 rows pay for the pad nibble.
  EXPECT_DOUBLE_EQ(BitsPerWeight({4, true, 0, DType::kF16}, 7),
                   (32.0 + 16.0) / 7);
}

TEST(NamesTest, DTypes) {
  for (DType d : AllDTypes()) {
    DType parsed;
    ASSERT_TRUE(ParseDType(DTypeName(d), &parsed));
    EXPECT_EQ(parsed, d);
  }
  EXPECT_EQ(DTypeSize(DType::kF32), 4u);
  EXPECT_EQ(DTypeSize(DType::kF16), 2u);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2u);
  const std::pair<const char*, DType> aliases[] = {{"FP32", DType::kF32},
                                                   {"float32", DType::kF32},
                                                   {"Float16", DType::kF16},
                                                   {"fp16", DType::kF16},
                                                   {"BFloat16", DType::kBF16}};
  for (const auto& [name, want] : aliases) {
    DType parsed;
    ASSERT_TRUE(ParseDType(name, &parsed)) << name;
    EXPECT_EQ(parsed, want) << name;
  }
  DType unused;
  EXPECT_FALSE(ParseDType("f64", &unused));
  EXPECT_FALSE(ParseDType("", &unused));
}

TEST(NamesTest, IsasAndStatus) {
  for (Isa i : {Isa::kAuto, Isa::kScalar, Isa::kAvx2, Isa::kAvx512}) {
    Isa parsed;
    ASSERT_TRUE(ParseIsa(IsaName(i), &parsed));
    EXPECT_EQ(parsed, i);
  }
  Isa unused;
  EXPECT_FALSE(ParseIsa("sse2", &unused));
  EXPECT_TRUE(IsaSupported(Isa::kScalar));
  EXPECT_TRUE(IsaSupported(Isa::kAuto));
  const std::vector<Isa> supported = SupportedIsas();
  ASSERT_FALSE(supported.empty());
  EXPECT_EQ(supported.front(), Isa::kScalar);
  EXPECT_EQ(BestIsa(), supported.back());
  const Status s = Status(StatusCode::kNonFinite, "NaN").WithPosition(3, 4);
  EXPECT_EQ(s.row(), 3);
  EXPECT_EQ(s.col(), 4);
  EXPECT_EQ(Status::Ok().ToString(), "ok");
  EXPECT_THAT(s.ToString(), HasSubstr("NaN"));
  // Informational: which paths this run exercises.
  std::string paths;
  for (Isa i : supported) paths += std::string(IsaName(i)) + " ";
  RecordProperty("supported_isas", paths);
  RecordProperty("cpu_features", CpuFeatureString());
}

TEST(MetricsTest, SummarizeEdgeCases) {
  const double inf = std::numeric_limits<double>::infinity();
  ErrorSums perfect;
  perfect.count = 10;
  perfect.sum_sq_ref = 4.0;
  const ErrorMetrics p = Summarize(perfect);
  EXPECT_EQ(p.snr_db, inf);
  EXPECT_EQ(p.rel_frobenius, 0.0);
  EXPECT_EQ(p.cosine, 1.0);
  ErrorSums zero;
  zero.count = 5;
  const ErrorMetrics z = Summarize(zero);
  EXPECT_EQ(z.snr_db, inf);
  EXPECT_EQ(z.cosine, 1.0);
  ErrorSums s;
  s.count = 4;
  s.sum_sq_ref = 100.0;
  s.sum_sq_error = 1.0;
  s.sum_ref_error = 0.0;
  s.max_abs_error = 0.75;
  const ErrorMetrics m = Summarize(s);
  EXPECT_DOUBLE_EQ(m.mse, 0.25);
  EXPECT_DOUBLE_EQ(m.rmse, 0.5);
  EXPECT_DOUBLE_EQ(m.snr_db, 20.0);
  EXPECT_DOUBLE_EQ(m.rel_frobenius, 0.1);
  EXPECT_DOUBLE_EQ(m.cosine, 100.0 / std::sqrt(100.0 * 101.0));
  EXPECT_EQ(m.max_abs_error, 0.75);
  ErrorSums merged = s;
  merged.Merge(perfect);
  EXPECT_EQ(merged.count, 14);
  EXPECT_EQ(merged.sum_sq_ref, 104.0);
  EXPECT_EQ(merged.max_abs_error, 0.75);
}

}  // namespace
}  // namespace nibble::test
