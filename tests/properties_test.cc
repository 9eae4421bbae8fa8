// Properties every path must have, checked on the scalar path and on each
// SIMD path (instantiated for all three; unavailable ones are skipped):
// error bounds, exact round trips on the grid, sign symmetry, zero groups,
// the INT4 pad nibble, and fused metrics against a double recomputation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "nibble/nibble.h"
#include "test_util.h"

namespace nibble::test {
namespace {

class PropertiesTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaSupported(GetParam())) GTEST_SKIP() << IsaSkipMessage(GetParam());
  }
  ExecOptions options() const { return ExecOptions{1, GetParam()}; }
};

std::string IsaParamName(const ::testing::TestParamInfo<Isa>& info) {
  return IsaName(info.param);
}

int64_t PropertyCols(const QuantScheme& s) {
  return s.group_size == 0 ? (s.bits == 4 ? 333 : 334) : 512;
}

// |dequant(quant(x)) - x| <= scale/2 (symmetric) or scale (asymmetric, the
// extra half step being the zero point's rounding), per element, where x is
// taken at most +-the scale dtype's largest value: BF16 rounds 65504 to
// 65536, which F16 scales cannot decode (the scale cap of
// lib/src/kernels/common.h; scale_cap_test covers it), and which must lie
// within one step of it.
//
// Slack: the kernel computes x * inv in float with inv = RN(1/s), so
// x * inv = (x/s)(1 + d1)(1 + d2) with |d1|, |d2| <= u = 2^-24, an error of at
// most ~2u |x/s| <= 2u qmax steps before rounding to an integer; with F32
// scales the product q * s is rounded once more (<= u qmax s). That is at most
// 3u qmax s in total; we allow 4u qmax s, i.e. a few float ulps of the
// group's largest value and far below any real rounding mistake (which costs
// a whole step, s).
TEST_P(PropertiesTest, ErrorBoundPerElement) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  const DataKind kinds[] = {DataKind::kGaussian,     DataKind::kHeavyTailed,
                            DataKind::kF16Subnormal, DataKind::kF16Extremes,
                            DataKind::kTies,         DataKind::kConstant,
                            DataKind::kSignedZeros,  DataKind::kTiny};
  const double u = std::ldexp(1.0, -24);
  for (DType sd : AllDTypes()) {
    for (const QuantScheme& base : AllSchemes(sd)) {
      const QuantScheme& s = base;
      const int64_t rows = 5, cols = PropertyCols(s);
      const int64_t group = GroupLength(s, cols);
      const int qmax = QMax(s);
      for (DType in_dtype : AllDTypes()) {
        for (DataKind kind : kinds) {
          SCOPED_TRACE(
              Describe(s, in_dtype, rows, cols, Layout::kDense, kind, false));
          const InputMatrix in(Generate(kind, rows, cols, s, rng), in_dtype,
                               rows, cols, Layout::kDense);
          const QuantResult q =
              RunQuantize(in, s, Layout::kDense, 0, false, options());
          ASSERT_TRUE(q.status.ok()) << q.status.ToString();
          const DequantResult d =
              RunDequantize(q.const_view(), s, rows, cols, DType::kF32,
                            Layout::kDense, 0, options());
          ASSERT_TRUE(d.status.ok()) << d.status.ToString();
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t c = 0; c < cols; ++c) {
              const double scale = q.scale(r, c / group);
              const double x = in.value(r, c);
              const double top = sd == DType::kF16    ? 65504.0
                                 : sd == DType::kBF16 ? Bf16ToFloat(0x7f7f)
                                                      : 3.4028234663852886e38;
              ASSERT_LE(std::fabs(x) - top, scale) << "x=" << x;
              const double err = std::fabs(static_cast<double>(d.value(r, c)) -
                                           std::min(std::max(x, -top), top));
              const double bound =
                  (s.symmetric ? 0.5 : 1.0) * scale + 4.0 * u * qmax * scale;
              ASSERT_LE(err, bound)
                  << "at row " << r << ", column " << c << ": x=" << x
                  << " dequantized=" << d.value(r, c) << " scale=" << scale
                  << " zero point=" << q.zero_point(r, c / group)
                  << " code=" << q.code(r, c);
            }
          }
        }
      }
    }
  }
}

