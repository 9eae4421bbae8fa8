// The scale cap (lib/src/kernels/common.h, "The scale cap"): nibble's INT8 /
// INT4 scales are rounded up to the scale dtype, except that every code of a
// group must decode to a finite value in that dtype, (q - zp) * scale
// computed as compressed-tensors / vLLM compute it, in the scale's dtype.
//
// Rows holding +-65504, +-BF16 max and +-FLT_MAX (alone, alternating, in
// every element, beside tiny values, spread over one or both signs) are
// quantized with F16, BF16 and F32 scales from F16, BF16 and F32 input, for
// the twelve INT8 / INT4 schemes. Checked on every path:
//  - every code of every group, cast to the scale dtype and multiplied there
//    (and in F32, and exactly), stays finite, i.e. |q - zp| * s <= max;
//  - every element, the largest ones included, decodes to within half a
//    step (symmetric) / one step (asymmetric) of itself -- of +-the dtype's
//    largest value for an element beyond it, which is at most a step
//    beyond;
//  - the scale and zero point are the documented ones: the plain round-up
//    where it fits, the capped value where it does not, and kScaleOverflow
//    (with the row and first column of the group) where a value lies more
//    than one step beyond the scale dtype's largest value;
//  - every path at 1, 2, 3 and 8 threads writes the scalar path's bytes,
//    statuses and metric bits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "nibble/nibble.h"
#include "test_util.h"

