// GGML's Q8_0, Q4_0 and Q4_1 on every path against an independent
// transcription of ggml's reference quantizers and dequantizers
// (quantize_row_q8_0_ref / _q4_0_ref / _q4_1_ref, dequantize_row_q8_0 /
// _q4_0 / _q4_1 in ggml-quants.c), written here block by block from ggml's
// rules, not from nibble's kernels; the block layout (write, read, round
// trip); hand-computed blocks for the rules that surprise (ties, signed zeros,
// subnormal input); and the size checks. Byte for byte, no tolerance. This
// file is compiled with -ffp-contract=off, like ggml's reference is meant to
// be.
#include "nibble/ggml_blocks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "nibble/nibble.h"
#include "test_util.h"

namespace nibble::test {
namespace {

// ---------------------------------------------------------------------------
// The reference: ggml-quants.c's loops, producing block bytes.

constexpr int kQK = 32;

void PutF16(float f, uint8_t* p) {
  const uint16_t h = FloatToHalf(f);  // GGML_FP32_TO_FP16: nearest even
  p[0] = static_cast<uint8_t>(h & 0xff);
  p[1] = static_cast<uint8_t>(h >> 8);
}

float GetF16(const uint8_t* p) {
  return HalfToFloat(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

// ggml's implicit float -> int8_t conversion as x86 compilers emit it
// (CVTTSS2SI, then the low byte): truncation, and 0 for a non-finite value,
// which only x * Inf produces (a block whose d is below 2^-128).
int8_t ToInt8(float v) {
  if (!std::isfinite(v)) return 0;
  return static_cast<int8_t>(static_cast<int>(v));
}

float Max(float a, float b) { return a > b ? a : b; }  // ggml's MAX
int Min(int a, int b) { return a < b ? a : b; }        // ggml's MIN

void RefQuantizeRowQ8_0(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK; ++i, y += 34) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; j++) {
      const float v = x[i * kQK + j];
      amax = Max(amax, std::fabs(v));
    }
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    PutF16(d, y);
    for (int j = 0; j < kQK; ++j) {
      const float x0 = x[i * kQK + j] * id;
      y[2 + j] = static_cast<uint8_t>(ToInt8(std::roundf(x0)));
    }
  }
}

void RefQuantizeRowQ4_0(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK; ++i, y += 18) {
    float amax = 0.0f;
    float max = 0.0f;
    for (int j = 0; j < kQK; j++) {
      const float v = x[i * kQK + j];
      if (amax < std::fabs(v)) {
        amax = std::fabs(v);
        max = v;
      }
    }
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    PutF16(d, y);
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = x[i * kQK + 0 + j] * id;
      const float x1 = x[i * kQK + kQK / 2 + j] * id;
      const uint8_t xi0 = static_cast<uint8_t>(Min(15, ToInt8(x0 + 8.5f)));
      const uint8_t xi1 = static_cast<uint8_t>(Min(15, ToInt8(x1 + 8.5f)));
      y[2 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void RefQuantizeRowQ4_1(const float* x, uint8_t* y, int64_t k) {
  for (int64_t i = 0; i < k / kQK; ++i, y += 20) {
    float min = 3.40282347e+38f;  // FLT_MAX
    float max = -3.40282347e+38f;
    for (int j = 0; j < kQK; j++) {
      const float v = x[i * kQK + j];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    PutF16(d, y);
    PutF16(min, y + 2);
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = (x[i * kQK + 0 + j] - min) * id;
      const float x1 = (x[i * kQK + kQK / 2 + j] - min) * id;
      const uint8_t xi0 = static_cast<uint8_t>(Min(15, ToInt8(x0 + 0.5f)));
      const uint8_t xi1 = static_cast<uint8_t>(Min(15, ToInt8(x1 + 0.5f)));
      y[4 + j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void RefDequantizeRow(const QuantScheme& s, const uint8_t* y, float* x,
                      int64_t k) {
  const int64_t block = GgmlBlockBytes(s);
  for (int64_t i = 0; i < k / kQK; ++i, y += block) {
    const float d = GetF16(y);
    if (s.bits == 8) {
      for (int j = 0; j < kQK; ++j)
        x[i * kQK + j] = static_cast<int8_t>(y[2 + j]) * d;
    } else if (s.symmetric) {
      for (int j = 0; j < kQK / 2; ++j) {
        const int x0 = (y[2 + j] & 0x0F) - 8;
        const int x1 = (y[2 + j] >> 4) - 8;
        x[i * kQK + j + 0] = x0 * d;
        x[i * kQK + j + kQK / 2] = x1 * d;
      }
    } else {
      const float m = GetF16(y + 2);
      for (int j = 0; j < kQK / 2; ++j) {
        const int x0 = (y[4 + j] & 0x0F);
        const int x1 = (y[4 + j] >> 4);
        x[i * kQK + j + 0] = x0 * d + m;
        x[i * kQK + j + kQK / 2] = x1 * d + m;
      }
    }
  }
}

std::vector<uint8_t> RefQuantize(const QuantScheme& s,
                                 const std::vector<float>& x, int64_t rows,
                                 int64_t cols) {
  std::vector<uint8_t> out(
      static_cast<size_t>(rows * cols / kQK * GgmlBlockBytes(s)));
  const int64_t row_bytes = cols / kQK * GgmlBlockBytes(s);
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * cols;
    uint8_t* yr = out.data() + r * row_bytes;
    if (s.bits == 8) {
      RefQuantizeRowQ8_0(xr, yr, cols);
    } else if (s.symmetric) {
      RefQuantizeRowQ4_0(xr, yr, cols);
    } else {
      RefQuantizeRowQ4_1(xr, yr, cols);
    }
  }
  return out;
}

// First differing block, or success.
::testing::AssertionResult SameBlocks(const QuantScheme& s,
                                      const std::vector<uint8_t>& want,
                                      const std::vector<uint8_t>& got,
                                      int64_t cols) {
  if (want.size() != got.size())
    return ::testing::AssertionFailure()
           << "sizes " << want.size() << " vs " << got.size();
  const size_t block = static_cast<size_t>(GgmlBlockBytes(s));
  for (size_t b = 0; b * block < want.size(); ++b) {
    if (std::memcmp(want.data() + b * block, got.data() + b * block, block) ==
        0)
      continue;
    std::string w, g;
    char buf[4];
    for (size_t i = 0; i < block; ++i) {
      std::snprintf(buf, sizeof(buf), "%02x", want[b * block + i]);
      w += buf;
      std::snprintf(buf, sizeof(buf), "%02x", got[b * block + i]);
      g += buf;
    }
    const int64_t per_row = cols / kQK;
    return ::testing::AssertionFailure()
           << "block " << b << " (row " << static_cast<int64_t>(b) / per_row
           << ", columns from " << static_cast<int64_t>(b) % per_row * kQK
           << ") differs:\n  ggml   " << w << "\n  nibble " << g;
  }
  return ::testing::AssertionSuccess();
}

class GgmlReferenceTest : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    if (!IsaSupported(GetParam())) GTEST_SKIP() << IsaSkipMessage(GetParam());
  }
};

std::string IsaParamName(const ::testing::TestParamInfo<Isa>& info) {
  return IsaName(info.param);
}

struct Shape {
  int64_t rows, cols;
};

TEST_P(GgmlReferenceTest, QuantizeMatchesGgmlReference) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  const Shape shapes[] = {{1, 32}, {3, 96}, {7, 800}, {2, 4096}};
  int64_t blocks = 0;
  for (const QuantScheme& s : GgmlSchemes()) {
    for (DType in_dtype : AllDTypes()) {
      for (const Shape& sh : shapes) {
        for (DataKind kind : EquivalenceDataKinds()) {
          std::vector<float> values = Generate(kind, sh.rows, sh.cols, s, rng);
          if (HasOffsets(s) && in_dtype == DType::kBF16) {
            // BF16 rounds -65504 to -65536: ggml would store m = -Inf where
            // nibble refuses (errors_test); halve the data.
            for (float& v : values) v *= 0.5f;
          }
          // The reference sees what the kernel sees: values rounded to the
          // input dtype, converted exactly to float (as gguf-py does).
          const InputMatrix in(values, in_dtype, sh.rows, sh.cols,
                               Layout::kDense);
          std::vector<float> x(values.size());
          for (int64_t r = 0; r < sh.rows; ++r)
            for (int64_t c = 0; c < sh.cols; ++c)
              x[static_cast<size_t>(r * sh.cols + c)] = in.value(r, c);
          const std::vector<uint8_t> want = RefQuantize(s, x, sh.rows, sh.cols);
          for (int threads : {1, 3}) {
            for (bool metrics : {false, true}) {
              SCOPED_TRACE(Describe(s, in_dtype, sh.rows, sh.cols,
                                    Layout::kDense, kind, metrics) +
                           " threads=" + std::to_string(threads));
              std::vector<uint8_t> got(want.size(), 0xa5);
              ErrorSums sums;
              const Status st = QuantizeToGgmlBlocks(
                  in.view(), s, got.data(), got.size(),
                  metrics ? &sums : nullptr, ExecOptions{threads, GetParam()});
              ASSERT_TRUE(st.ok()) << st.ToString();
              ASSERT_TRUE(SameBlocks(s, want, got, sh.cols));
            }
          }
          blocks += static_cast<int64_t>(want.size()) / GgmlBlockBytes(s);
        }
      }
    }
  }
  RecordProperty("blocks", static_cast<int>(blocks));
}

// Dequantization of arbitrary blocks (any finite d and m, every nibble and
// int8 value) to F32 is ggml's dequantize_row_*, bit for bit; to F16 / BF16
// it is that value rounded to nearest even, saturated to the finite range.
TEST_P(GgmlReferenceTest, DequantizeMatchesGgmlReference) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  const int64_t rows = 5, cols = 640;
  for (const QuantScheme& s : GgmlSchemes()) {
    int64_t size = 0;
    ASSERT_TRUE(GgmlMatrixBytes(s, rows, cols, &size).ok());
    std::vector<uint8_t> blocks(static_cast<size_t>(size));
    for (auto& b : blocks) b = static_cast<uint8_t>(rng());
    const int64_t block = GgmlBlockBytes(s);
    const int halves = HasOffsets(s) ? 2 : 1;
    for (int64_t i = 0; i < size / block; ++i) {
      for (int h = 0; h < halves; ++h) {
        uint8_t* p = blocks.data() + i * block + 2 * h;
        uint16_t bits = static_cast<uint16_t>(p[0] | (p[1] << 8));
        if ((bits & 0x7fffu) >= 0x7c00u) bits ^= 0x4000u;  // finite
        if (i % 3 == 0)
          bits = FloatToHalf(std::ldexp(1.0f, -static_cast<int>(i % 20)));
        p[0] = static_cast<uint8_t>(bits & 0xff);
        p[1] = static_cast<uint8_t>(bits >> 8);
      }
    }
    std::vector<float> want(static_cast<size_t>(rows * cols));
    for (int64_t r = 0; r < rows; ++r)
      RefDequantizeRow(s, blocks.data() + r * (size / rows),
                       want.data() + r * cols, cols);
    for (DType out : AllDTypes()) {
      SCOPED_TRACE(SchemeName(s) + " to " + DTypeName(out));
      std::vector<uint8_t> got(want.size() * DTypeSize(out));
      const Status st =
          DequantizeGgmlBlocks(blocks.data(), blocks.size(), s,
                               MatrixView{got.data(), out, rows, cols, cols},
                               ExecOptions{2, GetParam()});
      ASSERT_TRUE(st.ok()) << st.ToString();
      for (size_t i = 0; i < want.size(); ++i) {
        float w = want[i];
        if (out == DType::kF16)
          w = std::fmax(-65504.0f, std::fmin(65504.0f, w));
        uint32_t wb = 0, gb = 0;
        if (out == DType::kF32) {
          std::memcpy(&wb, &w, 4);
          std::memcpy(&gb, got.data() + 4 * i, 4);
        } else {
          wb = out == DType::kF16 ? FloatToHalf(w) : FloatToBf16(w);
          std::memcpy(&gb, got.data() + 2 * i, 2);
        }
        ASSERT_EQ(wb, gb) << "element " << i << " (row " << i / cols
                          << ", column " << i % cols << "): ggml " << w;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllPaths, GgmlReferenceTest,
                         ::testing::ValuesIn(ConcreteIsas()), IsaParamName);

// ---------------------------------------------------------------------------
// Hand-computed blocks, on every path.

class GgmlKnownBlocksTest : public GgmlReferenceTest {
 protected:
  // One block (32 values, F32 input) through QuantizeToGgmlBlocks.
  std::vector<uint8_t> Quantize1(const QuantScheme& s,
                                 const std::vector<float>& x) {
    std::vector<uint8_t> out(static_cast<size_t>(GgmlBlockBytes(s)));
    const Status st = QuantizeToGgmlBlocks(
        ConstMatrixView{x.data(), DType::kF32, 1, 32, 32}, s, out.data(),
        out.size(), nullptr, ExecOptions{1, GetParam()});
    EXPECT_TRUE(st.ok()) << st.ToString();
    return out;
  }
};

uint16_t D(const std::vector<uint8_t>& b, int at = 0) {
  return static_cast<uint16_t>(b[at] | (b[at + 1] << 8));
}

TEST_P(GgmlKnownBlocksTest, Q8_0RoundsHalfAwayFromZero) {
  // amax 127: d = 1 exactly, id = 1, so the codes are roundf(x).
  std::vector<float> x(32, 0.0f);
  const float v[] = {127.0f, -127.0f, 0.5f,  -0.5f,       1.5f,
                     -1.5f,  2.5f,    -2.5f, 0.49999997f, -0.49999997f,
                     126.5f, -126.5f, -0.0f};
  const int8_t want[] = {127, -127, 1, -1, 2, -2, 3, -3, 0, 0, 127, -127, 0};
  for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); ++i) x[i] = v[i];
  const std::vector<uint8_t> b = Quantize1(GgmlQ8_0(), x);
  EXPECT_EQ(D(b), 0x3c00);  // 1.0
  for (size_t i = 0; i < sizeof(want); ++i)
    EXPECT_EQ(static_cast<int8_t>(b[2 + i]), want[i]) << "element " << i;
  for (size_t i = sizeof(want); i < 32; ++i) EXPECT_EQ(b[2 + i], 0);
}

TEST_P(GgmlKnownBlocksTest, Q4_0TakesTheFirstLargestMagnitude) {
  std::vector<float> x(32, 0.0f);
  // -8 before +8: max = -8, d = 1, id = 1, code = min(15, trunc(x + 8.5)).
  x[0] = -8.0f;
  x[1] = 8.0f;
  x[2] = 0.5f;    // 9
  x[3] = -0.5f;   // trunc(8.0) = 8
  x[4] = 7.4f;    // trunc(15.9) = 15
  x[16] = -7.5f;  // trunc(1.0) = 1
  x[17] = 3.0f;   // 11
  std::vector<uint8_t> b = Quantize1(GgmlQ4_0(), x);
  EXPECT_EQ(D(b), 0x3c00);
  // qs[j] = code(j) | code(j + 16) << 4.
  EXPECT_EQ(b[2 + 0], 0x00 | (1 << 4));
  EXPECT_EQ(b[2 + 1], 0x0f | (11 << 4));  // +8 -> 16.5 -> 16 -> 15
  EXPECT_EQ(b[2 + 2], 0x09 | (8 << 4));
  EXPECT_EQ(b[2 + 3], 0x08 | (8 << 4));
  EXPECT_EQ(b[2 + 4], 0x0f | (8 << 4));
  // +8 first: max = +8, d = -1, id = -1: +8 -> 0.5 -> 0, -8 -> 16.5 -> 15.
  std::swap(x[0], x[1]);
  b = Quantize1(GgmlQ4_0(), x);
  EXPECT_EQ(D(b), 0xbc00);  // -1.0
  EXPECT_EQ(b[2 + 0] & 0x0f, 0);
  EXPECT_EQ(b[2 + 1] & 0x0f, 15);
  EXPECT_EQ(b[2 + 2] & 0x0f, 8);  // -0.5 + 8.5 = 8
}

TEST_P(GgmlKnownBlocksTest, Q4_0AllZeroBlockHasNegativeZeroScale) {
  // ggml starts max at +0.0 and never replaces it: d = +0.0 / -8 = -0.0,
  // whatever the signs of the zeros (gguf-py's numpy port takes the first
  // element instead, and writes +0.0 when it is -0.0: a known divergence;
  // llama.cpp's bytes are these).
  for (float first : {0.0f, -0.0f}) {
    std::vector<float> x(32, 0.0f);
    x[0] = first;
    x[9] = -0.0f;
    const std::vector<uint8_t> b = Quantize1(GgmlQ4_0(), x);
    EXPECT_EQ(D(b), 0x8000);
    for (int j = 0; j < 16; ++j) EXPECT_EQ(b[2 + j], 0x88) << j;
  }
}

TEST_P(GgmlKnownBlocksTest, Q4_1KeepsTheFirstZeroAsMinimum) {
  // min = 2, max = 17: d = 1, m = 2; code = trunc(x - 2 + 0.5).
  std::vector<float> x(32, 10.0f);
  x[0] = 2.0f;
  x[1] = 17.0f;
  x[2] = 2.5f;   // trunc(1.0) = 1
  x[3] = 2.49f;  // trunc(0.99) = 0
  std::vector<uint8_t> b = Quantize1(GgmlQ4_1(), x);
  EXPECT_EQ(D(b), 0x3c00);
  EXPECT_EQ(D(b, 2), 0x4000);  // 2.0
  EXPECT_EQ(b[4 + 0] & 0x0f, 0);
  EXPECT_EQ(b[4 + 1] & 0x0f, 15);
  EXPECT_EQ(b[4 + 2] & 0x0f, 1);
  EXPECT_EQ(b[4 + 3] & 0x0f, 0);
  EXPECT_EQ(b[4 + 4] & 0x0f, 8);
  // Non-negative with zeros of both signs: m is the first zero's sign.
  for (bool negative_first : {false, true}) {
    std::vector<float> z(32, 1.0f);
    z[5] = negative_first ? -0.0f : 0.0f;
    z[20] = negative_first ? 0.0f : -0.0f;
    z[30] = -0.0f;
    b = Quantize1(GgmlQ4_1(), z);
    EXPECT_EQ(D(b, 2), negative_first ? 0x8000 : 0x0000);
    EXPECT_EQ(D(b), FloatToHalf(1.0f / 15));
  }
}

TEST_P(GgmlKnownBlocksTest, SubnormalInputGivesZeroCodes) {
  // d below 2^-128: id = 1/d is +-Inf and x * id is not finite; ggml's x86
  // conversion (and numpy's) makes those codes 0. d is 0 (or -0) as F16.
  std::vector<float> x(32);
  for (int j = 0; j < 32; ++j)
    x[static_cast<size_t>(j)] = std::ldexp(1.0f + j / 32.0f, -140);
  x[7] = -x[7];
  std::vector<uint8_t> b = Quantize1(GgmlQ8_0(), x);
  for (uint8_t v : b) EXPECT_EQ(v, 0);
  b = Quantize1(GgmlQ4_0(), x);  // max > 0: d = -tiny -> F16 -0.0
  EXPECT_EQ(D(b), 0x8000);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[2 + j], 0) << j;
  b = Quantize1(GgmlQ4_1(), x);  // m = F16(-tiny) = -0.0
  EXPECT_EQ(D(b), 0x0000);
  EXPECT_EQ(D(b, 2), 0x8000);
  for (int j = 0; j < 16; ++j) EXPECT_EQ(b[4 + j], 0) << j;
}

INSTANTIATE_TEST_SUITE_P(AllPaths, GgmlKnownBlocksTest,
                         ::testing::ValuesIn(ConcreteIsas()), IsaParamName);

// ---------------------------------------------------------------------------
// Layout.

TEST(GgmlBlocksTest, WriteThenReadIsIdentityForAnyBytes) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  const int64_t rows = 9, cols = 224;
  for (const QuantScheme& s : GgmlSchemes()) {
    SCOPED_TRACE(SchemeName(s));
    QuantizedBuffers q;
    ASSERT_TRUE(q.Allocate(s, rows, cols).ok());
    for (auto& b : q.codes) b = static_cast<uint8_t>(rng());
    for (auto& b : q.scales) b = static_cast<uint8_t>(rng());
    for (auto& b : q.offsets) b = static_cast<uint8_t>(rng());
    int64_t size = 0;
    ASSERT_TRUE(GgmlMatrixBytes(s, rows, cols, &size).ok());
    ASSERT_EQ(size, rows * cols / 32 * GgmlBlockBytes(s));
    std::vector<uint8_t> blocks(static_cast<size_t>(size));
    const ConstQuantizedView cv =
        static_cast<const QuantizedBuffers&>(q).view();
    ASSERT_TRUE(
        WriteGgmlBlocks(cv, s, rows, cols, blocks.data(), blocks.size()).ok());
    // The same bytes with 4 threads.
    std::vector<uint8_t> blocks4(blocks.size());
    ASSERT_TRUE(
        WriteGgmlBlocks(cv, s, rows, cols, blocks4.data(), blocks4.size(), 4)
            .ok());
    EXPECT_EQ(blocks, blocks4);
    // Every block: d (and m) little-endian, then the codes in ggml's order.
    const int64_t block = GgmlBlockBytes(s);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t g = 0; g < cols / 32; ++g) {
        const uint8_t* b = blocks.data() + (r * cols / 32 + g) * block;
        const size_t gi = static_cast<size_t>(r * cols / 32 + g);
        ASSERT_EQ(b[0], q.scales[2 * gi]);
        ASSERT_EQ(b[1], q.scales[2 * gi + 1]);
        const uint8_t* qs = b + 2;
        if (HasOffsets(s)) {
          ASSERT_EQ(b[2], q.offsets[2 * gi]);
          ASSERT_EQ(b[3], q.offsets[2 * gi + 1]);
          qs = b + 4;
        }
        const uint8_t* row_codes =
            q.codes.data() + r * CodeBytesPerRow(s, cols);
        for (int j = 0; j < 32; ++j) {
          const int64_t c = g * 32 + j;
          if (s.bits == 8) {
            ASSERT_EQ(qs[j], row_codes[c]);
          } else {
            const int code = (row_codes[c >> 1] >> ((c & 1) * 4)) & 0xf;
            const int ggml = (qs[j % 16] >> (j < 16 ? 0 : 4)) & 0xf;
            ASSERT_EQ(ggml, code) << "row " << r << " column " << c;
          }
        }
      }
    }
    QuantizedBuffers back;
    ASSERT_TRUE(back.Allocate(s, rows, cols).ok());
    ASSERT_TRUE(ReadGgmlBlocks(blocks.data(), blocks.size(), s, rows, cols,
                               back.view(), 3)
                    .ok());
    EXPECT_EQ(back.codes, q.codes);
    EXPECT_EQ(back.scales, q.scales);
    EXPECT_EQ(back.offsets, q.offsets);
  }
}