// x = k * s with s a power of two and a group whose range is exactly qmax * s
// quantizes to code k (sym) or k + zp (asym) and dequantizes to x exactly, in
// F32 and in the input dtype.
TEST_P(PropertiesTest, OnGridValuesRoundTripExactly) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  std::uniform_int_distribution<int> exp(-12, 4);
  for (DType sd : AllDTypes()) {
    for (const QuantScheme& s : AllSchemes(sd)) {
      const int64_t rows = 4, cols = PropertyCols(s);
      const int64_t group = GroupLength(s, cols);
      const int qmax = QMax(s);
      for (DType in_dtype : AllDTypes()) {
        SCOPED_TRACE(Describe(s, in_dtype, rows, cols, Layout::kDense,
                              DataKind::kGaussian, false) +
                     " (on-grid values)");
        std::vector<float> values(static_cast<size_t>(rows * cols));
        std::vector<int> expected(values.size());  // stored code
        std::vector<float> group_scale;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t g0 = 0; g0 < cols; g0 += group) {
            const float sc = std::ldexp(1.0f, exp(rng));
            // Symmetric: k in [-qmax, qmax], one element at +-qmax.
            // Asymmetric: k in [-a, qmax - a], both ends present (a = 0 and
            // a = qmax included: all non-negative / all non-positive groups).
            int a = 0;
            if (!s.symmetric) {
              const int choice = std::uniform_int_distribution<int>(0, 3)(rng);
              a = choice == 0 ? 0
                  : choice == 1
                      ? qmax
                      : std::uniform_int_distribution<int>(0, qmax)(rng);
            }
            const int lo = s.symmetric ? -qmax : -a;
            const int hi = s.symmetric ? qmax : qmax - a;
            std::uniform_int_distribution<int> k(lo, hi);
            std::uniform_int_distribution<int64_t> pos(g0, g0 + group - 1);
            for (int64_t c = g0; c < g0 + group; ++c) {
              const size_t i = static_cast<size_t>(r * cols + c);
              const int kk = k(rng);
              values[i] = static_cast<float>(kk) * sc;
            }
            // Pin the range ends (distinct positions).
            const int64_t p0 = pos(rng);
            int64_t p1 = pos(rng);
            if (p1 == p0) p1 = p0 == g0 ? g0 + 1 : g0;
            if (s.symmetric) {
              values[static_cast<size_t>(r * cols + p0)] =
                  (k(rng) < 0 ? -1.0f : 1.0f) * static_cast<float>(qmax) * sc;
            } else {
              values[static_cast<size_t>(r * cols + p0)] =
                  static_cast<float>(lo) * sc;
              values[static_cast<size_t>(r * cols + p1)] =
                  static_cast<float>(hi) * sc;
            }
            for (int64_t c = g0; c < g0 + group; ++c) {
              const size_t i = static_cast<size_t>(r * cols + c);
              const int kk = static_cast<int>(values[i] / sc);
              expected[i] = s.symmetric ? kk : kk + a;
            }
          }
        }
        const InputMatrix in(values, in_dtype, rows, cols, Layout::kDense);
        for (size_t i = 0; i < values.size(); ++i)
          ASSERT_EQ(in.value(static_cast<int64_t>(i) / cols,
                             static_cast<int64_t>(i) % cols),
                    values[i])
              << "test bug: on-grid value not representable in the input dtype";
        const QuantResult q =
            RunQuantize(in, s, Layout::kDense, 0, false, options());
        ASSERT_TRUE(q.status.ok()) << q.status.ToString();
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < cols; ++c) {
            ASSERT_EQ(q.code(r, c), expected[static_cast<size_t>(r * cols + c)])
                << "code at row " << r << ", column " << c
                << " x=" << values[static_cast<size_t>(r * cols + c)]
                << " scale=" << q.scale(r, c / group);
          }
        }
        for (DType out : {DType::kF32, in_dtype}) {
          const DequantResult d = RunDequantize(
              q.const_view(), s, rows, cols, out, Layout::kDense, 0, options());
          ASSERT_TRUE(d.status.ok());
          for (int64_t r = 0; r < rows; ++r)
            for (int64_t c = 0; c < cols; ++c)
              ASSERT_EQ(d.value(r, c),
                        values[static_cast<size_t>(r * cols + c)])
                  << "dequantized to " << DTypeName(out) << " at row " << r
                  << ", column " << c;
        }
      }
    }
  }
}

