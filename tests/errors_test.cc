// Failures: non-finite inputs, scale overflow, invalid arguments, and the
// NIBBLE_ISA override. Position-carrying errors are checked on every path and
// at several thread counts (the first failure in row-major order must win
// however the rows are split).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "nibble/nibble.h"
#include "test_util.h"

namespace nibble::test {
namespace {

using ::testing::HasSubstr;

class PathTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaSupported(GetParam())) GTEST_SKIP() << IsaSkipMessage(GetParam());
  }
};

std::string IsaParamName(const ::testing::TestParamInfo<Isa>& info) {
  return IsaName(info.param);
}

std::string HexBits(uint32_t bits) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%x", bits);
  return buf;
}

struct Pos {
  int64_t r, c;
};

// NaN (quiet, signalling, negative) and +-Inf bit patterns per input dtype.
std::vector<uint32_t> NonFinitePatterns(DType dt) {
  switch (dt) {
    case DType::kF16:
      return {0x7e00, 0x7c01, 0xfe00, 0x7c00, 0xfc00};
    case DType::kBF16:
      return {0x7fc0, 0x7f81, 0xffc0, 0x7f80, 0xff80};
    case DType::kF32:
      break;
  }
  return {0x7fc00000u, 0x7f800001u, 0xffc00000u, 0x7f800000u, 0xff800000u};
}

using NonFiniteTest = PathTest;