TEST(GgmlBlocksTest, SizesAndArgumentErrors) {
  EXPECT_EQ(GgmlBlockBytes(GgmlQ8_0()), 34);
  EXPECT_EQ(GgmlBlockBytes(GgmlQ4_0()), 18);
  EXPECT_EQ(GgmlBlockBytes(GgmlQ4_1()), 20);
  EXPECT_EQ(GgmlBlockBytes(QuantScheme{4, true, 32, DType::kF16}), 0);
  int64_t bytes = -1;
  EXPECT_TRUE(GgmlMatrixBytes(GgmlQ4_1(), 0, 64, &bytes).ok());
  EXPECT_EQ(bytes, 0);
  EXPECT_TRUE(GgmlMatrixBytes(GgmlQ4_0(), 3, 4096, &bytes).ok());
  EXPECT_EQ(bytes, 3 * 128 * 18);
  EXPECT_EQ(GgmlMatrixBytes(GgmlQ4_0(), 3, 48, &bytes).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(GgmlMatrixBytes(GgmlQ4_0(), -1, 64, &bytes).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      GgmlMatrixBytes(GgmlQ8_0(), int64_t{1} << 60, 1 << 20, &bytes).code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(
      GgmlMatrixBytes(QuantScheme{4, true, 32, DType::kF16}, 1, 64, &bytes)
          .code(),
      StatusCode::kInvalidArgument);

  const std::vector<float> x(2 * 64, 1.0f);
  const ConstMatrixView in{x.data(), DType::kF32, 2, 64, 64};
  std::vector<uint8_t> out(2 * 2 * 18);
  EXPECT_TRUE(
      QuantizeToGgmlBlocks(in, GgmlQ4_0(), out.data(), out.size(), nullptr)
          .ok());
  const Status short_out =
      QuantizeToGgmlBlocks(in, GgmlQ4_0(), out.data(), out.size() - 1, nullptr);
  EXPECT_EQ(short_out.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(short_out.message().find(std::to_string(out.size())),
            std::string::npos)
      << short_out.message();
  EXPECT_EQ(
      QuantizeToGgmlBlocks(in, GgmlQ4_0(), nullptr, out.size(), nullptr).code(),
      StatusCode::kInvalidArgument);
  std::vector<float> back(x.size());
  EXPECT_EQ(
      DequantizeGgmlBlocks(out.data(), out.size() + 1, GgmlQ4_0(),
                           MatrixView{back.data(), DType::kF32, 2, 64, 64})
          .code(),
      StatusCode::kInvalidArgument);
  // Q4_1 needs offsets in the view it reads from / writes to.
  QuantizedBuffers q;
  ASSERT_TRUE(q.Allocate(GgmlQ4_1(), 2, 64).ok());
  QuantizedView v = q.view();
  v.offsets = nullptr;
  std::vector<uint8_t> q41(2 * 2 * 20);
  EXPECT_EQ(
      WriteGgmlBlocks(v, GgmlQ4_1(), 2, 64, q41.data(), q41.size()).code(),
      StatusCode::kInvalidArgument);
  EXPECT_EQ(ReadGgmlBlocks(q41.data(), q41.size(), GgmlQ4_1(), 2, 64, v).code(),
            StatusCode::kInvalidArgument);
  v = q.view();
  v.codes_stride = 31;
  EXPECT_EQ(ReadGgmlBlocks(q41.data(), q41.size(), GgmlQ4_1(), 2, 64, v).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      WriteGgmlBlocks(q.view(), GgmlQ4_1(), 2, 64, q41.data(), q41.size(), 0)
          .code(),
      StatusCode::kInvalidArgument);
}

// NaN/Inf input is refused (ggml would write garbage), naming the element.
TEST(GgmlBlocksTest, NonFiniteInputIsAnError) {
  std::vector<float> x(3 * 64, 0.25f);
  x[2 * 64 + 40] = std::nanf("");
  std::vector<uint8_t> out(3 * 2 * 34);
  for (Isa isa : SupportedIsas()) {
    const Status st = QuantizeToGgmlBlocks(
        ConstMatrixView{x.data(), DType::kF32, 3, 64, 64}, GgmlQ8_0(),
        out.data(), out.size(), nullptr, ExecOptions{1, isa});
    EXPECT_EQ(st.code(), StatusCode::kNonFinite) << IsaName(isa);
    EXPECT_EQ(st.row(), 2);
    EXPECT_EQ(st.col(), 40);
  }
}

}  // namespace
}  // namespace nibble::test
