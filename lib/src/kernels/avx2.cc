// The AVX2 (+FMA, F16C) path. It reproduces scalar.cc byte for byte: the same
// per-group parameters (derived by the shared scalar code in common.h), the
// same float operations in the same order per element, and the same metric
// lane shape (column j -> lane j % 16, flushed to double every 256 columns
// and at the row's end, reduced by SumLanes).
//
// Work is done in steps of 32 columns. Every sized group (32..256) is a
// multiple of 32 and starts at a multiple of 32; only a per-row group can end
// in a partial step, which runs from a zero-padded stack buffer (zero is
// neutral for absmax and for min/max that start at 0, its codes are never
// stored except the INT4 pad nibble, which is defined as the code of 0.0, and
// its metric terms are fma(0, 0, acc) = acc).
#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/common.h"
#include "kernels/table.h"

// After every include: only the code below is compiled for AVX2, so no inline
// helper from a shared header can be emitted here with VEX encodings and
// picked by the linker for the scalar path.
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

namespace nibble::kernels {
namespace {

#define NIBBLE_AVX2_INLINE inline __attribute__((always_inline))

constexpr int kStep = 32;  // columns per step

template <DType kIn>
constexpr size_t InSize() {
  return kIn == DType::kF32 ? 4 : 2;
}

// Eight elements of an input row as float, exactly as scalar LoadElem.
template <DType kIn>
NIBBLE_AVX2_INLINE __m256 Load8(const uint8_t* p) {
  if constexpr (kIn == DType::kF32) {
    return _mm256_loadu_ps(reinterpret_cast<const float*>(p));
  } else if constexpr (kIn == DType::kF16) {
    return _mm256_cvtph_ps(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  } else {
    const __m256i w = _mm256_cvtepu16_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  }
}

// ---------------------------------------------------------------------------
// Pass 1: integer max of magnitude bits (16-bit lanes for F16/BF16, 32-bit
// for F32) and, when asymmetric, float min/max starting from 0.

template <DType kIn, bool kSym>
NIBBLE_AVX2_INLINE void ScanStep(const uint8_t* p, __m256i* amax, __m256* lo,
                                 __m256* hi) {
  if constexpr (kIn == DType::kF32) {
    const __m256i mask = _mm256_set1_epi32(0x7fffffff);
    for (int k = 0; k < 4; ++k) {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * k));
      *amax = _mm256_max_epi32(*amax, _mm256_and_si256(v, mask));
      if constexpr (!kSym) {
        const __m256 f = _mm256_castsi256_ps(v);
        *lo = _mm256_min_ps(f, *lo);  // f < lo ? f : lo
        *hi = _mm256_max_ps(f, *hi);  // f > hi ? f : hi
      }
    }
  } else {
    const __m256i mask = _mm256_set1_epi16(0x7fff);
    for (int k = 0; k < 2; ++k) {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * k));
      *amax = _mm256_max_epu16(*amax, _mm256_and_si256(v, mask));
    }
    if constexpr (!kSym) {
      for (int k = 0; k < 4; ++k) {
        const __m256 f = Load8<kIn>(p + 16 * k);
        *lo = _mm256_min_ps(f, *lo);
        *hi = _mm256_max_ps(f, *hi);
      }
    }
  }
}

NIBBLE_AVX2_INLINE uint32_t HMaxU16(__m256i v) {
  __m128i m =
      _mm_max_epu16(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_minpos_epu16(_mm_xor_si128(m, _mm_set1_epi32(-1)));
  return 0xffffu & ~static_cast<uint32_t>(_mm_cvtsi128_si32(m));
}

NIBBLE_AVX2_INLINE uint32_t HMaxU32(__m256i v) {
  __m128i m =
      _mm_max_epu32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 0, 3, 2)));
  m = _mm_max_epu32(m, _mm_shuffle_epi32(m, _MM_SHUFFLE(2, 3, 0, 1)));
  return static_cast<uint32_t>(_mm_cvtsi128_si32(m));
}