// Symmetric schemes: quantize(-x) == -quantize(x) (INT4 nibble 16 - n), with
// the same scales and bit-identical metrics.
TEST_P(PropertiesTest, SymmetricSchemesAreSignSymmetric) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  for (DType sd : AllDTypes()) {
    for (const QuantScheme& s : AllSchemes(sd)) {
      if (!s.symmetric) continue;
      const int64_t rows = 6, cols = PropertyCols(s);
      for (DType in_dtype : AllDTypes()) {
        for (DataKind kind : {DataKind::kGaussian, DataKind::kTies,
                              DataKind::kHeavyTailed, DataKind::kSignedZeros}) {
          SCOPED_TRACE(
              Describe(s, in_dtype, rows, cols, Layout::kDense, kind, true));
          InputMatrix in(Generate(kind, rows, cols, s, rng), in_dtype, rows,
                         cols, Layout::kDense);
          const QuantResult pos =
              RunQuantize(in, s, Layout::kDense, 0, true, options());
          in.Negate();
          const QuantResult neg =
              RunQuantize(in, s, Layout::kDense, 0, true, options());
          ASSERT_TRUE(pos.status.ok() && neg.status.ok());
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t g = 0; g < GroupsPerRow(s, cols); ++g)
              ASSERT_EQ(pos.scale_bits(r, g), neg.scale_bits(r, g))
                  << "scale of row " << r << ", group " << g;
            for (int64_t c = 0; c < cols; ++c)
              ASSERT_EQ(neg.code(r, c), -pos.code(r, c))
                  << "row " << r << ", column " << c << " x=" << in.value(r, c);
          }
          if (s.bits == 4 && (cols & 1)) {
            for (int64_t r = 0; r < rows; ++r)
              ASSERT_EQ(neg.raw_code(r, cols), 8) << "pad nibble of row " << r;
          }
          ASSERT_TRUE(SameSums(pos.sums, neg.sums));
        }
      }
    }
  }
}

// An all-zero group (+0, -0 or mixed) gets scale +0, zero point 0 and the
// code of 0 (INT8: 0; INT4 sym: nibble 8; INT4 asym: nibble 0), whatever its
// neighbours hold.
TEST_P(PropertiesTest, ZeroGroupsGetZeroScaleAndZeroCodes) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  for (DType sd : AllDTypes()) {
    for (const QuantScheme& s : AllSchemes(sd)) {
      const int64_t rows = 6, cols = PropertyCols(s);
      const int64_t group = GroupLength(s, cols);
      for (DType in_dtype : AllDTypes()) {
        SCOPED_TRACE(Describe(s, in_dtype, rows, cols, Layout::kDense,
                              DataKind::kZero, true));
        std::vector<float> v =
            Generate(DataKind::kGaussian, rows, cols, s, rng);
        std::vector<bool> zero_group;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t g0 = 0; g0 < cols; g0 += group) {
            // Rows 0, 2, 4: every group zero; otherwise every other group.
            const bool zero = r % 2 == 0 || (g0 / group) % 2 == 1;
            zero_group.push_back(zero);
            if (!zero) continue;
            for (int64_t c = g0; c < g0 + group; ++c)
              v[static_cast<size_t>(r * cols + c)] = r == 2 ? -0.0f
                                                     : (r == 4 && (c & 1))
                                                         ? -0.0f
                                                         : 0.0f;
          }
        }
        const InputMatrix in(v, in_dtype, rows, cols, Layout::kDense);
        const QuantResult q =
            RunQuantize(in, s, Layout::kDense, 0xff, true, options());
        ASSERT_TRUE(q.status.ok()) << q.status.ToString();
        const int zero_raw = s.bits == 4 && s.symmetric ? 8 : 0;
        size_t gi = 0;
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t g = 0; g < GroupsPerRow(s, cols); ++g, ++gi) {
            if (!zero_group[gi]) continue;
            ASSERT_EQ(q.scale_bits(r, g), 0u) << "row " << r << ", group " << g;
            ASSERT_EQ(q.zero_point(r, g), 0) << "row " << r << ", group " << g;
            for (int64_t c = g * group; c < (g + 1) * group; ++c)
              ASSERT_EQ(q.raw_code(r, c), zero_raw)
                  << "row " << r << ", column " << c;
          }
        }
        // A matrix of -0 only: no error, no reference energy.
        const InputMatrix zeros(
            std::vector<float>(static_cast<size_t>(cols), -0.0f), in_dtype, 1,
            cols, Layout::kDense);
        const QuantResult z =
            RunQuantize(zeros, s, Layout::kDense, 0xff, true, options());
        ASSERT_TRUE(z.status.ok());
        ASSERT_EQ(z.sums.count, cols);
        ASSERT_EQ(z.sums.sum_sq_error, 0.0);
        ASSERT_EQ(z.sums.sum_sq_ref, 0.0);
        ASSERT_EQ(z.sums.max_abs_error, 0.0);
      }
    }
  }
}

