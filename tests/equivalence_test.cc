// Every SIMD path against the scalar oracle, byte for byte.
//
// Instantiated for avx2 and avx512 x the fifteen schemes (nibble's twelve and
// GGML's q8_0, q4_0, q4_1) x the three input dtypes; each instance loops over
// scale dtypes (F16 only for GGML), metrics on/off, ten data kinds, several
// shapes and four memory layouts, and compares codes, scales, zero points,
// offsets, canaries and ErrorSums bits with the scalar path
// (ExecOptions{1, Isa::kScalar}), then dequantizes to F32/F16/BF16 on both
// paths and compares those bytes too. No tolerance anywhere.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "dispatch.h"  // test hook for the AVX-512 BF16 variants
#include "nibble/nibble.h"
#include "test_util.h"

namespace nibble::test {
namespace {

constexpr ExecOptions kScalar{1, Isa::kScalar};
// Distinct payload fills: a byte the tested path forgets to write differs
// from the reference's.
constexpr uint8_t kRefFill = 0x5a;
constexpr uint8_t kGotFill = 0xc3;

struct Shape {
  int64_t rows, cols;
};

// Whole-row schemes: the column counts the brief lists (vector widths and the
// 256-column metric flush, +-1); grouped schemes: one group, one row, an odd
// row count with an odd number of groups, and a wide matrix whose width is
// not a multiple of the 256-column flush for g32..g128.
std::vector<Shape> ShapesFor(const QuantScheme& s) {
  std::vector<Shape> out;
  if (s.group_size == 0) {
    for (int64_t c : {1, 2, 3, 7, 15, 16, 17, 31, 33, 255, 256, 257, 1000})
      out.push_back({3, c});
    out.push_back({1, 257});
    out.push_back({1, 1});
    return out;
  }
  const int64_t g = s.group_size;
  const int64_t wide = g * ((800 + g - 1) / g);
  out.push_back({1, g});
  out.push_back({1, 4 * g});
  out.push_back({7, 3 * g});
  out.push_back({5, wide});
  return out;
}

using Param =
    std::tuple<Isa, int, DType>;  // path, index in EquivalenceSchemes(), input

std::string ParamName(const ::testing::TestParamInfo<Param>& info) {
  const auto& [isa, scheme, dtype] = info.param;
  return std::string(IsaName(isa)) + "_" +
         Identifier(
             SchemeName(EquivalenceSchemes()[static_cast<size_t>(scheme)])) +
         "_" + DTypeName(dtype);
}

class EquivalenceTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    if (!IsaSupported(isa())) GTEST_SKIP() << IsaSkipMessage(isa());
  }
  Isa isa() const { return std::get<0>(GetParam()); }
  // GGML schemes keep their F16 scales.
  QuantScheme scheme(DType scale_dtype) const {
    QuantScheme s =
        EquivalenceSchemes()[static_cast<size_t>(std::get<1>(GetParam()))];
    if (!IsGgml(s)) s.scale_dtype = scale_dtype;
    return s;
  }
  DType in_dtype() const { return std::get<2>(GetParam()); }
};