TEST_P(NonFiniteTest, ReportsFirstNonFiniteInRowMajorOrder) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  constexpr int64_t kRows = 40;
  const int thread_counts[] = {1, 2, 7};
  for (const QuantScheme& s : EquivalenceSchemes()) {
    const int64_t cols = s.group_size == 0 ? 255 : 256;
    std::uniform_int_distribution<int64_t> row(0, kRows - 1), col(0, cols - 1);
    std::vector<std::vector<Pos>> cases = {
        {{0, 0}},
        {{kRows - 1, cols - 1}},
        {{17, 100}, {17, 5}},
        {{20, 200}, {33, 1}, {25, 0}},
        {{3, 31}, {3, 32}},
        {{11, cols - 1}, {12, 0}},
    };
    for (int k = 0; k < 4; ++k) {
      std::vector<Pos> random_case;
      const int n = 1 + k;
      for (int i = 0; i < n; ++i) random_case.push_back({row(rng), col(rng)});
      cases.push_back(random_case);
    }
    for (DType in_dtype : AllDTypes()) {
      const std::vector<float> values =
          Generate(DataKind::kGaussian, kRows, cols, s, rng);
      const std::vector<uint32_t> patterns = NonFinitePatterns(in_dtype);
      for (size_t ci = 0; ci < cases.size(); ++ci) {
        Pos first = cases[ci][0];
        for (const Pos& p : cases[ci])
          if (p.r < first.r || (p.r == first.r && p.c < first.c)) first = p;
        for (int threads : thread_counts) {
          const uint32_t bits =
              patterns[(ci + static_cast<size_t>(threads)) % patterns.size()];
          const bool metrics = (ci + static_cast<size_t>(threads)) % 2 == 0;
          InputMatrix in(values, in_dtype, kRows, cols,
                         ci % 2 ? Layout::kPadded : Layout::kMisaligned);
          for (const Pos& p : cases[ci]) in.SetBits(p.r, p.c, bits);
          SCOPED_TRACE(
              SchemeName(s) + " input=" + DTypeName(in_dtype) + " case " +
              std::to_string(ci) + " bits=" + HexBits(bits) +
              " threads=" + std::to_string(threads) + " expected first at (" +
              std::to_string(first.r) + ", " + std::to_string(first.c) + ")");
          const QuantResult q = RunQuantize(in, s, Layout::kDense, 0, metrics,
                                            ExecOptions{threads, GetParam()});
          ASSERT_EQ(q.status.code(), StatusCode::kNonFinite)
              << q.status.ToString();
          ASSERT_EQ(q.status.row(), first.r) << q.status.ToString();
          ASSERT_EQ(q.status.col(), first.c) << q.status.ToString();
          ASSERT_THAT(q.status.message(),
                      HasSubstr("row " + std::to_string(first.r)));
          ASSERT_THAT(q.status.message(),
                      HasSubstr("column " + std::to_string(first.c)));
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, NonFiniteTest,
                         ::testing::ValuesIn(ConcreteIsas()), IsaParamName);

using ScaleOverflowTest = PathTest;

// F32 (or BF16) input of 1e30 with F16 scales: the scale does not fit; the
// status names the row and the first column of the group.
TEST_P(ScaleOverflowTest, HugeInputWithF16ScalesNamesTheRow) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  constexpr int64_t kRows = 24;
  for (const QuantScheme& s : AllSchemes(DType::kF16)) {
    const int64_t cols = s.group_size == 0 ? 255 : 256;
    const int64_t group = GroupLength(s, cols);
    std::uniform_int_distribution<int64_t> col(0, cols - 1);
    for (DType in_dtype : {DType::kF32, DType::kBF16}) {
      const std::vector<float> values =
          Generate(DataKind::kGaussian, kRows, cols, s, rng);
      for (int threads : {1, 3}) {
        const int64_t c = col(rng);
        SCOPED_TRACE(SchemeName(s) + " input=" + DTypeName(in_dtype) +
                     " 1e30 at (13, " + std::to_string(c) +
                     ") threads=" + std::to_string(threads));
        for (float huge : {1e30f, -1e30f}) {
          InputMatrix in(values, in_dtype, kRows, cols, Layout::kDense);
          in.SetBits(13, c, in_dtype == DType::kF32
                                ? [&] { uint32_t b; std::memcpy(&b, &huge, 4); return b; }()
                                : FloatToBf16(huge));
          in.SetBits(19, 0,
                     in_dtype == DType::kF32 ? 0x7149f2ca
                                             : 0x7149);  // ~1e30, later row
          QuantScheme f16 = s;
          const QuantResult q = RunQuantize(in, f16, Layout::kDense, 0, true,
                                            ExecOptions{threads, GetParam()});
          ASSERT_EQ(q.status.code(), StatusCode::kScaleOverflow)
              << q.status.ToString();
          ASSERT_EQ(q.status.row(), 13);
          ASSERT_EQ(q.status.col(), c / group * group);
          ASSERT_THAT(q.status.message(), HasSubstr("row 13"));
          // The same data fits BF16 and F32 scales.
          for (DType sd : {DType::kBF16, DType::kF32}) {
            QuantScheme wide = s;
            wide.scale_dtype = sd;
            const QuantResult ok =
                RunQuantize(in, wide, Layout::kDense, 0, true,
                            ExecOptions{threads, GetParam()});
            ASSERT_TRUE(ok.status.ok())
                << DTypeName(sd) << ": " << ok.status.ToString();
          }
        }
      }
    }
  }
}

// The exact edge with F16 scales (the scale cap, lib/src/kernels/common.h):
// a largest magnitude of 65504 + S, S the largest F16 with qmax * S <= 65504,
// is accepted with scale S (one step beyond what F16 holds); the next float
// above it overflows. A scale of 65504 (the old edge, range 65504 * qmax)
// would decode its largest code to +-Inf in F16.
TEST_P(ScaleOverflowTest, F16ScaleBoundaryIsExact) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  for (const QuantScheme& s : AllSchemes(DType::kF16)) {
    const int64_t rows = 3, cols = s.group_size == 0 ? 77 : 256;
    const int64_t group = GroupLength(s, cols);
    float cap = 0.0f;  // by search over the F16 values
    for (uint16_t h = 1; h < 0x7c00; ++h) {
      if (static_cast<double>(HalfToFloat(h)) * QMax(s) <= 65504.0)
        cap = HalfToFloat(h);
    }
    const float edge = 65504.0f + cap;  // exact in F32
    std::vector<float> values =
        Generate(DataKind::kGaussian, rows, cols, s, rng);
    // Asymmetric: keep the group non-negative so the range is the maximum.
    for (auto& v : values) v = std::fabs(v);
    for (float top : {edge, std::nextafter(edge, 2 * edge)}) {
      SCOPED_TRACE(SchemeName(s) + " largest element " + std::to_string(top));
      std::vector<float> v = values;
      v[static_cast<size_t>(1 * cols + cols - 1)] = top;
      const InputMatrix in(v, DType::kF32, rows, cols, Layout::kDense);
      const QuantResult q = RunQuantize(in, s, Layout::kDense, 0, false,
                                        ExecOptions{1, GetParam()});
      if (top == edge) {
        ASSERT_TRUE(q.status.ok()) << q.status.ToString();
        ASSERT_EQ(q.scale_bits(1, (cols - 1) / group), FloatToHalf(cap));
      } else {
        ASSERT_EQ(q.status.code(), StatusCode::kScaleOverflow)
            << q.status.ToString();
        ASSERT_EQ(q.status.row(), 1);
        ASSERT_EQ(q.status.col(), (cols - 1) / group * group);
      }
    }
  }
}

// Within a row the kernel stops at the first failing group, so the earlier of
// a NaN and an overflowing group wins; across rows, the earlier row.
TEST_P(ScaleOverflowTest, FirstFailureWinsBetweenNaNAndOverflow) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  const QuantScheme s{4, true, 32, DType::kF16};
  const int64_t rows = 30, cols = 128;
  const std::vector<float> values =
      Generate(DataKind::kGaussian, rows, cols, s, rng);
  struct Case {
    Pos nan, huge;
    StatusCode want;
    Pos at;
  };
  const Case cases[] = {
      {{5, 40}, {5, 3}, StatusCode::kScaleOverflow, {5, 0}},
      {{5, 3}, {5, 40}, StatusCode::kNonFinite, {5, 3}},
      {{9, 0}, {5, 100}, StatusCode::kScaleOverflow, {5, 96}},
      {{2, 127}, {5, 0}, StatusCode::kNonFinite, {2, 127}},
  };
  for (const Case& k : cases) {
    for (int threads : {1, 2, 7}) {
      SCOPED_TRACE("NaN at (" + std::to_string(k.nan.r) + ", " +
                   std::to_string(k.nan.c) + "), 1e30 at (" +
                   std::to_string(k.huge.r) + ", " + std::to_string(k.huge.c) +
                   "), threads " + std::to_string(threads));
      InputMatrix in(values, DType::kF32, rows, cols, Layout::kDense);
      in.SetBits(k.nan.r, k.nan.c, 0x7fc00000u);
      in.SetBits(k.huge.r, k.huge.c, 0x7149f2cau);
      const QuantResult q = RunQuantize(in, s, Layout::kDense, 0, true,
                                        ExecOptions{threads, GetParam()});
      ASSERT_EQ(q.status.code(), k.want) << q.status.ToString();
      ASSERT_EQ(q.status.row(), k.at.r);
      ASSERT_EQ(q.status.col(), k.at.c);
    }
  }
}