namespace nibble::test {
namespace {

constexpr ExecOptions kScalar{1, Isa::kScalar};
constexpr int kThreadCounts[] = {1, 2, 3, 8};
const double kU = std::ldexp(1.0, -24);

float F16Max() { return 65504.0f; }
float Bf16Max() { return Bf16ToFloat(0x7f7f); }
float F32Max() { return std::numeric_limits<float>::max(); }

double MaxOf(DType dt) {
  switch (dt) {
    case DType::kF16:
      return F16Max();
    case DType::kBF16:
      return Bf16Max();
    case DType::kF32:
      break;
  }
  return F32Max();
}

// Positive finite values of a 16-bit dtype, by bit pattern.
float Value16(uint32_t bits, DType dt) {
  return dt == DType::kF16 ? HalfToFloat(static_cast<uint16_t>(bits))
                           : Bf16ToFloat(static_cast<uint16_t>(bits));
}
uint32_t LargestPattern16(DType dt) {
  return dt == DType::kF16 ? 0x7bffu : 0x7f7fu;
}

// The largest value v of dt with m * v <= MaxOf(dt): exhaustive over the
// 16-bit dtypes, a float walk for F32 (products exact in double).
float LargestFittingSearch(int m, DType dt) {
  const double limit = MaxOf(dt);
  if (dt != DType::kF32) {
    float best = 0.0f;
    for (uint32_t b = 1; b <= LargestPattern16(dt); ++b) {
      const float v = Value16(b, dt);
      if (static_cast<double>(v) * m <= limit) best = v;
    }
    return best;
  }
  float v = static_cast<float>(limit / m);
  while (static_cast<double>(v) * m > limit) v = std::nextafter(v, 0.0f);
  while (static_cast<double>(std::nextafter(v, F32Max())) * m <= limit)
    v = std::nextafter(v, F32Max());
  return v;
}

// The same, searched once per (m, dtype).
float LargestFitting(int m, DType dt) {
  static std::map<std::pair<int, DType>, float> memo;
  const auto key = std::make_pair(m, dt);
  auto it = memo.find(key);
  if (it == memo.end())
    it = memo.emplace(key, LargestFittingSearch(m, dt)).first;
  return it->second;
}

// The smallest value of dt that is >= v (v > 0), at least the floor the
// library keeps (2^-24 for F16, 2^-126 for BF16 and F32); 0 when none is
// finite. Binary search over the 16-bit patterns; nextafter for F32.
float PlainRoundUp(double v, DType dt) {
  if (dt != DType::kF32) {
    uint32_t lo = dt == DType::kF16 ? 1u : 0x80u, hi = LargestPattern16(dt);
    if (static_cast<double>(Value16(hi, dt)) < v) return 0.0f;
    while (lo < hi) {
      const uint32_t mid = (lo + hi) / 2;
      if (static_cast<double>(Value16(mid, dt)) >= v) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return Value16(lo, dt);
  }
  float f = static_cast<float>(v);
  if (std::isinf(f)) return 0.0f;
  while (static_cast<double>(f) < v) f = std::nextafter(f, F32Max());
  while (f > 0.0f && static_cast<double>(std::nextafter(f, 0.0f)) >= v)
    f = std::nextafter(f, 0.0f);
  if (std::isinf(f)) return 0.0f;
  return std::max(f, std::numeric_limits<float>::min());
}

// A group's parameters as the rule of common.h defines them, derived here
// from the elements with this file's own searches.
struct Expected {
  bool overflow = false;
  bool capped = false;
  float scale = 0.0f;
  int zp = 0;
};

// The code and decoding error of x for an asymmetric (s, zp), with the
// kernels' float operations: round x * (1/s) to nearest even, add zp, clamp.
double AsymError(float x, float s, int zp, int qmax) {
  const float inv = 1.0f / s;
  const float t = x * inv;
  float q = std::nearbyint(t) + static_cast<float>(zp);
  q = std::min(std::max(q, 0.0f), static_cast<float>(qmax));
  return std::fabs((static_cast<double>(q) - zp) * s - x);
}

Expected ExpectedParams(float lo, float hi, const QuantScheme& s) {
  Expected e;
  const int qmax = QMax(s);
  const DType sd = s.scale_dtype;
  const double limit = MaxOf(sd);
  if (s.symmetric) {
    const double a =
        std::max(-static_cast<double>(lo), static_cast<double>(hi));
    if (a == 0) return e;
    const float up = PlainRoundUp(a / qmax, sd);
    if (up == 0.0f) {
      e.overflow = true;
      return e;
    }
    e.scale = up;
    if (static_cast<double>(up) * qmax > limit) {
      e.capped = true;
      e.scale = LargestFitting(qmax, sd);
      e.overflow = a > limit + e.scale;
    }
    return e;
  }
  const float l = std::min(lo, 0.0f), h = std::max(hi, 0.0f);
  const double range = static_cast<double>(h) - l;
  if (range == 0) return e;
  const float up = PlainRoundUp(range / qmax, sd);
  if (up == 0.0f) {
    e.overflow = true;
    return e;
  }
  const float t = -l * (1.0f / up);
  const int zp = static_cast<int>(
      std::min(std::max(std::nearbyint(t), 0.0f), static_cast<float>(qmax)));
  e.scale = up;
  e.zp = zp;
  if (static_cast<double>(up) * std::max(zp, qmax - zp) <= limit) return e;
  // Capped: the zero point (and its largest fitting scale) whose extremes,
  // taken at most +-limit, decode closest; the first on ties.
  e.capped = true;
  const float lc = static_cast<float>(std::max<double>(l, -limit));
  const float hc = static_cast<float>(std::min<double>(h, limit));
  double best = std::numeric_limits<double>::infinity();
  for (int z = 0; z <= qmax; ++z) {
    const int m = std::max(z, qmax - z);
    const float sz =
        static_cast<double>(up) * m > limit ? LargestFitting(m, sd) : up;
    const double err =
        std::max(AsymError(lc, sz, z, qmax), AsymError(hc, sz, z, qmax));
    if (err < best) {
      best = err;
      e.scale = sz;
      e.zp = z;
    }
  }
  e.overflow = best > e.scale ||
               std::max(-static_cast<double>(l), static_cast<double>(h)) >
                   limit + e.scale;
  return e;
}

// ---------------------------------------------------------------------------
// Data: one big value B per matrix, each row one pattern around it.

// The big values an input dtype can hold exactly: F16's, BF16's and F32's
// largest, 65536 (BF16's rounding of 65504), and values around the F16
// scale limits (beyond it by less and by more than a step).
std::vector<float> BigValues(DType in) {
  std::vector<float> all = {F16Max(), 65536.0f, Bf16Max(), F32Max(),
                            65984.0f, 70000.0f, 1.0e6f};
  std::vector<float> out;
  for (float v : all)
    if (RoundToDType(v, in) == v) out.push_back(v);
  return out;
}

float NextDownIn(float v, DType dt) {
  float d = std::nextafter(v, 0.0f);
  while (RoundToDType(d, dt) != d) d = std::nextafter(d, 0.0f);
  return RoundToDType(d, dt) == d ? d : v;
}

constexpr int kPatterns = 14;

// Row r of a matrix built around big: pattern r % kPatterns.
std::vector<float> AdversarialRows(float big, int64_t rows, int64_t cols,
                                   DType in, Rng& rng) {
  std::vector<float> v(static_cast<size_t>(rows * cols));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  std::uniform_int_distribution<int64_t> col(0, cols - 1);
  std::uniform_int_distribution<int> tiny_k(-1000, 1000);
  const float below = NextDownIn(big, in);
  for (int64_t r = 0; r < rows; ++r) {
    float* x = v.data() + r * cols;
    const int pattern = static_cast<int>(r % kPatterns);
    for (int64_t c = 0; c < cols; ++c) x[c] = normal(rng);
    switch (pattern) {
      case 0:  // one +B among ordinary values
        x[col(rng)] = big;
        break;
      case 1:  // one -B
        x[col(rng)] = -big;
        break;
      case 2:  // +-B alternating
        for (int64_t c = 0; c < cols; ++c) x[c] = c % 2 ? -big : big;
        break;
      case 3:  // B in every element
        for (int64_t c = 0; c < cols; ++c) x[c] = big;
        break;
      case 4:  // -B in every element
        for (int64_t c = 0; c < cols; ++c) x[c] = -big;
        break;
      case 5: {  // all equal, an ordinary value
        const float k = 3.0f * unit(rng) - 1.5f;
        for (int64_t c = 0; c < cols; ++c) x[c] = k;
        break;
      }
      case 6:  // +B among tiny values (F16 subnormal grid)
      case 7:  // -B and +B among tiny values
        for (int64_t c = 0; c < cols; ++c)
          x[c] = static_cast<float>(tiny_k(rng)) * 5.9604644775390625e-8f;
        x[col(rng)] = big;
        if (pattern == 7) x[col(rng)] = -big;
        break;
      case 8:  // [0, B], B present
        for (int64_t c = 0; c < cols; ++c) x[c] = big * unit(rng);
        x[col(rng)] = big;
        break;
      case 9:  // [-B, 0], -B present
        for (int64_t c = 0; c < cols; ++c) x[c] = -big * unit(rng);
        x[col(rng)] = -big;
        break;
      case 10:  // -B / 2 .. B: asymmetric zero point near a third
        for (int64_t c = 0; c < cols; ++c)
          x[c] = big * (1.5f * unit(rng) - 0.5f);
        x[col(rng)] = big;
        x[col(rng)] = -big / 2;
        break;
      case 11:  // -B .. B / 3
        for (int64_t c = 0; c < cols; ++c)
          x[c] = big * (unit(rng) * 4.0f / 3.0f - 1.0f);
        x[col(rng)] = -big;
        break;
      case 12:  // B, the next value below it, -B
        x[col(rng)] = big;
        x[col(rng)] = below;
        x[col(rng)] = -below;
        break;
      default:  // the value below B in every element
        for (int64_t c = 0; c < cols; ++c) x[c] = below;
        break;
    }
  }
  for (float& e : v) e = RoundToDType(e, in);  // what the kernel sees
  return v;
}

std::vector<int64_t> ColsFor(const QuantScheme& s) {
  // Grouped: 32 groups of 32 (two AVX batches of 16) down to 4 of 256.
  // Whole-row: a partial 32-column step, and an odd INT4 row.
  if (s.group_size != 0) return {1024};
  return {200, 257};
}

// ---------------------------------------------------------------------------

class ScaleCapTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaSupported(GetParam())) GTEST_SKIP() << IsaSkipMessage(GetParam());
  }
};