// Horizontal min/max of finite floats: the order does not matter (only the
// sign of a zero could differ, and DeriveAsymmetric maps both zeros to 0).
NIBBLE_AVX2_INLINE float HMinPs(__m256 v) {
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

NIBBLE_AVX2_INLINE float HMaxPs(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// ---------------------------------------------------------------------------
// Metric lanes: float lanes 0-7 in f[0], 8-15 in f[1]; double lanes in memory.

struct Metrics {
  // One max accumulator for all 16 lanes: the max of |e| does not depend on
  // the order (never NaN), and AVX2's 16 registers are scarce.
  __m256 e2[2], x2[2], xe[2], mx;
  alignas(32) double de2[kLanes], dx2[kLanes], dxe[kLanes];
};

NIBBLE_AVX2_INLINE void ResetMetrics(Metrics* m) {
  for (int h = 0; h < 2; ++h) {
    m->e2[h] = m->x2[h] = m->xe[h] = _mm256_setzero_ps();
  }
  m->mx = _mm256_setzero_ps();
  for (int l = 0; l < kLanes; ++l) m->de2[l] = m->dx2[l] = m->dxe[l] = 0.0;
}

NIBBLE_AVX2_INLINE void FlushLanes(__m256* f, double* d) {
  for (int h = 0; h < 2; ++h) {
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(f[h]));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(f[h], 1));
    _mm256_store_pd(d + 8 * h, _mm256_add_pd(_mm256_load_pd(d + 8 * h), lo));
    _mm256_store_pd(d + 8 * h + 4,
                    _mm256_add_pd(_mm256_load_pd(d + 8 * h + 4), hi));
    f[h] = _mm256_setzero_ps();
  }
}

NIBBLE_AVX2_INLINE void FlushMetrics(Metrics* m) {
  FlushLanes(m->e2, m->de2);
  FlushLanes(m->x2, m->dx2);
  FlushLanes(m->xe, m->dxe);
}

// ---------------------------------------------------------------------------
// Pass 2.

struct VecParams {
  __m256 inv, scale, zp, lo_clamp, hi_clamp;
};

