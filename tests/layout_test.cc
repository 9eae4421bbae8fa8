// Packed layouts (nibble/scheme.h), checked byte by byte on every path:
// INT4 nibble order, the INT4 symmetric code range, the compressed-tensors
// pack-quantized word view, scales rounded up to their dtype, and the bytes
// of each scale dtype.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "nibble/nibble.h"
#include "test_util.h"

namespace nibble::test {
namespace {

class LayoutTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaSupported(GetParam())) GTEST_SKIP() << IsaSkipMessage(GetParam());
  }
  ExecOptions options() const { return ExecOptions{1, GetParam()}; }
};

std::string IsaParamName(const ::testing::TestParamInfo<Isa>& info) {
  return IsaName(info.param);
}

// Integer values k with a unit scale: each group holds its extreme(s) so
// the derived scale is exactly 1 and the stored code is k (+ 8 symmetric).
std::vector<float> UnitGrid(const QuantScheme& s, int64_t rows, int64_t cols,
                            Rng& rng) {
  const int64_t group = GroupLength(s, cols);
  std::uniform_int_distribution<int> k(s.symmetric ? -7 : 0,
                                       s.symmetric ? 7 : 15);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (auto& x : v) x = static_cast<float>(k(rng));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g0 = 0; g0 < cols; g0 += group) {
      v[static_cast<size_t>(r * cols + g0)] = s.symmetric ? -7.0f : 0.0f;
      v[static_cast<size_t>(r * cols + g0 + group - 1)] =
          s.symmetric ? 7.0f : 15.0f;
    }
  }
  return v;
}

uint32_t ExpectedNibble(const QuantScheme& s, float x) {
  return static_cast<uint32_t>(static_cast<int>(x) + (s.symmetric ? 8 : 0));
}

TEST_P(LayoutTest, Int4NibbleOrderLowNibbleFirst) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  for (bool sym : {true, false}) {
    for (int64_t g : {32, 64, 128, 256}) {
      const QuantScheme s{4, sym, g, DType::kF16};
      const int64_t rows = 3, cols = 512;
      SCOPED_TRACE(SchemeName(s));
      const std::vector<float> v = UnitGrid(s, rows, cols, rng);
      const InputMatrix in(v, DType::kF32, rows, cols, Layout::kDense);
      const QuantResult q =
          RunQuantize(in, s, Layout::kDense, 0, false, options());
      ASSERT_TRUE(q.status.ok()) << q.status.ToString();
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* row = q.codes->data() + r * q.shape.codes_stride;
        for (int64_t b = 0; b < cols / 2; ++b) {
          const uint32_t lo =
              ExpectedNibble(s, v[static_cast<size_t>(r * cols + 2 * b)]);
          const uint32_t hi =
              ExpectedNibble(s, v[static_cast<size_t>(r * cols + 2 * b + 1)]);
          ASSERT_EQ(row[b], lo | (hi << 4))
              << "byte " << b << " of row " << r << " should hold element "
              << 2 * b << " in its low nibble and " << 2 * b + 1
              << " in its high";
        }
      }
    }
  }
}

TEST_P(LayoutTest, Int4SymmetricCodesAreOneToFifteen) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  for (DType sd : AllDTypes()) {
    for (const QuantScheme& s : AllSchemes(sd)) {
      if (s.bits != 4 || !s.symmetric) continue;
      const int64_t rows = 9, cols = s.group_size == 0 ? 513 : 512;
      for (DataKind kind : AllDataKinds()) {
        SCOPED_TRACE(
            Describe(s, DType::kBF16, rows, cols, Layout::kDense, kind, false));
        const InputMatrix in(Generate(kind, rows, cols, s, rng), DType::kBF16,
                             rows, cols, Layout::kDense);
        const QuantResult q =
            RunQuantize(in, s, Layout::kDense, 0, false, options());
        ASSERT_TRUE(q.status.ok()) << q.status.ToString();
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t b = 0; b < CodeBytesPerRow(s, cols); ++b) {
            const uint8_t byte = q.codes->data()[r * q.shape.codes_stride + b];
            ASSERT_GE(byte & 0xf, 1) << "row " << r << ", byte " << b;
            ASSERT_GE(byte >> 4, 1) << "row " << r << ", byte " << b;
          }
        }
      }
    }
  }
}

