// The scalar reference path: the specification every SIMD path reproduces
// byte for byte. Written for clarity, element by element, following the
// metric lane shape documented in common.h.
#include <cmath>
#include <cstdint>
#include <limits>

#include "kernels/common.h"
#include "kernels/instantiate.h"
#include "kernels/table.h"

namespace nibble::kernels {
namespace {

template <DType kIn>
inline float LoadElem(const void* row, int64_t j) {
  if constexpr (kIn == DType::kF32) {
    return static_cast<const float*>(row)[j];
  } else if constexpr (kIn == DType::kF16) {
    return HalfBitsToFloat(static_cast<const uint16_t*>(row)[j]);
  } else {
    return Bf16BitsToFloat(static_cast<const uint16_t*>(row)[j]);
  }
}

template <DType kIn>
inline uint32_t MagBits(const void* row, int64_t j) {
  if constexpr (kIn == DType::kF32) {
    return static_cast<const uint32_t*>(row)[j] & 0x7fffffffu;
  } else {
    return static_cast<const uint16_t*>(row)[j] & 0x7fffu;
  }
}

struct Lanes {
  float e2[kLanes], x2[kLanes], xe[kLanes];
  double de2[kLanes], dx2[kLanes], dxe[kLanes];
  float max_abs;

  void Reset() {
    for (int l = 0; l < kLanes; ++l) {
      e2[l] = x2[l] = xe[l] = 0.0f;
      de2[l] = dx2[l] = dxe[l] = 0.0;
    }
    max_abs = 0.0f;
  }
  void Add(int64_t j, float x, float e) {
    const int l = static_cast<int>(j & (kLanes - 1));
    e2[l] = std::fma(e, e, e2[l]);
    x2[l] = std::fma(x, x, x2[l]);
    xe[l] = std::fma(x, e, xe[l]);
    const float a = std::fabs(e);
    max_abs = a > max_abs ? a : max_abs;
  }
  void Flush() {
    for (int l = 0; l < kLanes; ++l) {
      de2[l] += static_cast<double>(e2[l]);
      dx2[l] += static_cast<double>(x2[l]);
      dxe[l] += static_cast<double>(xe[l]);
      e2[l] = x2[l] = xe[l] = 0.0f;
    }
  }
};

template <DType kIn, int kBits, bool kSym, bool kMetrics>
void QuantizeRowsT(const QuantizeArgs& a, int64_t row_begin, int64_t row_end,
                   RowOutcome* outcomes) {
  const int qmax = QMax(kBits, kSym);
  const float lo_clamp = kSym ? -static_cast<float>(qmax) : 0.0f;
  const float hi_clamp = static_cast<float>(qmax);
  const int64_t groups = a.cols / a.group;
  const size_t esize = kIn == DType::kF32 ? 4 : 2;
  Lanes lanes;
  for (int64_t r = row_begin; r < row_end; ++r) {
    RowOutcome& o = outcomes[r - row_begin];
    o = RowOutcome{0.0, 0.0, 0.0, 0.0f, kRowOk, -1};
    const void* row = static_cast<const uint8_t*>(a.in) +
                      static_cast<size_t>(r) * a.in_stride * esize;
    uint8_t* codes = a.codes + r * a.codes_stride;
    void* scales = static_cast<uint8_t*>(a.scales) +
                   static_cast<size_t>(r) * a.scales_stride *
                       (a.scale_dtype == DType::kF32 ? 4 : 2);
    uint8_t* zps = kSym ? nullptr : a.zero_points + r * a.zero_points_stride;
    if (kMetrics) lanes.Reset();
    float pad_code = kSym ? 8.0f : 0.0f;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * a.group, c1 = c0 + a.group;
      uint32_t amax = 0;
      float lo = 0.0f, hi = 0.0f;
      for (int64_t j = c0; j < c1; ++j) {
        const uint32_t m = MagBits<kIn>(row, j);
        amax = m > amax ? m : amax;
        if (!kSym) {
          const float v = LoadElem<kIn>(row, j);
          lo = v < lo ? v : lo;
          hi = v > hi ? v : hi;
        }
      }
      if (amax >= NonFiniteBits(kIn)) {
        o.status = kRowNonFinite;
        o.bad_col = FindNonFinite(row, kIn, c0, c1);
        break;
      }
      GroupParams p;
      const bool fits =
          kSym ? DeriveSymmetric(MagnitudeToFloat(amax, kIn), qmax,
                                 a.scale_dtype, &p)
               : DeriveAsymmetric(lo, hi, qmax, a.scale_dtype, &p);
      if (!fits) {
        o.status = kRowScaleOverflow;
        o.bad_col = c0;
        break;
      }
      StoreScale(scales, g, a.scale_dtype, p.scale_bits);
      if (!kSym) {
        zps[g] = static_cast<uint8_t>(p.zp);
        pad_code = p.zp;
      }
      for (int64_t j = c0; j < c1; ++j) {
        const float x = LoadElem<kIn>(row, j);
        float q = std::nearbyint(x * p.inv);
        if (!kSym) q = q + p.zp;
        q = q < lo_clamp ? lo_clamp : q;
        q = q > hi_clamp ? hi_clamp : q;
        const int code = static_cast<int>(q);
        if (kBits == 8) {
          codes[j] = static_cast<uint8_t>(code);
        } else {
          const uint8_t nib = static_cast<uint8_t>(kSym ? code + 8 : code);
          if ((j & 1) == 0) {
            codes[j >> 1] = nib;
          } else {
            codes[j >> 1] = static_cast<uint8_t>(codes[j >> 1] | (nib << 4));
          }
        }
        if (kMetrics) {
          const float d = (kSym ? q : q - p.zp) * p.scale;
          lanes.Add(j, x, d - x);
          if ((j & (kFlushCols - 1)) == kFlushCols - 1) lanes.Flush();
        }
      }
    }
    if (o.status != kRowOk) continue;
    if (kBits == 4 && (a.cols & 1)) {
      // The missing element of the last byte is quantized as 0.0.
      const int64_t last = a.cols >> 1;
      codes[last] = static_cast<uint8_t>(
          codes[last] | (static_cast<uint8_t>(pad_code) << 4));
    }
    if (kMetrics) {
      lanes.Flush();
      o.sum_sq_error = SumLanes(lanes.de2);
      o.sum_sq_ref = SumLanes(lanes.dx2);
      o.sum_ref_error = SumLanes(lanes.dxe);
      o.max_abs_error = lanes.max_abs;
    }
  }
}

// GGML schemes: ggml's reference loops (quantize_row_q8_0_ref, _q4_0_ref,
// _q4_1_ref), block by block and element by element, with nibble's policy
// for bad input (a block holding NaN/Inf ends the row with kRowNonFinite, a
// scale or minimum beyond F16 with kRowScaleOverflow) and nibble's layout
// (codes as in scheme.h, F16 scales, Q4_1's minimum in offsets).
template <DType kIn, GgmlType kType, bool kMetrics>
void QuantizeGgmlRowsT(const QuantizeArgs& a, int64_t row_begin,
                       int64_t row_end, RowOutcome* outcomes) {
  const int64_t groups = a.cols / kGgmlBlock;
  const size_t esize = kIn == DType::kF32 ? 4 : 2;
  Lanes lanes;
  for (int64_t r = row_begin; r < row_end; ++r) {
    RowOutcome& o = outcomes[r - row_begin];
    o = RowOutcome{0.0, 0.0, 0.0, 0.0f, kRowOk, -1};
    const void* row = static_cast<const uint8_t*>(a.in) +
                      static_cast<size_t>(r) * a.in_stride * esize;
    uint8_t* codes = a.codes + r * a.codes_stride;
    uint16_t* scales = static_cast<uint16_t*>(a.scales) + r * a.scales_stride;
    uint16_t* offsets =
        kType == GgmlType::kQ4_1
            ? static_cast<uint16_t*>(a.offsets) + r * a.offsets_stride
            : nullptr;
    if (kMetrics) lanes.Reset();
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * kGgmlBlock, c1 = c0 + kGgmlBlock;
      uint32_t mag = 0;
      for (int64_t j = c0; j < c1; ++j) {
        const uint32_t m = MagBits<kIn>(row, j);
        mag = m > mag ? m : mag;
      }
      if (mag >= NonFiniteBits(kIn)) {
        o.status = kRowNonFinite;
        o.bad_col = FindNonFinite(row, kIn, c0, c1);
        break;
      }
      GgmlParams p;
      bool fits;
      if constexpr (kType == GgmlType::kQ8_0) {
        float amax = 0.0f;
        for (int64_t j = c0; j < c1; ++j) {
          const float v = std::fabs(LoadElem<kIn>(row, j));
          amax = amax > v ? amax : v;  // ggml's MAX(amax, fabsf(v))
        }
        fits = DeriveGgmlQ8_0(amax, &p);
      } else if constexpr (kType == GgmlType::kQ4_0) {
        float amax = 0.0f, max = 0.0f;
        for (int64_t j = c0; j < c1; ++j) {
          const float v = LoadElem<kIn>(row, j);
          if (amax < std::fabs(v)) {
            amax = std::fabs(v);
            max = v;
          }
        }
        fits = DeriveGgmlQ4_0(max, &p);
      } else {
        float lo = std::numeric_limits<float>::max();
        float hi = -std::numeric_limits<float>::max();
        for (int64_t j = c0; j < c1; ++j) {
          const float v = LoadElem<kIn>(row, j);
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        fits = DeriveGgmlQ4_1(lo, hi, &p);
      }
      if (!fits) {
        o.status = kRowScaleOverflow;
        o.bad_col = c0;
        break;
      }
      scales[g] = p.d_bits;
      if constexpr (kType == GgmlType::kQ4_1) offsets[g] = p.m_bits;
      for (int64_t j = c0; j < c1; ++j) {
        const float x = LoadElem<kIn>(row, j);
        int code;
        float level;
        if constexpr (kType == GgmlType::kQ8_0) {
          code = GgmlCodeQ8_0(x, p.id);
          codes[j] = static_cast<uint8_t>(static_cast<int8_t>(code));
          level = static_cast<float>(code);
        } else {
          if constexpr (kType == GgmlType::kQ4_0) {
            code = GgmlCodeQ4_0(x, p.id);
            level = static_cast<float>(code - 8);
          } else {
            code = GgmlCodeQ4_1(x, p.lo, p.id);
            level = static_cast<float>(code);
          }
          const uint8_t nib = static_cast<uint8_t>(code);
          if ((j & 1) == 0) {
            codes[j >> 1] = nib;
          } else {
            codes[j >> 1] = static_cast<uint8_t>(codes[j >> 1] | (nib << 4));
          }
        }
        if (kMetrics) {
          // What ggml's dequantize_row_* gives: q * d, (q - 8) * d,
          // q * d + m, each operation rounded on its own.
          float w = level * p.scale;
          if constexpr (kType == GgmlType::kQ4_1) w = w + p.offset;
          lanes.Add(j, x, w - x);
          if ((j & (kFlushCols - 1)) == kFlushCols - 1) lanes.Flush();
        }
      }
    }
    if (o.status != kRowOk) continue;
    if (kMetrics) {
      lanes.Flush();
      o.sum_sq_error = SumLanes(lanes.de2);
      o.sum_sq_ref = SumLanes(lanes.dx2);
      o.sum_ref_error = SumLanes(lanes.dxe);
      o.max_abs_error = lanes.max_abs;
    }
  }
}

template <DType kOut>
inline void StoreElem(void* row, int64_t j, float w) {
  if constexpr (kOut == DType::kF32) {
    static_cast<float*>(row)[j] = w;
  } else if constexpr (kOut == DType::kF16) {
    static_cast<uint16_t*>(row)[j] = FloatToHalfBits(w);
  } else {
    static_cast<uint16_t*>(row)[j] = FloatToBf16Bits(w);
  }
}

template <DType kOut, int kBits, bool kSym>
void DequantizeRowsT(const DequantizeArgs& a, int64_t row_begin,
                     int64_t row_end) {
  const int64_t groups = a.cols / a.group;
  const float mf = MaxFinite(kOut);
  const size_t osize = kOut == DType::kF32 ? 4 : 2;
  const size_t ssize = a.scale_dtype == DType::kF32 ? 4 : 2;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* codes = a.codes + r * a.codes_stride;
    const void* scales = static_cast<const uint8_t*>(a.scales) +
                         static_cast<size_t>(r) * a.scales_stride * ssize;
    void* out = static_cast<uint8_t*>(a.out) +
                static_cast<size_t>(r) * a.out_stride * osize;
    for (int64_t g = 0; g < groups; ++g) {
      const float s = LoadScale(scales, g, a.scale_dtype);
      const int zp = kSym ? 0 : a.zero_points[r * a.zero_points_stride + g];
      for (int64_t j = g * a.group; j < (g + 1) * a.group; ++j) {
        int v;
        if (kBits == 8) {
          v = kSym ? static_cast<int>(static_cast<int8_t>(codes[j]))
                   : static_cast<int>(codes[j]);
        } else {
          const int nib = (codes[j >> 1] >> ((j & 1) * 4)) & 0xf;
          v = kSym ? nib - 8 : nib;
        }
        float w = static_cast<float>(v - zp) * s;
        w = w > mf ? mf : w;
        w = w < -mf ? -mf : w;
        StoreElem<kOut>(out, j, w);
      }
    }
  }
}