// GGML schemes: a scale (or Q4_1's block minimum) that F16 rounds to Inf is
// kScaleOverflow (ggml would store the Inf). F16 rounds 65520, the midpoint
// above its largest value 65504, to Inf (ties to even), and anything below
// it to 65504: each edge below is exact in float, on either side.
TEST_P(ScaleOverflowTest, GgmlF16EdgesAreExact) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  struct Case {
    QuantScheme scheme;
    const char* what;
    float fits, overflows;  // the value placed at (1, 255)
    bool zero_group;        // the rest of its group is 0 (else small Gaussians)
    bool constant;          // the whole group holds the value
  };
  const Case cases[] = {
      // d = amax / 127.
      {GgmlQ8_0(), "q8_0 amax", 65519.0f * 127, 65520.0f * 127, false, false},
      {GgmlQ8_0(), "q8_0 -amax", -65519.0f * 127, -65520.0f * 127, false,
       false},
      // d = max / -8 (either sign).
      {GgmlQ4_0(), "q4_0 max", 65519.0f * 8, 65520.0f * 8, false, false},
      {GgmlQ4_0(), "q4_0 -max", -65519.0f * 8, -65520.0f * 8, false, false},
      // d = (hi - lo) / 15 with lo = 0.
      {GgmlQ4_1(), "q4_1 range", 65519.0f * 15, 65520.0f * 15, true, false},
      // m = FP16(lo) with d = 0.
      {GgmlQ4_1(), "q4_1 minimum", -65519.0f, -65520.0f, false, true},
  };
  const int64_t rows = 3, cols = 256;
  const std::vector<float> base =
      Generate(DataKind::kGaussian, rows, cols, GgmlQ8_0(), rng);
  for (const Case& k : cases) {
    for (float v : {k.fits, k.overflows}) {
      for (int threads : {1, 3}) {
        SCOPED_TRACE(std::string(k.what) + " value " + std::to_string(v) +
                     " threads " + std::to_string(threads));
        std::vector<float> x = base;
        for (int64_t c = 224; c < 256; ++c) {
          float& e = x[static_cast<size_t>(cols + c)];
          if (k.zero_group) e = 0.0f;
          if (k.constant) e = v;
        }
        x[static_cast<size_t>(cols + 255)] = v;
        const InputMatrix in(x, DType::kF32, rows, cols, Layout::kDense);
        const QuantResult q = RunQuantize(in, k.scheme, Layout::kDense, 0, true,
                                          ExecOptions{threads, GetParam()});
        if (v == k.fits) {
          ASSERT_TRUE(q.status.ok()) << q.status.ToString();
          const uint32_t d = q.scale_bits(1, 7);
          if (k.constant) {
            EXPECT_EQ(d, 0u);
            EXPECT_EQ(q.offset_bits(1, 7), 0xfbffu);  // -65504
          } else {
            EXPECT_EQ(d & 0x7fffu, 0x7bffu);  // +-65504
          }
        } else {
          ASSERT_EQ(q.status.code(), StatusCode::kScaleOverflow)
              << q.status.ToString();
          ASSERT_EQ(q.status.row(), 1);
          ASSERT_EQ(q.status.col(), 224);
          EXPECT_THAT(q.status.message(), HasSubstr("row 1, columns 224..255"));
          EXPECT_THAT(q.status.message(), HasSubstr(SchemeName(k.scheme)));
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, ScaleOverflowTest,
                         ::testing::ValuesIn(ConcreteIsas()), IsaParamName);

// ---------------------------------------------------------------------------
// Invalid arguments.

// A valid call that each case breaks in one way.
struct Call {
  QuantScheme scheme{4, false, 32, DType::kF16};
  std::vector<float> input = std::vector<float>(4 * 64, 1.0f);
  ConstMatrixView in{nullptr, DType::kF32, 4, 64, 64};
  std::vector<uint8_t> codes = std::vector<uint8_t>(4 * 64);
  std::vector<uint8_t> scales = std::vector<uint8_t>(4 * 2 * 4);
  std::vector<uint8_t> zps = std::vector<uint8_t>(4 * 2);
  QuantizedView out{nullptr, 32, nullptr, 2, nullptr, 2};
  std::vector<float> deq = std::vector<float>(4 * 64);
  MatrixView dout{nullptr, DType::kF32, 4, 64, 64};
  ExecOptions options{1, Isa::kScalar};

  Call() {
    in.data = input.data();
    out.codes = codes.data();
    out.scales = scales.data();
    out.zero_points = zps.data();
    dout.data = deq.data();
  }
  Status Quant() { return Quantize(in, scheme, out, nullptr, options); }
  Status Dequant() {
    const ConstQuantizedView cin{out.codes,       out.codes_stride,
                                 out.scales,      out.scales_stride,
                                 out.zero_points, out.zero_points_stride};
    return Dequantize(cin, scheme, dout, options);
  }
};

TEST(InvalidArgumentTest, BaselineCallSucceeds) {
  Call call;
  ASSERT_TRUE(call.Quant().ok()) << call.Quant().ToString();
  ASSERT_TRUE(call.Dequant().ok()) << call.Dequant().ToString();
  call.in.rows = call.dout.rows = 0;
  ErrorSums sums;
  sums.count = 99;
  ASSERT_TRUE(
      Quantize(call.in, call.scheme, call.out, &sums, call.options).ok());
  EXPECT_EQ(sums.count, 0);
  EXPECT_TRUE(call.Dequant().ok());
}

TEST(InvalidArgumentTest, QuantizeAndDequantizeRejectBadArguments) {
  struct Case {
    const char* what;
    void (*apply)(Call&);
    bool dequant_too;      // the same mistake is possible for Dequantize
    const char* mentions;  // substring the message must contain ("" = any)
  };
  const Case cases[] = {
      {"threads 0", [](Call& c) { c.options.threads = 0; }, true, "0"},
      {"threads -1", [](Call& c) { c.options.threads = -1; }, true, "-1"},
      {"threads INT_MIN", [](Call& c) { c.options.threads = INT_MIN; }, true,
       ""},
      {"group does not divide cols",
       [](Call& c) {
         c.in.cols = c.dout.cols = 48;
         c.in.row_stride = c.dout.row_stride = 48;
       },
       true, "48"},
      {"bits 5", [](Call& c) { c.scheme.bits = 5; }, true, "5"},
      {"bits 0", [](Call& c) { c.scheme.bits = 0; }, true, ""},
      {"bits 16", [](Call& c) { c.scheme.bits = 16; }, true, ""},
      {"group 48", [](Call& c) { c.scheme.group_size = 48; }, true, "48"},
      {"group 16", [](Call& c) { c.scheme.group_size = 16; }, true, "16"},
      {"group 512", [](Call& c) { c.scheme.group_size = 512; }, true, "512"},
      {"group -32", [](Call& c) { c.scheme.group_size = -32; }, true, ""},
      {"row stride < cols",
       [](Call& c) { c.in.row_stride = c.dout.row_stride = 63; }, true, "63"},
      {"negative rows", [](Call& c) { c.in.rows = c.dout.rows = -1; }, true,
       ""},
      {"zero cols", [](Call& c) { c.in.cols = c.dout.cols = 0; }, true, ""},
      {"negative cols", [](Call& c) { c.in.cols = c.dout.cols = -64; }, true,
       ""},
      {"null input / output",
       [](Call& c) {
         c.in.data = nullptr;
         c.dout.data = nullptr;
       },
       true, ""},
      {"null codes", [](Call& c) { c.out.codes = nullptr; }, true, ""},
      {"null scales", [](Call& c) { c.out.scales = nullptr; }, true, ""},
      {"asymmetric without zero points",
       [](Call& c) { c.out.zero_points = nullptr; }, true, "zero point"},
      {"codes stride below the row", [](Call& c) { c.out.codes_stride = 31; },
       true, "31"},
      {"scales stride below the groups",
       [](Call& c) { c.out.scales_stride = 1; }, true, ""},
      {"zero point stride below the groups",
       [](Call& c) { c.out.zero_points_stride = 1; }, true, ""},
      {"int8 codes stride below cols",
       [](Call& c) {
         c.scheme.bits = 8;
         c.out.codes_stride = 63;
       },
       true, "63"},
      {"per-channel scale stride 0",
       [](Call& c) {
         c.scheme.group_size = 0;
         c.out.scales_stride = 0;
       },
       true, ""},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.what);
    for (Isa isa : {Isa::kScalar, Isa::kAuto}) {
      Call call;
      call.options.isa = isa;
      k.apply(call);
      const Status q = call.Quant();
      EXPECT_EQ(q.code(), StatusCode::kInvalidArgument) << q.ToString();
      EXPECT_THAT(q.message(), HasSubstr(k.mentions));
      if (k.dequant_too) {
        const Status d = call.Dequant();
        EXPECT_EQ(d.code(), StatusCode::kInvalidArgument) << d.ToString();
      }
    }
  }
}

// Q4_1 needs its offsets; GGML schemes take only multiples of 32 columns and
// F16 scales.
TEST(InvalidArgumentTest, GgmlSchemesRejectBadArguments) {
  const int64_t rows = 4, cols = 64;
  std::vector<float> input(static_cast<size_t>(rows * cols), 1.0f);
  std::vector<float> deq(input.size());
  for (const QuantScheme& s : GgmlSchemes()) {
    SCOPED_TRACE(SchemeName(s));
    QuantizedBuffers b;
    ASSERT_TRUE(b.Allocate(s, rows, cols).ok());
    const ConstMatrixView in{input.data(), DType::kF32, rows, cols, cols};
    const MatrixView out{deq.data(), DType::kF32, rows, cols, cols};
    const ExecOptions options{1, Isa::kScalar};
    ASSERT_TRUE(Quantize(in, s, b.view(), nullptr, options).ok());
    ASSERT_TRUE(Dequantize(static_cast<const QuantizedBuffers&>(b).view(), s,
                           out, options)
                    .ok());
    if (HasOffsets(s)) {
      QuantizedView v = b.view();
      v.offsets = nullptr;
      Status st = Quantize(in, s, v, nullptr, options);
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
      EXPECT_THAT(st.message(), HasSubstr("offsets"));
      st = Dequantize(v, s, out, options);
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
      v = b.view();
      v.offsets_stride = 1;
      st = Quantize(in, s, v, nullptr, options);
      EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
      EXPECT_THAT(st.message(), HasSubstr("offset stride 1"));
      EXPECT_EQ(Dequantize(v, s, out, options).code(),
                StatusCode::kInvalidArgument);
    } else {
      // Zero points and offsets are not looked at.
      QuantizedView v = b.view();
      v.zero_points = nullptr;
      v.offsets = nullptr;
      EXPECT_TRUE(Quantize(in, s, v, nullptr, options).ok());
    }
    const ConstMatrixView narrow{input.data(), DType::kF32, rows, 48, cols};
    Status st = Quantize(narrow, s, b.view(), nullptr, options);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), HasSubstr("48"));
    QuantScheme bf16 = s;
    bf16.scale_dtype = DType::kBF16;
    st = Quantize(in, bf16, b.view(), nullptr, options);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
    EXPECT_THAT(st.message(), HasSubstr("F16"));
  }
}