std::string IsaParamName(const ::testing::TestParamInfo<Isa>& info) {
  return IsaName(info.param);
}

// Checks one successfully quantized matrix against the rule.
void CheckGroups(const InputMatrix& in, const QuantResult& q,
                 const QuantScheme& s) {
  const int qmax = QMax(s);
  const int64_t group = GroupLength(s, in.cols());
  const DType sd = s.scale_dtype;
  const double limit = MaxOf(sd);
  const int code_lo = s.symmetric ? -qmax : 0;
  for (int64_t r = 0; r < in.rows(); ++r) {
    for (int64_t g = 0; g < GroupsPerRow(s, in.cols()); ++g) {
      const int64_t c0 = g * group, c1 = c0 + group;
      float lo = 0.0f, hi = 0.0f;
      for (int64_t c = c0; c < c1; ++c) {
        lo = std::min(lo, in.value(r, c));
        hi = std::max(hi, in.value(r, c));
      }
      const Expected e = ExpectedParams(lo, hi, s);
      const float sc = q.scale(r, g);
      const int zp = s.symmetric ? 0 : q.zero_point(r, g);
      SCOPED_TRACE("row " + std::to_string(r) + ", group " + std::to_string(g) +
                   ": min " + std::to_string(lo) + ", max " +
                   std::to_string(hi) + ", scale " + std::to_string(sc) +
                   ", zero point " + std::to_string(zp));
      ASSERT_FALSE(e.overflow) << "expected kScaleOverflow";
      ASSERT_EQ(sc, e.scale) << (e.capped ? "capped" : "plain round-up");
      ASSERT_EQ(zp, e.zp) << (e.capped ? "capped" : "plain round-up");
      // Every code the format holds decodes to a finite value in the scale
      // dtype: exactly (the bound), in F32 arithmetic rounded to the dtype,
      // and as a loader computes it in the dtype (q - zp cast to it, the
      // product -- exact in F32 for F16 / BF16 operands -- rounded to it).
      for (int code = code_lo; code <= qmax; ++code) {
        const int d = code - zp;
        ASSERT_LE(std::fabs(static_cast<double>(d) * sc), limit)
            << "code " << code;
        const float in_f32 = static_cast<float>(d) * sc;
        ASSERT_TRUE(std::isfinite(in_f32)) << "code " << code;
        ASSERT_TRUE(std::isfinite(RoundToDType(in_f32, sd))) << "code " << code;
        const float d_in_sd = RoundToDType(static_cast<float>(d), sd);
        ASSERT_EQ(d_in_sd, static_cast<float>(d));
        const float loader = RoundToDType(d_in_sd * sc, sd);
        ASSERT_TRUE(std::isfinite(loader)) << "code " << code << " decodes to "
                                           << loader << " in " << DTypeName(sd);
      }
      // Every element, taken at most +-limit (what the dtype can hold at
      // best), within half a step (symmetric) or one step (asymmetric) plus
      // float slack (see properties_test); beyond +-limit by at most a step.
      // The largest magnitudes (the ones the cap clamps) are checked here
      // like every other element.
      const double slack = 4.0 * kU * qmax * sc;
      const double bound = (s.symmetric ? 0.5 : 1.0) * sc + slack;
      for (int64_t c = c0; c < c1; ++c) {
        const int code = q.code(r, c);
        ASSERT_GE(code, code_lo) << "column " << c;
        ASSERT_LE(code, qmax) << "column " << c;
        const double x = in.value(r, c);
        const double xc = std::min(std::max(x, -limit), limit);
        ASSERT_LE(std::fabs(x) - limit, static_cast<double>(sc))
            << "column " << c << ": x=" << x;
        const double err = std::fabs(static_cast<double>(code - zp) * sc - xc);
        ASSERT_LE(err, bound)
            << "column " << c << ": x=" << x << " code " << code
            << (x == lo || x == hi ? " (extreme)" : "");
      }
    }
  }
}