TEST_P(EquivalenceTest, QuantizeAndDequantizeMatchScalar) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  const ExecOptions tested{1, isa()};
  int64_t configs = 0;
  for (const Shape& shape : ShapesFor(scheme(DType::kF16))) {
    for (Layout layout : AllLayouts()) {
      for (DataKind kind : EquivalenceDataKinds()) {
        std::vector<float> values =
            Generate(kind, shape.rows, shape.cols, scheme(DType::kF16), rng);
        if (HasOffsets(scheme(DType::kF16)) && in_dtype() == DType::kBF16) {
          // BF16 rounds -65504 to -65536, whose F16 offset (Q4_1's block
          // minimum) overflows: errors_test covers that; halve the data.
          for (float& v : values) v *= 0.5f;
        }
        const InputMatrix in(values, in_dtype(), shape.rows, shape.cols,
                             layout);
        for (DType sd : ScaleDTypesFor(scheme(DType::kF16))) {
          const QuantScheme s = scheme(sd);
          for (bool metrics : {false, true}) {
            SCOPED_TRACE(Describe(s, in_dtype(), shape.rows, shape.cols, layout,
                                  kind, metrics));
            const QuantResult ref =
                RunQuantize(in, s, layout, kRefFill, metrics, kScalar);
            ASSERT_TRUE(ref.status.ok()) << ref.status.ToString();
            const QuantResult got =
                RunQuantize(in, s, layout, kGotFill, metrics, tested);
            ASSERT_TRUE(SameQuantized(ref, got));
            ++configs;
            if (metrics) continue;
            // Dequantize the reference codes on both paths.
            const DequantInput dq(ref, layout);
            for (DType out : AllDTypes()) {
              SCOPED_TRACE(std::string("dequantize to ") + DTypeName(out));
              const DequantResult dref =
                  RunDequantize(dq.view(), s, shape.rows, shape.cols, out,
                                layout, kRefFill, kScalar);
              ASSERT_TRUE(dref.status.ok()) << dref.status.ToString();
              const DequantResult dgot =
                  RunDequantize(dq.view(), s, shape.rows, shape.cols, out,
                                layout, kGotFill, tested);
              ASSERT_TRUE(SameDequantized(dref, dgot));
            }
          }
        }
      }
    }
  }
  RecordProperty("configurations", static_cast<int>(configs));
}