TEST(InvalidArgumentTest, ValidateSchemeNamesColsAndGroup) {
  const Status s = ValidateScheme(QuantScheme{4, true, 128, DType::kF16}, 4000);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("4000"));
  EXPECT_THAT(s.message(), HasSubstr("128"));
  EXPECT_TRUE(
      ValidateScheme(QuantScheme{4, true, 128, DType::kF16}, 4096).ok());
  EXPECT_TRUE(ValidateScheme(QuantScheme{4, true, 0, DType::kF16}, 4001).ok());
}

TEST(InvalidArgumentTest, UnsupportedIsaRequestedExplicitly) {
  std::optional<Isa> missing;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2})
    if (!IsaSupported(isa)) missing = isa;
  if (!missing)
    GTEST_SKIP() << "every ISA path is available on this CPU and build ("
                 << CpuFeatureString() << ")";
  Call call;
  call.options.isa = *missing;
  EXPECT_EQ(call.Quant().code(), StatusCode::kUnsupported);
  EXPECT_EQ(call.Dequant().code(), StatusCode::kUnsupported);
  Isa resolved;
  EXPECT_EQ(ResolveIsa(*missing, &resolved).code(), StatusCode::kUnsupported);
}

// ---------------------------------------------------------------------------
// NIBBLE_ISA.