// The first group (row-major) that the rule refuses, or {-1, -1}.
std::pair<int64_t, int64_t> FirstRefused(const InputMatrix& in,
                                         const QuantScheme& s) {
  const int64_t group = GroupLength(s, in.cols());
  for (int64_t r = 0; r < in.rows(); ++r) {
    for (int64_t c0 = 0; c0 < in.cols(); c0 += group) {
      float lo = 0.0f, hi = 0.0f;
      for (int64_t c = c0; c < c0 + group; ++c) {
        lo = std::min(lo, in.value(r, c));
        hi = std::max(hi, in.value(r, c));
      }
      if (ExpectedParams(lo, hi, s).overflow) return {r, c0};
    }
  }
  return {-1, -1};
}

TEST_P(ScaleCapTest, EveryCodeDecodesFinitelyAndPathsAgree) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  const Isa isa = GetParam();
  int ok = 0, refused = 0;
  for (DType sd : AllDTypes()) {
    for (const QuantScheme& s : AllSchemes(sd)) {
      for (DType in_dtype : AllDTypes()) {
        for (float big : BigValues(in_dtype)) {
          for (int64_t cols : ColsFor(s)) {
            const int64_t rows = 2 * kPatterns;
            const InputMatrix in(
                AdversarialRows(big, rows, cols, in_dtype, rng), in_dtype, rows,
                cols, Layout::kPadded);
            SCOPED_TRACE(Describe(s, in_dtype, rows, cols, Layout::kPadded,
                                  DataKind::kF16Extremes, false) +
                         " big=" + std::to_string(big) +
                         " path=" + IsaName(isa));
            const QuantResult q = RunQuantize(in, s, Layout::kPadded, 0x3c,
                                              false, ExecOptions{1, isa});
            const auto [bad_row, bad_col] = FirstRefused(in, s);
            if (bad_row >= 0) {
              ASSERT_EQ(q.status.code(), StatusCode::kScaleOverflow)
                  << q.status.ToString();
              ASSERT_EQ(q.status.row(), bad_row) << q.status.ToString();
              ASSERT_EQ(q.status.col(), bad_col) << q.status.ToString();
              ++refused;
            } else {
              ASSERT_TRUE(q.status.ok()) << q.status.ToString();
              CheckGroups(in, q, s);
              if (HasFailure()) return;
              ++ok;
            }
            // The scalar oracle's bytes, statuses and metric bits on this
            // path at every thread count.
            for (bool metrics : {false, true}) {
              const QuantResult ref =
                  RunQuantize(in, s, Layout::kPadded, 0x5a, metrics, kScalar);
              for (int threads : kThreadCounts) {
                SCOPED_TRACE(std::string("metrics ") +
                             (metrics ? "on" : "off") + ", threads " +
                             std::to_string(threads));
                const QuantResult got =
                    RunQuantize(in, s, Layout::kPadded, 0xc3, metrics,
                                ExecOptions{threads, isa});
                ASSERT_TRUE(SameQuantized(ref, got));
                if (!ref.status.ok() || metrics || threads != 1) continue;
                // Decoding on this path gives the scalar path's bytes too.
                const DequantInput dq(ref, Layout::kPadded);
                const DequantResult dref =
                    RunDequantize(dq.view(), s, rows, cols, sd, Layout::kPadded,
                                  0x5a, kScalar);
                const DequantResult dgot =
                    RunDequantize(dq.view(), s, rows, cols, sd, Layout::kPadded,
                                  0xc3, ExecOptions{1, isa});
                ASSERT_TRUE(SameDequantized(dref, dgot));
              }
            }
          }
        }
      }
    }
  }
  RecordProperty("accepted_matrices", ok);
  RecordProperty("refused_matrices", refused);
  // Both outcomes were exercised.
  EXPECT_GT(ok, 0);
  EXPECT_GT(refused, 0);
}