// Read as little-endian 32-bit words, the code bytes are compressed-tensors'
// pack-quantized layout: element 8j + i at bits 4i of word j.
TEST_P(LayoutTest, Int4CodesAsLittleEndianWordsArePackQuantized) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  for (bool sym : {true, false}) {
    for (int64_t g : {32, 128}) {
      const QuantScheme s{4, sym, g, DType::kBF16};
      const int64_t rows = 4, cols = 256;
      SCOPED_TRACE(SchemeName(s));
      const std::vector<float> v = UnitGrid(s, rows, cols, rng);
      const InputMatrix in(v, DType::kF16, rows, cols, Layout::kDense);
      const QuantResult q =
          RunQuantize(in, s, Layout::kDense, 0, false, options());
      ASSERT_TRUE(q.status.ok()) << q.status.ToString();
      for (int64_t r = 0; r < rows; ++r) {
        const uint8_t* b = q.codes->data() + r * q.shape.codes_stride;
        for (int64_t j = 0; j < cols / 8; ++j) {
          // Assemble the word explicitly: independent of the host's order.
          const uint32_t word = static_cast<uint32_t>(b[4 * j]) |
                                static_cast<uint32_t>(b[4 * j + 1]) << 8 |
                                static_cast<uint32_t>(b[4 * j + 2]) << 16 |
                                static_cast<uint32_t>(b[4 * j + 3]) << 24;
          for (int i = 0; i < 8; ++i) {
            ASSERT_EQ(
                (word >> (4 * i)) & 0xfu,
                ExpectedNibble(s, v[static_cast<size_t>(r * cols + 8 * j + i)]))
                << "row " << r << ", word " << j << ", element " << 8 * j + i;
          }
        }
      }
    }
  }
}

// The next representable value of a scale dtype below a positive `s`.
double PreviousScale(float s, DType dt) {
  switch (dt) {
    case DType::kF16:
      return HalfToFloat(static_cast<uint16_t>(FloatToHalf(s) - 1));
    case DType::kBF16:
      return Bf16ToFloat(static_cast<uint16_t>(FloatToBf16(s) - 1));
    case DType::kF32:
      break;
  }
  return std::nextafter(s, 0.0f);
}

// scale * qmax >= range (absmax, or max(hi,0) - min(lo,0)), and the next
// smaller value of the scale dtype would not cover it (except at the floor:
// 2^-24 for F16, 2^-126 for BF16/F32, below which 1/scale would overflow).
// Groups at the top of the scale dtype (+-65504 with F16 scales) instead get
// the scale cap of lib/src/kernels/common.h (scale_cap_test pins its
// values): a smaller scale whose every code stays finite in the dtype.
TEST_P(LayoutTest, ScalesAreRoundedUpToTheScaleDtype) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  for (DType sd : AllDTypes()) {
    const double floor =
        sd == DType::kF16 ? std::ldexp(1.0, -24) : std::ldexp(1.0, -126);
    for (const QuantScheme& s : AllSchemes(sd)) {
      const int64_t rows = 8, cols = s.group_size == 0 ? 300 : 512;
      const int64_t group = GroupLength(s, cols);
      const int qmax = QMax(s);
      for (DType in_dtype : AllDTypes()) {
        for (DataKind kind : {DataKind::kGaussian, DataKind::kHeavyTailed,
                              DataKind::kF16Subnormal, DataKind::kF16Extremes,
                              DataKind::kTiny, DataKind::kConstant}) {
          SCOPED_TRACE(
              Describe(s, in_dtype, rows, cols, Layout::kDense, kind, false));
          const InputMatrix in(Generate(kind, rows, cols, s, rng), in_dtype,
                               rows, cols, Layout::kDense);
          const QuantResult q =
              RunQuantize(in, s, Layout::kDense, 0, false, options());
          ASSERT_TRUE(q.status.ok()) << q.status.ToString();
          for (int64_t r = 0; r < rows; ++r) {
            for (int64_t g = 0; g < GroupsPerRow(s, cols); ++g) {
              double lo = 0, hi = 0;
              for (int64_t c = g * group; c < (g + 1) * group; ++c) {
                lo = std::min(lo, static_cast<double>(in.value(r, c)));
                hi = std::max(hi, static_cast<double>(in.value(r, c)));
              }
              const double range = s.symmetric ? std::max(-lo, hi) : hi - lo;
              const float sc = q.scale(r, g);
              if (range == 0) {
                ASSERT_EQ(q.scale_bits(r, g), 0u);
                continue;
              }
              const double top = sd == DType::kF16    ? 65504.0
                                 : sd == DType::kBF16 ? Bf16ToFloat(0x7f7f)
                                                      : 3.4028234663852886e38;
              if (range > 0.99 * top) {
                // The cap's domain (it needs qmax * scale > top, so a range
                // above top / (1 + 2^-7)): every code (q - zp) * scale
                // within the dtype, the rounded-up scale where that allows.
                const int zp = s.symmetric ? 0 : q.zero_point(r, g);
                ASSERT_LE(static_cast<double>(sc) *
                              (s.symmetric ? qmax : std::max(zp, qmax - zp)),
                          top)
                    << "row " << r << ", group " << g << ": scale " << sc;
                continue;
              }
              // Exact products: scale has <= 24 significant bits, qmax <= 8.
              ASSERT_GE(static_cast<double>(sc) * qmax, range)
                  << "row " << r << ", group " << g << ": scale " << sc
                  << " too small for range " << range;
              if (sc > floor)
                ASSERT_LT(PreviousScale(sc, sd) * qmax, range)
                    << "row " << r << ", group " << g << ": scale " << sc
                    << " is not the smallest " << DTypeName(sd) << " covering "
                    << range;
              else
                ASSERT_EQ(static_cast<double>(sc), floor);
              if (!s.symmetric) {
                // zp = round(-lo / scale), within the code range.
                const int zp = q.zero_point(r, g);
                // Slack: -lo * inv is a float product (<= 2 ulps of qmax).
                ASSERT_LE(std::fabs(zp - (-lo / sc)),
                          0.5 + 4.0 * std::ldexp(1.0, -24) * qmax)
                    << "zero point of row " << r << ", group " << g;
              }
            }
          }
        }
      }
    }
  }
}