// Sets an environment variable for one scope and restores the old value.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = std::string(old);
    if (value == nullptr) {
      unsetenv(name);
    } else {
      setenv(name, value, 1);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

TEST(NibbleIsaEnvTest, BogusValueIsInvalidArgument) {
  ScopedEnv env("NIBBLE_ISA", "bogus");
  Call call;
  call.options.isa = Isa::kAuto;
  const Status q = call.Quant();
  EXPECT_EQ(q.code(), StatusCode::kInvalidArgument) << q.ToString();
  EXPECT_THAT(q.message(), HasSubstr("bogus"));
  EXPECT_EQ(call.Dequant().code(), StatusCode::kInvalidArgument);
  // An explicit path does not consult the variable.
  call.options.isa = Isa::kScalar;
  EXPECT_TRUE(call.Quant().ok());
}

TEST(NibbleIsaEnvTest, MissingPathIsUnsupported) {
  std::optional<Isa> missing;
  for (Isa isa : {Isa::kAvx512, Isa::kAvx2})
    if (!IsaSupported(isa)) missing = isa;
  if (!missing)
    GTEST_SKIP() << "every ISA path is available on this CPU and build ("
                 << CpuFeatureString()
                 << "), so NIBBLE_ISA cannot name a missing one";
  ScopedEnv env("NIBBLE_ISA", IsaName(*missing));
  Call call;
  call.options.isa = Isa::kAuto;
  const Status q = call.Quant();
  EXPECT_EQ(q.code(), StatusCode::kUnsupported) << q.ToString();
  EXPECT_THAT(q.message(), HasSubstr(IsaName(*missing)));
}

TEST(NibbleIsaEnvTest, ScalarAndAutoWork) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  const QuantScheme s{4, true, 64, DType::kF16};
  const InputMatrix in(Generate(DataKind::kGaussian, 9, 256, s, rng),
                       DType::kF32, 9, 256, Layout::kDense);
  const QuantResult ref =
      RunQuantize(in, s, Layout::kDense, 0, true, ExecOptions{1, Isa::kScalar});
  ASSERT_TRUE(ref.status.ok());
  for (const char* value : {"scalar", "auto", ""}) {
    SCOPED_TRACE(std::string("NIBBLE_ISA='") + value + "'");
    ScopedEnv env("NIBBLE_ISA", value);
    Isa resolved = Isa::kAuto;
    ASSERT_TRUE(ResolveIsa(Isa::kAuto, &resolved).ok());
    EXPECT_EQ(resolved,
              std::string(value) == "scalar" ? Isa::kScalar : BestIsa());
    const QuantResult got =
        RunQuantize(in, s, Layout::kDense, 1, true, ExecOptions{2, Isa::kAuto});
    ASSERT_TRUE(SameQuantized(ref, got));
  }
  // Every supported path can be selected through the variable.
  for (Isa isa : SupportedIsas()) {
    ScopedEnv env("NIBBLE_ISA", IsaName(isa));
    Isa resolved = Isa::kAuto;
    ASSERT_TRUE(ResolveIsa(Isa::kAuto, &resolved).ok());
    EXPECT_EQ(resolved, isa);
  }
}

}  // namespace
}  // namespace nibble::test