// The numbers of the defect: with F16 scales a row holding +-65504 used to
// get 516 (INT8) and 9360 (INT4), whose largest codes decode to 65532 and
// 65520, +Inf in F16. The cap gives the largest F16 scales whose largest
// code stays finite, 515.5 and 9352; an all-positive asymmetric INT8 row
// [0, 65504] gets 256.75 (not 257: 255 * 257 = 65535).
TEST_P(ScaleCapTest, F16ExtremesGetTheLargestFittingScale) {
  struct Case {
    QuantScheme scheme;
    bool one_signed;
    float want_scale;
    int want_zp;
  };
  const Case cases[] = {
      {{8, true, 0, DType::kF16}, false, 515.5f, 0},
      {{4, true, 32, DType::kF16}, false, 9352.0f, 0},
      {{4, true, 128, DType::kF16}, false, 9352.0f, 0},
      {{8, false, 0, DType::kF16}, true, 256.75f, 0},
      {{4, false, 32, DType::kF16}, true, 4364.0f, 0},
  };
  for (const Case& k : cases) {
    const int64_t cols = 128;
    std::vector<float> v(cols);
    for (int64_t c = 0; c < cols; ++c)
      v[static_cast<size_t>(c)] = k.one_signed ? (c % 3 ? 65504.0f : 1.0f)
                                               : (c % 2 ? 65504.0f : -65504.0f);
    const InputMatrix in(v, DType::kF16, 1, cols, Layout::kDense);
    SCOPED_TRACE(SchemeName(k.scheme) + " " + IsaName(GetParam()));
    const QuantResult q = RunQuantize(in, k.scheme, Layout::kDense, 0, true,
                                      ExecOptions{1, GetParam()});
    ASSERT_TRUE(q.status.ok()) << q.status.ToString();
    const int qmax = QMax(k.scheme);
    for (int64_t g = 0; g < GroupsPerRow(k.scheme, cols); ++g) {
      EXPECT_EQ(q.scale(0, g), k.want_scale) << "group " << g;
      EXPECT_EQ(q.scale_bits(0, g), FloatToHalf(k.want_scale));
      if (!k.scheme.symmetric) {
        EXPECT_EQ(q.zero_point(0, g), k.want_zp);
      }
    }
    // 65504 (column 1) decodes to the largest code times the scale: finite
    // in F16 and within a step.
    const int top = q.code(0, 1);
    EXPECT_EQ(top, qmax);
    const float decoded = static_cast<float>(top - k.want_zp) * k.want_scale;
    const float in_f16 = HalfToFloat(FloatToHalf(decoded));
    EXPECT_TRUE(std::isfinite(in_f16)) << decoded;
    EXPECT_LE(65504.0f - decoded, k.want_scale);
    // nibble's own decoding to F16 gives that value (no saturation involved).
    const DequantResult d =
        RunDequantize(q.const_view(), k.scheme, 1, cols, DType::kF16,
                      Layout::kDense, 0, ExecOptions{1, GetParam()});
    ASSERT_TRUE(d.status.ok()) << d.status.ToString();
    EXPECT_EQ(d.value(0, 1), in_f16);
  }
}