// INT4 rows of odd length end in a byte whose high nibble is the code of 0.0:
// 8 symmetric, the group's zero point asymmetric.
TEST_P(PropertiesTest, Int4OddColumnsPadNibble) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  for (bool sym : {true, false}) {
    for (DType sd : AllDTypes()) {
      const QuantScheme s{4, sym, 0, sd};
      for (int64_t cols : {1, 3, 7, 15, 17, 31, 33, 255, 257, 999}) {
        for (DataKind kind : {DataKind::kGaussian, DataKind::kConstant,
                              DataKind::kZero, DataKind::kTies}) {
          const int64_t rows = 5;
          SCOPED_TRACE(Describe(s, DType::kF32, rows, cols, Layout::kPadded,
                                kind, false));
          const InputMatrix in(Generate(kind, rows, cols, s, rng), DType::kF32,
                               rows, cols, Layout::kPadded);
          const QuantResult q =
              RunQuantize(in, s, Layout::kPadded, 0xff, false, options());
          ASSERT_TRUE(q.status.ok()) << q.status.ToString();
          for (int64_t r = 0; r < rows; ++r)
            ASSERT_EQ(q.raw_code(r, cols), sym ? 8 : q.zero_point(r, 0))
                << "pad nibble of row " << r;
        }
      }
    }
  }
}

// The fused metrics against a double-precision recomputation from
// Dequantize to F32. This compares two different computations (float lane
// sums vs double), so it has a tolerance: 1e-5 relative for the sums, MSE
// and SNR; max |e| is exact (the kernel's e = d - x is the float difference,
// and taking the max commutes with rounding).
TEST_P(PropertiesTest, FusedMetricsMatchDoubleRecomputation) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  for (DType sd : AllDTypes()) {
    // GGML schemes (F16 scales only): their metrics measure what ggml's
    // dequantizer gives, which is what Dequantize to F32 gives.
    std::vector<QuantScheme> schemes = AllSchemes(sd);
    if (sd == DType::kF16)
      for (const QuantScheme& g : GgmlSchemes()) schemes.push_back(g);
    for (const QuantScheme& s : schemes) {
      const int64_t rows = 7;
      const int64_t cols =
          s.group_size == 0 ? (s.bits == 4 ? 1001 : 1000) : 768;
      for (DType in_dtype : AllDTypes()) {
        for (DataKind kind : {DataKind::kGaussian, DataKind::kHeavyTailed,
                              DataKind::kF16Extremes, DataKind::kTies,
                              DataKind::kF16Subnormal}) {
          SCOPED_TRACE(
              Describe(s, in_dtype, rows, cols, Layout::kDense, kind, true));
          std::vector<float> values = Generate(kind, rows, cols, s, rng);
          if (HasOffsets(s) && in_dtype == DType::kBF16) {
            // BF16 rounds -65504 to -65536: Q4_1's F16 minimum would
            // overflow (errors_test); halve the data.
            for (float& v : values) v *= 0.5f;
          }
          const InputMatrix in(values, in_dtype, rows, cols, Layout::kDense);
          const QuantResult q =
              RunQuantize(in, s, Layout::kDense, 0, true, options());
          ASSERT_TRUE(q.status.ok()) << q.status.ToString();
          const DequantResult d =
              RunDequantize(q.const_view(), s, rows, cols, DType::kF32,
                            Layout::kDense, 0, options());
          ASSERT_TRUE(d.status.ok());
          double see = 0, sxx = 0, sxe = 0;
          float max_abs = 0;
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t c = 0; c < cols; ++c) {
              const float x = in.value(r, c);
              const float dv = d.value(r, c);
              const double e = static_cast<double>(dv) - static_cast<double>(x);
              see += e * e;
              sxx += static_cast<double>(x) * x;
              sxe += static_cast<double>(x) * e;
              max_abs = std::max(max_abs, std::fabs(dv - x));
            }
          }
          const ErrorSums& m = q.sums;
          EXPECT_EQ(m.count, rows * cols);
          EXPECT_EQ(m.max_abs_error, static_cast<double>(max_abs));
          EXPECT_NEAR(m.sum_sq_error, see, 1e-5 * see);
          EXPECT_NEAR(m.sum_sq_ref, sxx, 1e-5 * sxx);
          // x.e can cancel; measure it against |x| |e| (Cauchy-Schwarz).
          EXPECT_NEAR(m.sum_ref_error, sxe, 1e-5 * std::sqrt(sxx * see));
          const ErrorMetrics got = Summarize(m);
          const double mse = see / static_cast<double>(rows * cols);
          EXPECT_NEAR(got.mse, mse, 1e-5 * mse);
          if (see > 0) {
            const double snr = 10.0 * std::log10(sxx / see);
            EXPECT_NEAR(got.snr_db, snr, 1e-5 * std::max(1.0, std::fabs(snr)));
          } else {
            EXPECT_EQ(got.snr_db, std::numeric_limits<double>::infinity());
          }
          if (HasFailure()) return;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, PropertiesTest,
                         ::testing::ValuesIn(ConcreteIsas()), IsaParamName);

}  // namespace
}  // namespace nibble::test