// The raw bytes of each scale dtype, little-endian: 0.25 is 00 34 (F16),
// 80 3e (BF16), 00 00 80 3e (F32); and 1/7 rounds up to the smallest value
// of the dtype that is >= 1/7 (found here by search, not by formula).
TEST_P(LayoutTest, ScaleDtypeStorageBytes) {
  struct Case {
    DType dtype;
    std::vector<uint8_t> quarter;
  };
  const Case cases[] = {{DType::kF16, {0x00, 0x34}},
                        {DType::kBF16, {0x80, 0x3e}},
                        {DType::kF32, {0x00, 0x00, 0x80, 0x3e}}};
  for (const Case& k : cases) {
    SCOPED_TRACE(DTypeName(k.dtype));
    const QuantScheme s{4, true, 32, k.dtype};
    // Row 0: absmax 1.75 -> 0.25 exactly; row 1: absmax 1 -> 1/7 rounded up.
    std::vector<float> v(64, 0.5f);
    v[5] = -1.75f;
    for (int c = 33; c < 64; ++c) v[static_cast<size_t>(c)] = 0.125f;
    v[32 + 9] = 1.0f;
    const InputMatrix in(v, DType::kF32, 2, 32, Layout::kDense);
    const QuantResult q =
        RunQuantize(in, s, Layout::kPadded, 0xee, false, options());
    ASSERT_TRUE(q.status.ok()) << q.status.ToString();
    const size_t ss = DTypeSize(k.dtype);
    ASSERT_EQ(std::memcmp(q.scales->data(), k.quarter.data(), ss), 0)
        << "scale 0.25 stored wrongly";
    ASSERT_TRUE(q.scales->Untouched(
        "scales", 2, q.shape.scales_stride * static_cast<int64_t>(ss),
        static_cast<int64_t>(ss)));
    // Smallest value of the dtype >= 1/7, by exhaustive search / nextafter.
    const double seventh = 1.0 / 7.0;
    double want = 0;
    if (k.dtype == DType::kF32) {
      float f = static_cast<float>(seventh);
      while (static_cast<double>(f) < seventh) f = std::nextafter(f, 1.0f);
      while (static_cast<double>(std::nextafter(f, 0.0f)) >= seventh)
        f = std::nextafter(f, 0.0f);
      want = f;
    } else {
      want = 1e30;
      for (uint32_t b = 0; b < 0x7c00u; ++b) {
        const double d = k.dtype == DType::kF16
                             ? HalfToFloat(static_cast<uint16_t>(b))
                             : Bf16ToFloat(static_cast<uint16_t>(b));
        if (d >= seventh && d < want) want = d;
      }
    }
    EXPECT_EQ(static_cast<double>(q.scale(1, 0)), want);
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, LayoutTest,
                         ::testing::ValuesIn(ConcreteIsas()), IsaParamName);

}  // namespace
}  // namespace nibble::test