// Quantizes 8 elements (lanes 8h..8h+7 of the metrics) to int32 codes.
template <DType kIn, bool kSym, bool kMetrics>
NIBBLE_AVX2_INLINE __m256i QuantizeVec(const uint8_t* p, const VecParams& vp,
                                       int h, Metrics* mt) {
  const __m256 x = Load8<kIn>(p);
  __m256 q = _mm256_round_ps(_mm256_mul_ps(x, vp.inv),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if constexpr (!kSym) q = _mm256_add_ps(q, vp.zp);
  q = _mm256_max_ps(vp.lo_clamp, q);  // q < lo ? lo : q
  q = _mm256_min_ps(vp.hi_clamp, q);  // q > hi ? hi : q
  if constexpr (kMetrics) {
    const __m256 d =
        _mm256_mul_ps(kSym ? q : _mm256_sub_ps(q, vp.zp), vp.scale);
    const __m256 e = _mm256_sub_ps(d, x);
    mt->e2[h] = _mm256_fmadd_ps(e, e, mt->e2[h]);
    mt->x2[h] = _mm256_fmadd_ps(x, x, mt->x2[h]);
    mt->xe[h] = _mm256_fmadd_ps(x, e, mt->xe[h]);
    const __m256 a =
        _mm256_and_ps(e, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
    mt->mx = _mm256_max_ps(a, mt->mx);  // a > max ? a : max
  }
  return _mm256_cvtps_epi32(q);  // q is an integer: exact
}

// Quantizes 32 elements at p and writes 32 (INT8) or 16 (INT4) code bytes.
template <DType kIn, int kBits, bool kSym, bool kMetrics>
NIBBLE_AVX2_INLINE void QuantizeStep(const uint8_t* p, const VecParams& vp,
                                     uint8_t* dst, Metrics* mt) {
  constexpr size_t kVecBytes = 8 * InSize<kIn>();
  // Columns 0-7, 8-15 go to lanes 0-7, 8-15; then 16-23, 24-31 to the same
  // lanes, after them, as in the scalar column order.
  const __m256i c0 = QuantizeVec<kIn, kSym, kMetrics>(p, vp, 0, mt);
  const __m256i c1 = QuantizeVec<kIn, kSym, kMetrics>(p + kVecBytes, vp, 1, mt);
  const __m256i p01 = _mm256_packs_epi32(c0, c1);
  const __m256i c2 =
      QuantizeVec<kIn, kSym, kMetrics>(p + 2 * kVecBytes, vp, 0, mt);
  const __m256i c3 =
      QuantizeVec<kIn, kSym, kMetrics>(p + 3 * kVecBytes, vp, 1, mt);
  const __m256i p23 = _mm256_packs_epi32(c2, c3);
  // Dwords of b hold 4 consecutive elements each, in the order
  // 0-3, 8-11, 16-19, 24-27 | 4-7, 12-15, 20-23, 28-31.
  __m256i b = (kBits == 8 && !kSym) ? _mm256_packus_epi16(p01, p23)
                                    : _mm256_packs_epi16(p01, p23);
  if constexpr (kBits == 8) {
    b = _mm256_permutevar8x32_epi32(b,
                                    _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), b);
  } else {
    if constexpr (kSym) b = _mm256_add_epi8(b, _mm256_set1_epi8(8));
    // Adjacent bytes (2k, 2k+1) -> one byte lo | hi << 4, as 16-bit words.
    const __m256i n = _mm256_maddubs_epi16(b, _mm256_set1_epi16(0x1001));
    const __m256i t = _mm256_packus_epi16(n, n);
    // Low 8 bytes of each lane: 16-bit units of 4 elements, lane 0 holding
    // 0-3, 8-11, 16-19, 24-27 and lane 1 the others: interleave them.
    const __m128i out = _mm_unpacklo_epi16(_mm256_castsi256_si128(t),
                                           _mm256_extracti128_si256(t, 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), out);
  }
}

// Groups whose parameters are derived before any of them is quantized: the
// derivations (divisions, data-dependent branches) then overlap instead of
// stalling every group's second pass.
constexpr int64_t kBatch = 16;

template <DType kIn, int kBits, bool kSym, bool kMetrics>
void QuantizeRowsT(const QuantizeArgs& a, int64_t row_begin, int64_t row_end,
                   RowOutcome* outcomes) {
  constexpr size_t esize = InSize<kIn>();
  const int qmax = QMax(kBits, kSym);
  VecParams vp;
  vp.lo_clamp = _mm256_set1_ps(kSym ? -static_cast<float>(qmax) : 0.0f);
  vp.hi_clamp = _mm256_set1_ps(static_cast<float>(qmax));
  const int64_t group = a.group;
  const int64_t groups = a.cols / group;
  const int64_t full_steps = group / kStep;
  const int64_t rem = group % kStep;  // nonzero only for a per-row group
  const size_t ssize = a.scale_dtype == DType::kF32 ? 4 : 2;
  alignas(32) uint8_t tail[kStep * 4];
  alignas(32) uint8_t tail_codes[kStep];
  GroupParams params[kBatch];
  Metrics mt;
  for (int64_t r = row_begin; r < row_end; ++r) {
    RowOutcome& o = outcomes[r - row_begin];
    o = RowOutcome{0.0, 0.0, 0.0, 0.0f, kRowOk, -1};
    const uint8_t* row = static_cast<const uint8_t*>(a.in) +
                         static_cast<size_t>(r) * a.in_stride * esize;
    uint8_t* codes = a.codes + r * a.codes_stride;
    void* scales = static_cast<uint8_t*>(a.scales) +
                   static_cast<size_t>(r) * a.scales_stride * ssize;
    uint8_t* zps = kSym ? nullptr : a.zero_points + r * a.zero_points_stride;
    if constexpr (kMetrics) ResetMetrics(&mt);
    for (int64_t g0 = 0; g0 < groups; g0 += kBatch) {
      const int64_t nb = groups - g0 < kBatch ? groups - g0 : kBatch;
      // Pass 1 and the parameters of each group of the batch. A failing
      // group ends the row after the groups before it are written, which
      // leaves the same bytes as the scalar group-by-group loop.
      int64_t ready = 0;
      for (; ready < nb; ++ready) {
        const int64_t g = g0 + ready, c0 = g * group;
        const uint8_t* gp = row + static_cast<size_t>(c0) * esize;
        if (rem != 0) {
          std::memset(tail, 0, sizeof(tail));
          std::memcpy(tail,
                      gp + static_cast<size_t>(full_steps) * kStep * esize,
                      static_cast<size_t>(rem) * esize);
        }
        __m256i amax = _mm256_setzero_si256();
        __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
        for (int64_t s = 0; s < full_steps; ++s) {
          ScanStep<kIn, kSym>(gp + static_cast<size_t>(s) * kStep * esize,
                              &amax, &lo, &hi);
        }
        if (rem != 0) ScanStep<kIn, kSym>(tail, &amax, &lo, &hi);
        const uint32_t m = kIn == DType::kF32 ? HMaxU32(amax) : HMaxU16(amax);
        if (m >= NonFiniteBits(kIn)) {
          o.status = kRowNonFinite;
          o.bad_col = FindNonFinite(row, kIn, c0, c0 + group);
          break;
        }
        GroupParams& p = params[ready];
        const bool fits = kSym ? DeriveSymmetric(MagnitudeToFloat(m, kIn), qmax,
                                                 a.scale_dtype, &p)
                               : DeriveAsymmetric(HMinPs(lo), HMaxPs(hi), qmax,
                                                  a.scale_dtype, &p);
        if (!fits) {
          o.status = kRowScaleOverflow;
          o.bad_col = c0;
          break;
        }
        StoreScale(scales, g, a.scale_dtype, p.scale_bits);
        if constexpr (!kSym) zps[g] = static_cast<uint8_t>(p.zp);
      }
      // Pass 2.
      for (int64_t i = 0; i < ready; ++i) {
        const int64_t c0 = (g0 + i) * group;
        const uint8_t* gp = row + static_cast<size_t>(c0) * esize;
        vp.inv = _mm256_set1_ps(params[i].inv);
        vp.scale = _mm256_set1_ps(params[i].scale);
        vp.zp = _mm256_set1_ps(params[i].zp);
        uint8_t* gc = codes + c0 * kBits / 8;
        for (int64_t s = 0; s < full_steps; ++s) {
          QuantizeStep<kIn, kBits, kSym, kMetrics>(
              gp + static_cast<size_t>(s) * kStep * esize, vp,
              gc + s * kStep * kBits / 8, &mt);
          if constexpr (kMetrics) {
            if (((c0 + (s + 1) * kStep) & (kFlushCols - 1)) == 0) {
              FlushMetrics(&mt);
            }
          }
        }
        if (rem != 0) {
          // Pad elements quantize 0.0: for INT4 with odd columns this also
          // yields the defined pad nibble of the row's last byte.
          QuantizeStep<kIn, kBits, kSym, kMetrics>(tail, vp, tail_codes, &mt);
          std::memcpy(gc + full_steps * kStep * kBits / 8, tail_codes,
                      static_cast<size_t>(kBits == 8 ? rem : (rem + 1) / 2));
        }
      }
      if (o.status != kRowOk) break;
    }
    if (o.status != kRowOk) continue;
    if constexpr (kMetrics) {
      FlushMetrics(&mt);
      o.sum_sq_error = SumLanes(mt.de2);
      o.sum_sq_ref = SumLanes(mt.dx2);
      o.sum_ref_error = SumLanes(mt.dxe);
      // |e| is never NaN (finite x, finite clamped q, finite scale), so the
      // max does not depend on the order.
      o.max_abs_error = HMaxPs(mt.mx);
    }
  }
}

template <DType kIn, int kBits, bool kSym>
void QuantizeRowsM(const QuantizeArgs& a, int64_t r0, int64_t r1,
                   RowOutcome* o) {
  if (a.metrics) {
    QuantizeRowsT<kIn, kBits, kSym, true>(a, r0, r1, o);
  } else {
    QuantizeRowsT<kIn, kBits, kSym, false>(a, r0, r1, o);
  }
}

template <DType kIn>
void QuantizeRowsD(const QuantizeArgs& a, int64_t r0, int64_t r1,
                   RowOutcome* o) {
  if (a.bits == 8) {
    a.symmetric ? QuantizeRowsM<kIn, 8, true>(a, r0, r1, o)
                : QuantizeRowsM<kIn, 8, false>(a, r0, r1, o);
  } else {
    a.symmetric ? QuantizeRowsM<kIn, 4, true>(a, r0, r1, o)
                : QuantizeRowsM<kIn, 4, false>(a, r0, r1, o);
  }
}

void QuantizeRows(const QuantizeArgs& a, int64_t r0, int64_t r1,
                  RowOutcome* o) {
  switch (a.in_dtype) {
    case DType::kF32: QuantizeRowsD<DType::kF32>(a, r0, r1, o); break;
    case DType::kF16: QuantizeRowsD<DType::kF16>(a, r0, r1, o); break;
    case DType::kBF16: QuantizeRowsD<DType::kBF16>(a, r0, r1, o); break;
  }
}

// ---------------------------------------------------------------------------
// Dequantize.

// 32 codes at p as int32 (code - offset), offset = 8 for symmetric INT4, the
// zero point for asymmetric, 0 for symmetric INT8 (sign-extended).
template <int kBits, bool kSym>
NIBBLE_AVX2_INLINE void LoadCodes(const uint8_t* p, __m256i offset,
                                  __m256i v[4]) {
  if constexpr (kBits == 8) {
    for (int k = 0; k < 4; ++k) {
      const __m128i b =
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 8 * k));
      if constexpr (kSym) {
        v[k] = _mm256_cvtepi8_epi32(b);
      } else {
        v[k] = _mm256_sub_epi32(_mm256_cvtepu8_epi32(b), offset);
      }
    }
  } else {
    const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    const __m128i mask = _mm_set1_epi8(0x0f);
    const __m128i lo = _mm_and_si128(b, mask);
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
    const __m128i e0 = _mm_unpacklo_epi8(lo, hi);  // elements 0..15
    const __m128i e1 = _mm_unpackhi_epi8(lo, hi);  // elements 16..31
    v[0] = _mm256_cvtepu8_epi32(e0);
    v[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(e0, 8));
    v[2] = _mm256_cvtepu8_epi32(e1);
    v[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(e1, 8));
    for (int k = 0; k < 4; ++k) v[k] = _mm256_sub_epi32(v[k], offset);
  }
}