// The edges, from F32 input with F16 / BF16 / F32 scales (S is the largest
// scale of the dtype with qmax * S <= its largest finite value):
//  - absmax = qmax * S is the plain round-up, exactly on the grid: code
//    -qmax, no error;
//  - the next float above is capped back to S (the plain round-up would be
//    one step of the dtype more) and its code clamps to -qmax;
//  - the dtype's largest value plus S is still accepted (beyond what the
//    dtype holds by one step); the next float above it is kScaleOverflow
//    naming the row and the group's first column;
//  - FLT_MAX: accepted with S where it is within that, refused otherwise.
// Edges that F32 cannot hold exactly are left out.
TEST_P(ScaleCapTest, CapAndOverflowEdgesAreExact) {
  for (DType sd : AllDTypes()) {
    for (const QuantScheme& s : AllSchemes(sd)) {
      if (!s.symmetric) continue;
      const int qmax = QMax(s);
      const float cap = LargestFitting(qmax, sd);
      const double on_grid = static_cast<double>(cap) * qmax;
      const double one_step = MaxOf(sd) + static_cast<double>(cap);
      struct Edge {
        double value;
        bool ok;
        const char* what;
      };
      std::vector<Edge> edges;
      auto add = [&](double v, bool ok, const char* what) {
        if (v <= F32Max() && static_cast<double>(static_cast<float>(v)) == v)
          edges.push_back({v, ok, what});
      };
      add(on_grid, true, "qmax * S");
      if (on_grid < F32Max())
        add(std::nextafter(static_cast<float>(on_grid), F32Max()), true,
            "just above qmax * S");
      add(one_step, true, "max + S");
      if (one_step < F32Max())
        add(std::nextafter(static_cast<float>(one_step), F32Max()), false,
            "just above max + S");
      add(F32Max(), F32Max() <= one_step, "FLT_MAX");
      // F32 scales: qmax * S is rarely an F32 value and (qmax + 1) * S is
      // beyond F32, which leaves FLT_MAX itself.
      ASSERT_GE(edges.size(), sd == DType::kF32 ? 1u : 3u) << DTypeName(sd);
      for (const Edge& edge : edges) {
        const float top = static_cast<float>(edge.value);
        const int64_t rows = 3, cols = s.group_size == 0 ? 77 : 256;
        const int64_t group = GroupLength(s, cols);
        std::vector<float> v(static_cast<size_t>(rows * cols), 1.0f);
        v[static_cast<size_t>(cols + cols - 1)] = -top;
        const InputMatrix in(v, DType::kF32, rows, cols, Layout::kDense);
        SCOPED_TRACE(SchemeName(s) + " scales=" + DTypeName(sd) + " " +
                     edge.what + " = " + std::to_string(edge.value) + " " +
                     IsaName(GetParam()));
        const QuantResult q = RunQuantize(in, s, Layout::kDense, 0, false,
                                          ExecOptions{1, GetParam()});
        if (!edge.ok) {
          ASSERT_EQ(q.status.code(), StatusCode::kScaleOverflow)
              << q.status.ToString();
          ASSERT_EQ(q.status.row(), 1);
          ASSERT_EQ(q.status.col(), (cols - 1) / group * group);
          continue;
        }
        ASSERT_TRUE(q.status.ok()) << q.status.ToString();
        const int64_t g = (cols - 1) / group;
        ASSERT_EQ(q.scale(1, g), cap);
        ASSERT_EQ(q.code(1, cols - 1), -qmax);
        const double err = static_cast<double>(top) - on_grid;
        ASSERT_LE(err, 0.5 * cap + (top > MaxOf(sd) ? top - MaxOf(sd) : 0.0));
        if (edge.value == on_grid) {
          ASSERT_EQ(err, 0.0);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, ScaleCapTest,
                         ::testing::ValuesIn(ConcreteIsas()), IsaParamName);

}  // namespace
}  // namespace nibble::test