// Dequantize of arbitrary bytes: every code value (INT4 sym nibble 0 too),
// zero points across their range, Q4_1 offsets of any finite F16 value, and
// scales from random bit patterns (huge ones saturate the output dtype) as
// well as ordinary ones.
TEST_P(EquivalenceTest, DequantizeArbitraryCodesMatchesScalar) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  const ExecOptions tested{1, isa()};
  std::uniform_int_distribution<int> byte(0, 255);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  // The scheme's input dtype parameter picks the scale dtype here, so that
  // the three instances of a scheme cover the three scale dtypes (GGML
  // schemes have F16 scales in all three).
  const QuantScheme s = scheme(in_dtype());
  const int qmax = QMax(s);
  for (const Shape& shape : ShapesFor(s)) {
    for (Layout layout : AllLayouts()) {
      SCOPED_TRACE(SchemeName(s) + " scales=" + DTypeName(s.scale_dtype) +
                   " [" + std::to_string(shape.rows) + " x " +
                   std::to_string(shape.cols) +
                   "] layout=" + LayoutName(layout));
      QuantResult q;
      q.scheme = s;
      q.rows = shape.rows;
      q.cols = shape.cols;
      q.shape = OutputShapeFor(s, shape.cols, layout);
      const int64_t groups = GroupsPerRow(s, shape.cols);
      const size_t ss = DTypeSize(s.scale_dtype);
      const size_t nscales = static_cast<size_t>(
          (shape.rows - 1) * q.shape.scales_stride + groups);
      const size_t ncodes =
          static_cast<size_t>((shape.rows - 1) * q.shape.codes_stride +
                              CodeBytesPerRow(s, shape.cols));
      q.codes =
          std::make_unique<GuardedBytes>(ncodes, q.shape.codes_misalign, 0);
      q.scales = std::make_unique<GuardedBytes>(nscales * ss,
                                                q.shape.scales_misalign, 0);
      for (size_t i = 0; i < ncodes; ++i)
        q.codes->data()[i] = static_cast<uint8_t>(byte(rng));
      // Edge scales of each dtype: zero, the smallest and largest subnormal
      // (a subnormal scale makes subnormal products, which some conversion
      // instructions flush), the smallest normal, one, the largest finite.
      const std::vector<uint32_t> edges =
          s.scale_dtype == DType::kF32
              ? std::vector<uint32_t>{0u,          1u,          0x007fffffu,
                                      0x00800000u, 0x3f800000u, 0x7f7fffffu}
          : s.scale_dtype == DType::kF16
              ? std::vector<uint32_t>{0u,      1u,      0x03ffu,
                                      0x0400u, 0x3c00u, 0x7bffu}
              : std::vector<uint32_t>{0u,      1u,      0x007fu,
                                      0x0080u, 0x3f80u, 0x7f7fu};
      for (size_t i = 0; i < nscales; ++i) {
        uint32_t bits;
        const float pick = unit(rng);
        if (pick < 0.2f) {
          bits = edges[static_cast<size_t>(rng() % edges.size())];
          std::memcpy(q.scales->data() + i * ss, &bits, ss);  // little-endian
          continue;
        }
        if (pick < 0.6f) {
          // Ordinary magnitudes.
          const float v =
              std::ldexp(unit(rng), static_cast<int>(unit(rng) * 20) - 10);
          StoreElement(q.scales->data(), s.scale_dtype, static_cast<int64_t>(i),
                       v);
          continue;
        }
        // Any finite, non-negative pattern (subnormals and the largest
        // values included).
        const uint32_t r = static_cast<uint32_t>(rng());
        if (s.scale_dtype == DType::kF32) {
          bits = r & 0x7fffffffu;
          if (bits >= 0x7f800000u) bits = 0x7f7fffffu;
          std::memcpy(q.scales->data() + i * 4, &bits, 4);
        } else {
          const uint16_t limit = s.scale_dtype == DType::kF16 ? 0x7c00 : 0x7f80;
          uint16_t h = static_cast<uint16_t>(r & 0x7fffu);
          if (h >= limit) h = static_cast<uint16_t>(limit - 1);
          std::memcpy(q.scales->data() + i * 2, &h, 2);
        }
      }
      if (HasZeroPoints(s)) {
        const size_t nzp =
            static_cast<size_t>((shape.rows - 1) * q.shape.zp_stride + groups);
        q.zps = std::make_unique<GuardedBytes>(nzp, q.shape.zp_misalign, 0);
        std::uniform_int_distribution<int> zp(0, qmax);
        for (size_t i = 0; i < nzp; ++i)
          q.zps->data()[i] = static_cast<uint8_t>(zp(rng));
      }
      if (HasOffsets(s)) {
        // Any finite F16 of either sign; every fourth an ordinary value.
        const size_t noff = static_cast<size_t>(
            (shape.rows - 1) * q.shape.offsets_stride + groups);
        q.offsets = std::make_unique<GuardedBytes>(noff * 2,
                                                   q.shape.offsets_misalign, 0);
        for (size_t i = 0; i < noff; ++i) {
          uint16_t h = static_cast<uint16_t>(rng());
          if ((h & 0x7fffu) >= 0x7c00u) h = static_cast<uint16_t>(h ^ 0x4000u);
          if (i % 4 == 0) h = FloatToHalf(-2.0f * unit(rng));
          std::memcpy(q.offsets->data() + 2 * i, &h, 2);
        }
      }
      const DequantInput dq(q, layout);
      for (DType out : AllDTypes()) {
        SCOPED_TRACE(std::string("dequantize to ") + DTypeName(out));
        const DequantResult dref =
            RunDequantize(dq.view(), s, shape.rows, shape.cols, out, layout,
                          kRefFill, kScalar);
        ASSERT_TRUE(dref.status.ok()) << dref.status.ToString();
        // AVX-512 to BF16 has two variants (VCVTNEPS2BF16 when the CPU has
        // it, integer rounding otherwise): test both on this CPU.
        for (bool native_bf16 : {true, false}) {
          if (!native_bf16 && (out != DType::kBF16 || isa() != Isa::kAvx512))
            continue;
          SCOPED_TRACE(native_bf16 ? "native bf16" : "integer bf16");
          const bool old = internal::SetAvx512Bf16Enabled(native_bf16);
          const DequantResult dgot =
              RunDequantize(dq.view(), s, shape.rows, shape.cols, out, layout,
                            kGotFill, tested);
          internal::SetAvx512Bf16Enabled(old);
          ASSERT_TRUE(SameDequantized(dref, dgot));
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Simd, EquivalenceTest,
    ::testing::Combine(
        ::testing::ValuesIn(SimdIsas()),
        ::testing::Range(0, static_cast<int>(EquivalenceSchemes().size())),
        ::testing::ValuesIn(AllDTypes())),
    ParamName);

}  // namespace
}  // namespace nibble::test