// FloatToBf16Bits on 8 lanes, results in the low 16 bits of each dword.
NIBBLE_AVX2_INLINE __m256i FloatToBf16x8(__m256 w) {
  const __m256i x = _mm256_castps_si256(w);
  const __m256i top = _mm256_srli_epi32(x, 16);
  const __m256i nan =
      _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                         _mm256_set1_epi32(0x7f800000));
  const __m256i bias = _mm256_add_epi32(
      _mm256_set1_epi32(0x7fff), _mm256_and_si256(top, _mm256_set1_epi32(1)));
  const __m256i rounded = _mm256_srli_epi32(_mm256_add_epi32(x, bias), 16);
  const __m256i quiet = _mm256_or_si256(top, _mm256_set1_epi32(0x40));
  return _mm256_blendv_epi8(rounded, quiet, nan);
}

template <DType kOut, int kBits, bool kSym>
NIBBLE_AVX2_INLINE void DequantizeStep(const uint8_t* p, __m256i offset,
                                       __m256 scale, __m256 mf, __m256 neg_mf,
                                       uint8_t* dst) {
  __m256i v[4];
  LoadCodes<kBits, kSym>(p, offset, v);
  __m256 w[4];
  for (int k = 0; k < 4; ++k) {
    w[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(v[k]), scale);
    w[k] = _mm256_min_ps(mf, w[k]);      // w > mf ? mf : w
    w[k] = _mm256_max_ps(neg_mf, w[k]);  // w < -mf ? -mf : w
  }
  if constexpr (kOut == DType::kF32) {
    for (int k = 0; k < 4; ++k) {
      _mm256_storeu_ps(reinterpret_cast<float*>(dst) + 8 * k, w[k]);
    }
  } else if constexpr (kOut == DType::kF16) {
    for (int k = 0; k < 4; ++k) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst) + k,
                       _mm256_cvtps_ph(w[k], _MM_FROUND_TO_NEAREST_INT));
    }
  } else {
    for (int k = 0; k < 4; k += 2) {
      const __m256i packed =
          _mm256_packus_epi32(FloatToBf16x8(w[k]), FloatToBf16x8(w[k + 1]));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst) + k / 2,
                          _mm256_permute4x64_epi64(packed, 0xd8));
    }
  }
}