// Q4_1: w = code * d + m in float (ggml's dequantize_row_q4_1), then
// rounded to the output dtype and saturated like every scheme.
template <DType kOut>
void DequantizeQ4_1RowsT(const DequantizeArgs& a, int64_t row_begin,
                         int64_t row_end) {
  const int64_t groups = a.cols / kGgmlBlock;
  const float mf = MaxFinite(kOut);
  const size_t osize = kOut == DType::kF32 ? 4 : 2;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* codes = a.codes + r * a.codes_stride;
    const uint16_t* scales =
        static_cast<const uint16_t*>(a.scales) + r * a.scales_stride;
    const uint16_t* offsets =
        static_cast<const uint16_t*>(a.offsets) + r * a.offsets_stride;
    void* out = static_cast<uint8_t*>(a.out) +
                static_cast<size_t>(r) * a.out_stride * osize;
    for (int64_t g = 0; g < groups; ++g) {
      const float s = HalfBitsToFloat(scales[g]);
      const float m = HalfBitsToFloat(offsets[g]);
      for (int64_t j = g * kGgmlBlock; j < (g + 1) * kGgmlBlock; ++j) {
        const int nib = (codes[j >> 1] >> ((j & 1) * 4)) & 0xf;
        float w = static_cast<float>(nib) * s + m;
        w = w > mf ? mf : w;
        w = w < -mf ? -mf : w;
        StoreElem<kOut>(out, j, w);
      }
    }
  }
}

