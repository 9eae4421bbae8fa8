// compressed-tensors pack-quantized conversion: the packed tensors are decoded
// here by an independent per-element decoder written from docs/formats.md
// (bit extraction, signed codes and zero points offset by 2^(bits-1)), and
// (q - zp) * scale must equal nibble::Dequantize to F32 bit for bit.
#include "nibble/io/compressed_tensors.h"

#include <cstring>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nibble/quantize.h"
#include "test_util.h"

namespace nibble::test {
namespace {

using io::CtConfigGroup;
using io::CtLayout;
using ::testing::HasSubstr;

uint32_t Word(const std::vector<uint8_t>& b, int64_t index) {
  const uint8_t* p = b.data() + index * 4;
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

struct CtTensors {
  CtLayout layout;
  std::vector<uint8_t> packed, scale, zero_point, shape;
};

CtTensors Convert(const QuantizedBuffers& qb, DType model_dtype) {
  CtTensors t;
  EXPECT_TRUE(io::CtLayoutFor(qb.scheme, qb.rows, qb.cols, model_dtype,
                              &t.layout)
                  .ok());
  const CtLayout& l = t.layout;
  t.packed.assign(l.weight_packed_bytes, 0xEE);
  t.scale.assign(l.weight_scale_bytes, 0xEE);
  t.zero_point.assign(l.weight_zero_point_bytes, 0xEE);
  t.shape.assign(CtLayout::kWeightShapeBytes, 0xEE);
  const ConstQuantizedView v = qb.view();
  Status st = io::CtPackWeight(l, v, t.packed.data(), t.packed.size());
  EXPECT_TRUE(st.ok()) << st.ToString();
  st = io::CtPackScales(l, v, qb.scheme.scale_dtype, t.scale.data(),
                        t.scale.size());
  EXPECT_TRUE(st.ok()) << st.ToString();
  if (!qb.scheme.symmetric) {
    st = io::CtPackZeroPoints(l, v, t.zero_point.data(), t.zero_point.size());
    EXPECT_TRUE(st.ok()) << st.ToString();
  }
  st = io::CtWeightShape(l, t.shape.data(), t.shape.size());
  EXPECT_TRUE(st.ok()) << st.ToString();
  return t;
}

// Decodes per formats.md and compares with Dequantize; also checks shapes
// and that the padding bits are zero.
void CheckDecode(const QuantizedBuffers& qb, const CtTensors& t) {
  const int bits = qb.scheme.bits;
  const int64_t out = qb.rows, in = qb.cols;
  const int per_word = 32 / bits;
  const uint32_t mask = (1u << bits) - 1;
  const int offset = 1 << (bits - 1);
  const int64_t packed_cols = (in * bits + 31) / 32;
  const int64_t gl = qb.scheme.group_size == 0 ? in : qb.scheme.group_size;
  const int64_t groups = in / gl;
  const CtLayout& l = t.layout;
  ASSERT_EQ(l.weight_packed_shape, (std::vector<int64_t>{out, packed_cols}));
  ASSERT_EQ(l.weight_scale_shape, (std::vector<int64_t>{out, groups}));
  ASSERT_EQ(t.packed.size(), static_cast<size_t>(out * packed_cols * 4));
  ASSERT_EQ(t.scale.size(),
            static_cast<size_t>(out * groups) * DTypeSize(l.model_dtype));
  const int64_t zp_rows = (out + per_word - 1) / per_word;
  if (!qb.scheme.symmetric) {
    ASSERT_EQ(l.weight_zero_point_shape,
              (std::vector<int64_t>{zp_rows, groups}));
    ASSERT_EQ(t.zero_point.size(), static_cast<size_t>(zp_rows * groups * 4));
  } else {
    ASSERT_TRUE(l.weight_zero_point_shape.empty());
    ASSERT_EQ(l.weight_zero_point_bytes, 0u);
  }
  int64_t dims[2];
  std::memcpy(dims, t.shape.data(), 16);  // little-endian host
  EXPECT_EQ(dims[0], out);
  EXPECT_EQ(dims[1], in);

  std::vector<float> ref(static_cast<size_t>(out * in));
  MatrixView mv{ref.data(), DType::kF32, out, in, in};
  Status st = Dequantize(qb.view(), qb.scheme, mv);
  ASSERT_TRUE(st.ok()) << st.ToString();

  int64_t mismatches = 0;
  for (int64_t r = 0; r < out; ++r) {
    for (int64_t c = 0; c < in; ++c) {
      const uint32_t w = Word(t.packed, r * packed_cols + c / per_word);
      const int q =
          static_cast<int>((w >> (bits * (c % per_word))) & mask) - offset;
      ASSERT_GE(q, -offset);
      ASSERT_LE(q, offset - 1);
      const int64_t g = c / gl;
      int zp = 0;
      if (!qb.scheme.symmetric) {
        const uint32_t zw = Word(t.zero_point, (r / per_word) * groups + g);
        zp = static_cast<int>((zw >> (bits * (r % per_word))) & mask) - offset;
      }
      const float scale = LoadElement(t.scale.data(), l.model_dtype,
                                      r * groups + g);
      const float w_ct = static_cast<float>(q - zp) * scale;
      const float w_ref = ref[static_cast<size_t>(r * in + c)];
      if (Bits(w_ct) != Bits(w_ref) && ++mismatches <= 5) {
        ADD_FAILURE() << "row " << r << " col " << c << ": ct " << w_ct
                      << " (q " << q << " zp " << zp << " scale " << scale
                      << ") vs dequantize " << w_ref;
      }
    }
    // Padding bits of the last word of the row are zero.
    const int64_t used = in % per_word;
    if (used != 0) {
      const uint32_t last = Word(t.packed, r * packed_cols + packed_cols - 1);
      EXPECT_EQ(last >> (bits * used), 0u) << "row " << r;
    }
  }
  EXPECT_EQ(mismatches, 0);
  // Zero-point padding rows are 0.
  if (!qb.scheme.symmetric && out % per_word != 0) {
    for (int64_t g = 0; g < groups; ++g) {
      const uint32_t zw = Word(t.zero_point, (zp_rows - 1) * groups + g);
      EXPECT_EQ(zw >> (bits * (out % per_word)), 0u) << "group " << g;
    }
  }
}

QuantizedBuffers QuantizeRandom(const QuantScheme& scheme, int64_t rows,
                                int64_t cols, Rng& rng) {
  std::vector<float> x = Generate(DataKind::kGaussian, rows, cols, scheme, rng);
  QuantizedBuffers qb;
  Status st = qb.Allocate(scheme, rows, cols);
  EXPECT_TRUE(st.ok()) << st.ToString();
  ConstMatrixView in{x.data(), DType::kF32, rows, cols, cols};
  st = Quantize(in, scheme, qb.view(), nullptr);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return qb;
}

struct Case {
  const char* name;
  int bits;
  bool symmetric;
  int64_t group_size;
  int64_t rows, cols;
};

TEST(CompressedTensors, DecodesToDequantize) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng(0xC7);
  const Case cases[] = {
      {"int4-g32", 4, true, 32, 16, 128},
      {"int4-g32-asym", 4, false, 32, 13, 96},
      {"int4-g128", 4, true, 128, 9, 256},
      {"int4-g128-asym", 4, false, 128, 17, 384},
      {"int4-row odd cols", 4, true, 0, 7, 37},
      {"int4-row-asym odd cols", 4, false, 0, 11, 45},
      {"int4-row cols 6", 4, true, 0, 3, 6},
      {"int8", 8, true, 0, 10, 67},
      {"int8-asym", 8, false, 0, 7, 66},
      {"int8-g32", 8, true, 32, 5, 96},
      {"int8-g32-asym", 8, false, 32, 6, 64},
  };
  for (const Case& k : cases) {
    for (DType sd : {DType::kF16, DType::kBF16, DType::kF32}) {
      SCOPED_TRACE(std::string(k.name) + " scales " + DTypeName(sd));
      QuantScheme s;
      s.bits = k.bits;
      s.symmetric = k.symmetric;
      s.group_size = k.group_size;
      s.scale_dtype = sd;
      QuantizedBuffers qb = QuantizeRandom(s, k.rows, k.cols, rng);
      CheckDecode(qb, Convert(qb, sd));
      if (sd != DType::kF32) {
        // Widening to F32 is always exact.
        SCOPED_TRACE("model dtype f32");
        CheckDecode(qb, Convert(qb, DType::kF32));
      }
    }
  }
}

TEST(CompressedTensors, SymmetricInt8IsOffsetBy128) {
  QuantScheme s{8, true, 0, DType::kF16};
  QuantizedBuffers qb;
  ASSERT_TRUE(qb.Allocate(s, 1, 5).ok());
  const int8_t q[5] = {-127, -1, 0, 1, 127};
  std::memcpy(qb.codes.data(), q, 5);
  CtLayout l;
  ASSERT_TRUE(io::CtLayoutFor(s, 1, 5, DType::kF16, &l).ok());
  std::vector<uint8_t> p(l.weight_packed_bytes);
  ASSERT_TRUE(io::CtPackWeight(l, qb.view(), p.data(), p.size()).ok());
  EXPECT_EQ(p, (std::vector<uint8_t>{1, 127, 128, 129, 255, 0, 0, 0}));
}

TEST(CompressedTensors, ZeroPointWords) {
  // 4-bit, 11 rows, 2 groups: rows 0..7 in word row 0, 8..10 in word row 1.
  QuantScheme s{4, false, 32, DType::kF16};
  QuantizedBuffers qb;
  ASSERT_TRUE(qb.Allocate(s, 11, 64).ok());
  for (int r = 0; r < 11; ++r) {
    qb.zero_points[r * 2] = static_cast<uint8_t>(r);
    qb.zero_points[r * 2 + 1] = static_cast<uint8_t>(15 - r);
  }
  CtLayout l;
  ASSERT_TRUE(io::CtLayoutFor(s, 11, 64, DType::kF16, &l).ok());
  ASSERT_EQ(l.weight_zero_point_shape, (std::vector<int64_t>{2, 2}));
  std::vector<uint8_t> z(l.weight_zero_point_bytes, 0xEE);
  ASSERT_TRUE(io::CtPackZeroPoints(l, qb.view(), z.data(), z.size()).ok());
  EXPECT_EQ(Word(z, 0), 0x76543210u);
  EXPECT_EQ(Word(z, 1), 0x89ABCDEFu);
  EXPECT_EQ(Word(z, 2), 0x00000A98u);
  EXPECT_EQ(Word(z, 3), 0x00000567u);

  // 8-bit, 5 rows, channel: 4 per word.
  QuantScheme s8{8, false, 0, DType::kF16};
  QuantizedBuffers q8;
  ASSERT_TRUE(q8.Allocate(s8, 5, 3).ok());
  const uint8_t zps[5] = {1, 2, 200, 255, 7};
  std::memcpy(q8.zero_points.data(), zps, 5);
  ASSERT_TRUE(io::CtLayoutFor(s8, 5, 3, DType::kF16, &l).ok());
  ASSERT_EQ(l.weight_zero_point_shape, (std::vector<int64_t>{2, 1}));
  z.assign(l.weight_zero_point_bytes, 0xEE);
  ASSERT_TRUE(io::CtPackZeroPoints(l, q8.view(), z.data(), z.size()).ok());
  EXPECT_EQ(Word(z, 0), 0xFFC80201u);
  EXPECT_EQ(Word(z, 1), 0x00000007u);

  // A zero point that does not fit in 4 bits is refused.
  qb.zero_points[5] = 16;
  ASSERT_TRUE(io::CtLayoutFor(s, 11, 64, DType::kF16, &l).ok());
  z.assign(l.weight_zero_point_bytes, 0);
  Status st = io::CtPackZeroPoints(l, qb.view(), z.data(), z.size());
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(st.row(), 2);
  EXPECT_EQ(st.col(), 32);
}

TEST(CompressedTensors, InexactScaleConversionIsAnError) {
  QuantScheme s{4, true, 32, DType::kF32};
  QuantizedBuffers qb;
  ASSERT_TRUE(qb.Allocate(s, 2, 64).ok());
  const float scales[4] = {0.5f, 0.25f, 0.125f, 0.1f};  // 0.1 is not F16
  std::memcpy(qb.scales.data(), scales, sizeof scales);
  CtLayout l;
  ASSERT_TRUE(io::CtLayoutFor(s, 2, 64, DType::kF16, &l).ok());
  std::vector<uint8_t> out(l.weight_scale_bytes);
  Status st = io::CtPackScales(l, qb.view(), DType::kF32, out.data(),
                               out.size());
  EXPECT_EQ(st.code(), StatusCode::kScaleOverflow);
  EXPECT_EQ(st.row(), 1);
  EXPECT_EQ(st.col(), 32);
  EXPECT_THAT(st.message(), HasSubstr("not exactly representable in f16"));
  // Exactly representable values convert.
  const float ok_scales[4] = {0.5f, 0.25f, 0.125f, 3.0f};
  std::memcpy(qb.scales.data(), ok_scales, sizeof ok_scales);
  st = io::CtPackScales(l, qb.view(), DType::kF32, out.data(), out.size());
  ASSERT_TRUE(st.ok()) << st.ToString();
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(LoadElement(out.data(), DType::kF16, i), ok_scales[i]);
  }
  // F16 -> BF16: 2^-24 is exact in BF16, 1 + 2^-10 is not.
  QuantScheme h{4, true, 32, DType::kF16};
  ASSERT_TRUE(qb.Allocate(h, 1, 64).ok());
  StoreElement(qb.scales.data(), DType::kF16, 0, 0x1p-24f);
  StoreElement(qb.scales.data(), DType::kF16, 1, 1.0f + 0x1p-10f);
  ASSERT_TRUE(io::CtLayoutFor(h, 1, 64, DType::kBF16, &l).ok());
  out.assign(l.weight_scale_bytes, 0);
  st = io::CtPackScales(l, qb.view(), DType::kF16, out.data(), out.size());
  EXPECT_EQ(st.code(), StatusCode::kScaleOverflow);
  EXPECT_EQ(st.col(), 32);
  EXPECT_EQ(LoadElement(out.data(), DType::kBF16, 0), 0x1p-24f);
}

TEST(CompressedTensors, RejectsBadArguments) {
  QuantScheme s{4, true, 32, DType::kF16};
  CtLayout l;
  EXPECT_EQ(io::CtLayoutFor(s, 4, 48, DType::kF16, &l).code(),
            StatusCode::kInvalidArgument);  // 48 not a multiple of 32
  EXPECT_EQ(io::CtLayoutFor(s, 0, 64, DType::kF16, &l).code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(io::CtLayoutFor(s, 4, 64, DType::kF16, &l).ok());
  QuantizedBuffers qb;
  ASSERT_TRUE(qb.Allocate(s, 4, 64).ok());
  std::vector<uint8_t> buf(l.weight_packed_bytes);
  Status st = io::CtPackWeight(l, qb.view(), buf.data(), buf.size() - 1);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("need 128"));
  ConstQuantizedView v = qb.view();
  v.codes_stride = 31;
  EXPECT_EQ(io::CtPackWeight(l, v, buf.data(), buf.size()).code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(io::CtPackZeroPoints(l, qb.view(), buf.data(), buf.size()).code(),
            StatusCode::kInvalidArgument);  // symmetric
  uint8_t shape[15];
  EXPECT_EQ(io::CtWeightShape(l, shape, sizeof shape).code(),
            StatusCode::kInvalidArgument);
}

TEST(CompressedTensors, QuantizationConfig) {
  std::vector<CtConfigGroup> groups(2);
  groups[0].scheme = QuantScheme{4, true, 128, DType::kBF16};
  groups[0].is_default = true;
  groups[1].scheme = QuantScheme{8, false, 0, DType::kF16};
  groups[1].targets = {"model.layers.0.mlp.down_proj",
                       "model.layers.1.mlp.down_proj"};
  std::string text;
  Status st = io::BuildCtQuantizationConfig(groups, {"lm_head"}, &text);
  ASSERT_TRUE(st.ok()) << st.ToString();
  const nlohmann::json j = nlohmann::json::parse(text);
  const nlohmann::json expected = nlohmann::json::parse(R"({
    "quant_method": "compressed-tensors",
    "format": "pack-quantized",
    "quantization_status": "compressed",
    "config_groups": {
      "group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 4, "type": "int", "symmetric": true,
                    "strategy": "group", "group_size": 128, "dynamic": false,
                    "actorder": null},
        "input_activations": null, "output_activations": null},
      "group_1": {
        "targets": ["model.layers.0.mlp.down_proj",
                    "model.layers.1.mlp.down_proj"],
        "weights": {"num_bits": 8, "type": "int", "symmetric": false,
                    "strategy": "channel", "group_size": null,
                    "dynamic": false, "actorder": null},
        "input_activations": null, "output_activations": null}
    },
    "ignore": ["lm_head"]
  })");
  EXPECT_EQ(j, expected) << text;
  // Key order as in the documentation.
  EXPECT_EQ(text.find("\"quant_method\""), text.find('"'));

  // Misuse.
  EXPECT_EQ(io::BuildCtQuantizationConfig({}, {}, &text).code(),
            StatusCode::kInvalidArgument);
  std::vector<CtConfigGroup> bad = groups;
  bad[1].is_default = true;
  EXPECT_EQ(io::BuildCtQuantizationConfig(bad, {}, &text).code(),
            StatusCode::kInvalidArgument);  // two defaults
  bad = groups;
  bad[1].targets.clear();
  EXPECT_EQ(io::BuildCtQuantizationConfig(bad, {}, &text).code(),
            StatusCode::kInvalidArgument);  // no targets
  bad = groups;
  bad[1].targets.push_back(bad[1].targets[0]);
  EXPECT_EQ(io::BuildCtQuantizationConfig(bad, {}, &text).code(),
            StatusCode::kInvalidArgument);  // listed twice
  EXPECT_EQ(io::BuildCtQuantizationConfig(
                groups, {"model.layers.0.mlp.down_proj"}, &text)
                .code(),
            StatusCode::kInvalidArgument);  // quantized and ignored
  bad = groups;
  bad[0].scheme.bits = 3;
  EXPECT_EQ(io::BuildCtQuantizationConfig(bad, {}, &text).code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace nibble::test