template <DType kOut, int kBits, bool kSym>
void DequantizeRowsT(const DequantizeArgs& a, int64_t row_begin,
                     int64_t row_end) {
  constexpr size_t osize = kOut == DType::kF32 ? 4 : 2;
  const int64_t group = a.group;
  const int64_t groups = a.cols / group;
  const int64_t full_steps = group / kStep;
  const int64_t rem = group % kStep;
  const __m256 mf = _mm256_set1_ps(MaxFinite(kOut));
  const __m256 neg_mf = _mm256_set1_ps(-MaxFinite(kOut));
  const size_t ssize = a.scale_dtype == DType::kF32 ? 4 : 2;
  alignas(32) uint8_t tail_codes[kStep];
  alignas(32) uint8_t tail_out[kStep * 4];
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* codes = a.codes + r * a.codes_stride;
    const void* scales = static_cast<const uint8_t*>(a.scales) +
                         static_cast<size_t>(r) * a.scales_stride * ssize;
    uint8_t* out = static_cast<uint8_t*>(a.out) +
                   static_cast<size_t>(r) * a.out_stride * osize;
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t c0 = g * group;
      const __m256 s = _mm256_set1_ps(LoadScale(scales, g, a.scale_dtype));
      int offset = kSym ? (kBits == 4 ? 8 : 0) : 0;
      if constexpr (!kSym) offset = a.zero_points[r * a.zero_points_stride + g];
      const __m256i off = _mm256_set1_epi32(offset);
      const uint8_t* gc = codes + c0 * kBits / 8;
      uint8_t* go = out + static_cast<size_t>(c0) * osize;
      for (int64_t st = 0; st < full_steps; ++st) {
        DequantizeStep<kOut, kBits, kSym>(
            gc + st * kStep * kBits / 8, off, s, mf, neg_mf,
            go + static_cast<size_t>(st) * kStep * osize);
      }
      if (rem != 0) {
        std::memset(tail_codes, 0, sizeof(tail_codes));
        std::memcpy(tail_codes, gc + full_steps * kStep * kBits / 8,
                    static_cast<size_t>(kBits == 8 ? rem : (rem + 1) / 2));
        DequantizeStep<kOut, kBits, kSym>(tail_codes, off, s, mf, neg_mf,
                                          tail_out);
        std::memcpy(go + static_cast<size_t>(full_steps) * kStep * osize,
                    tail_out, static_cast<size_t>(rem) * osize);
      }
    }
  }
}