// The kernels of this path, for the dispatch templates of instantiate.h.
struct Kernels {
  template <DType kIn, int kBits, bool kSym, bool kMetrics>
  static void Quantize(const QuantizeArgs& a, int64_t r0, int64_t r1,
                       RowOutcome* o) {
    QuantizeRowsT<kIn, kBits, kSym, kMetrics>(a, r0, r1, o);
  }
  template <DType kOut, int kBits, bool kSym>
  static void Dequantize(const DequantizeArgs& a, int64_t r0, int64_t r1) {
    DequantizeRowsT<kOut, kBits, kSym>(a, r0, r1);
  }
  template <DType kIn, GgmlType kType, bool kMetrics>
  static void QuantizeGgml(const QuantizeArgs& a, int64_t r0, int64_t r1,
                           RowOutcome* o) {
    QuantizeGgmlRowsT<kIn, kType, kMetrics>(a, r0, r1, o);
  }
  template <DType kOut>
  static void DequantizeQ4_1(const DequantizeArgs& a, int64_t r0, int64_t r1) {
    DequantizeQ4_1RowsT<kOut>(a, r0, r1);
  }
};

void QuantizeRows(const QuantizeArgs& a, int64_t r0, int64_t r1,
                  RowOutcome* o) {
  DispatchQuantize<Kernels>(a, r0, r1, o);
}

void DequantizeRows(const DequantizeArgs& a, int64_t r0, int64_t r1) {
  DispatchDequantize<Kernels>(a, r0, r1);
}

constexpr Table kScalarTable = {Isa::kScalar, &QuantizeRows, &DequantizeRows};

}  // namespace

const Table* ScalarTable() { return &kScalarTable; }

}  // namespace nibble::kernels