template <DType kOut>
void DequantizeRowsD(const DequantizeArgs& a, int64_t r0, int64_t r1) {
  if (a.bits == 8) {
    a.symmetric ? DequantizeRowsT<kOut, 8, true>(a, r0, r1)
                : DequantizeRowsT<kOut, 8, false>(a, r0, r1);
  } else {
    a.symmetric ? DequantizeRowsT<kOut, 4, true>(a, r0, r1)
                : DequantizeRowsT<kOut, 4, false>(a, r0, r1);
  }
}

void DequantizeRows(const DequantizeArgs& a, int64_t r0, int64_t r1) {
  switch (a.out_dtype) {
    case DType::kF32: DequantizeRowsD<DType::kF32>(a, r0, r1); break;
    case DType::kF16: DequantizeRowsD<DType::kF16>(a, r0, r1); break;
    case DType::kBF16: DequantizeRowsD<DType::kBF16>(a, r0, r1); break;
  }
}

#undef NIBBLE_AVX2_INLINE

constexpr Table kAvx2Table = {Isa::kAvx2, &QuantizeRows, &DequantizeRows};

}  // namespace

// Baseline code again: the exported getter must be safe to call on any CPU.
#pragma GCC pop_options

const Table* Avx2Table() { return &kAvx2Table; }

}  // namespace nibble::kernels
