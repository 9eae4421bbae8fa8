// The AVX-512 (F/BW/VL/DQ) path: byte-identical to scalar.cc, which is the
// specification. One zmm holds 16 floats (pass 2) or 32 16-bit inputs
// (pass 1); tails use zero-filling masked loads and masked stores, so no row
// is read or written past its end (software prefetches may point past it;
// they never fault).
//
// Why zero fill is neutral: pass 1 takes maxima of non-negative bit patterns
// that start at 0; an element of 0.0 quantizes to the code of 0.0 (which is
// exactly the pad nibble of an odd INT4 row), dequantizes to 0 and has e = 0,
// and fma(0, 0, acc) == acc because no metric lane ever holds -0.0 (it starts
// at +0.0 and an exact zero sum rounds to +0.0).

// GCC 12.2's AVX-512 headers pass `__m512i __Y = __Y;` (_mm512_undefined_*)
// as the pass-through operand of plain intrinsics such as _mm512_srli_epi32,
// which -Wuninitialized (not only -Wmaybe-uninitialized, which CMake already
// silences for this file) reports at the header's line once inlined (GCC bug
// 105593, fixed in 12.3). The state must be set around the header itself.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <climits>
#include <cstdint>
#include <limits>

#include "dispatch.h"
#include "kernels/common.h"
#include "kernels/instantiate.h"
#include "kernels/table.h"
#include "nibble/types.h"

// After every include: only the kernels below get AVX-512 encodings, never an
// inline helper shared with the scalar path (see style.md).
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")

namespace nibble::kernels {
namespace {

// ---------------------------------------------------------------------------
// Masks and loads.

// The first n lanes (n >= 0; n beyond the lane count means all of them).
inline __mmask16 Mask16(int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xffff)
                 : static_cast<__mmask16>((1u << n) - 1u);
}
inline __mmask32 Mask32(int64_t n) {
  return n >= 32 ? static_cast<__mmask32>(0xffffffffu)
                 : static_cast<__mmask32>((1u << n) - 1u);
}
inline __mmask64 Mask64(int64_t n) {
  return n >= 64 ? static_cast<__mmask64>(~0ull)
                 : static_cast<__mmask64>((1ull << n) - 1ull);
}

// 16 input elements starting at column j as floats; kMasked: only the first
// n (<= 16, may be <= 0) are read, the rest are 0.0.
template <DType kIn, bool kMasked>
inline __m512 LoadX(const void* row, int64_t j, int64_t n) {
  if constexpr (kIn == DType::kF32) {
    const float* p = static_cast<const float*>(row) + j;
    if constexpr (kMasked) {
      return _mm512_maskz_loadu_ps(Mask16(n > 0 ? n : 0), p);
    } else {
      return _mm512_loadu_ps(p);
    }
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(row) + j;
    __m256i h;
    if constexpr (kMasked) {
      h = _mm256_maskz_loadu_epi16(Mask16(n > 0 ? n : 0), p);
    } else {
      h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    }
    if constexpr (kIn == DType::kF16) {
      return _mm512_cvtph_ps(h);
    } else {
      return _mm512_castsi512_ps(
          _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    }
  }
}

// ---------------------------------------------------------------------------
// Pass 1: integer maxima over the group's bit patterns.
//
// Symmetric: max of the magnitude bits (exact; NaN/Inf show up as >=
// NonFiniteBits). Asymmetric: the scalar path's float min and max starting
// at 0.0 are recovered from the bits, which is exact and cheaper than
// converting: among non-negative patterns the signed integer maximum is the
// largest value (hi), and among negative ones the unsigned maximum has the
// largest magnitude (lo = -magnitude). Starting both at 0 reproduces the
// "start at 0.0" of the scalar loop; -0.0 as lo is treated as 0 by
// DeriveAsymmetric exactly like +0.0.
//
// Each group leaves one vector of lane maxima (u16 lanes for F16/BF16, u32
// for F32); the lanes of the 16 groups of a batch are then reduced together
// by a transpose tree (about 3 instructions per group instead of a dozen).

// Lane maxima of columns [c0, c1) of a row. hi: symmetric, magnitude maxima;
// asymmetric, signed maxima started at 0 (so every lane is a non-negative
// pattern). neg (asymmetric): unsigned maxima of the raw patterns.
template <DType kIn, bool kSym>
inline void ScanGroupLanes(const void* row, int64_t c0, int64_t c1, __m512i* hi,
                           __m512i* neg) {
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, n0 = a0, n1 = a0;
  if constexpr (kIn == DType::kF32) {
    const uint32_t* p = static_cast<const uint32_t*>(row);
    const __m512i mag = _mm512_set1_epi32(0x7fffffff);
    int64_t j = c0;
    for (; j + 32 <= c1; j += 32) {
      const __m512i v0 = _mm512_loadu_si512(p + j);
      const __m512i v1 = _mm512_loadu_si512(p + j + 16);
      if constexpr (kSym) {
        a0 = _mm512_max_epu32(a0, _mm512_and_si512(v0, mag));
        a1 = _mm512_max_epu32(a1, _mm512_and_si512(v1, mag));
      } else {
        a0 = _mm512_max_epi32(a0, v0);
        a1 = _mm512_max_epi32(a1, v1);
        n0 = _mm512_max_epu32(n0, v0);
        n1 = _mm512_max_epu32(n1, v1);
      }
    }
    for (; j < c1; j += 16) {
      const __m512i v = _mm512_maskz_loadu_epi32(Mask16(c1 - j), p + j);
      if constexpr (kSym) {
        a0 = _mm512_max_epu32(a0, _mm512_and_si512(v, mag));
      } else {
        a0 = _mm512_max_epi32(a0, v);
        n0 = _mm512_max_epu32(n0, v);
      }
    }
    *hi = kSym ? _mm512_max_epu32(a0, a1) : _mm512_max_epi32(a0, a1);
    if constexpr (!kSym) *neg = _mm512_max_epu32(n0, n1);
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(row);
    const __m512i mag = _mm512_set1_epi16(0x7fff);
    int64_t j = c0;
    for (; j + 64 <= c1; j += 64) {
      const __m512i v0 = _mm512_loadu_si512(p + j);
      const __m512i v1 = _mm512_loadu_si512(p + j + 32);
      if constexpr (kSym) {
        a0 = _mm512_max_epu16(a0, _mm512_and_si512(v0, mag));
        a1 = _mm512_max_epu16(a1, _mm512_and_si512(v1, mag));
      } else {
        a0 = _mm512_max_epi16(a0, v0);
        a1 = _mm512_max_epi16(a1, v1);
        n0 = _mm512_max_epu16(n0, v0);
        n1 = _mm512_max_epu16(n1, v1);
      }
    }
    for (; j < c1; j += 32) {
      const __m512i v = _mm512_maskz_loadu_epi16(Mask32(c1 - j), p + j);
      if constexpr (kSym) {
        a0 = _mm512_max_epu16(a0, _mm512_and_si512(v, mag));
      } else {
        a0 = _mm512_max_epi16(a0, v);
        n0 = _mm512_max_epu16(n0, v);
      }
    }
    *hi = kSym ? _mm512_max_epu16(a0, a1) : _mm512_max_epi16(a0, a1);
    if constexpr (!kSym) *neg = _mm512_max_epu16(n0, n1);
  }
}

// v[k] (32 u16 lanes each) -> lane k of the result = max over v[k], as u32.
// Each step interleaves pairs of vectors and keeps the larger halves: after
// the 16-, 32- and 64-bit steps every 128-bit lane holds one partial maximum
// of each of 8 groups; the last two steps fold the four 128-bit lanes.
inline __m512i TreeMaxU16(const __m512i* v) {
  __m512i r[8], s[4], t[2];
  for (int k = 0; k < 8; ++k)
    r[k] = _mm512_max_epu16(_mm512_unpacklo_epi16(v[2 * k], v[2 * k + 1]),
                            _mm512_unpackhi_epi16(v[2 * k], v[2 * k + 1]));
  for (int k = 0; k < 4; ++k)
    s[k] = _mm512_max_epu16(_mm512_unpacklo_epi32(r[2 * k], r[2 * k + 1]),
                            _mm512_unpackhi_epi32(r[2 * k], r[2 * k + 1]));
  for (int k = 0; k < 2; ++k)
    t[k] = _mm512_max_epu16(_mm512_unpacklo_epi64(s[2 * k], s[2 * k + 1]),
                            _mm512_unpackhi_epi64(s[2 * k], s[2 * k + 1]));
  // [t0 l0|l2, t0 l1|l3, t1 l0|l2, t1 l1|l3]
  const __m512i x = _mm512_max_epu16(
      _mm512_shuffle_i32x4(t[0], t[1], _MM_SHUFFLE(1, 0, 1, 0)),
      _mm512_shuffle_i32x4(t[0], t[1], _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512i z = _mm512_shuffle_i32x4(x, x, _MM_SHUFFLE(3, 1, 2, 0));
  return _mm512_cvtepu16_epi32(_mm256_max_epu16(
      _mm512_castsi512_si256(z), _mm512_extracti32x8_epi32(z, 1)));
}

// The same for 16 u32 lanes per vector.
inline __m512i TreeMaxU32(const __m512i* v) {
  __m512i r[8], s[4], x[2];
  for (int k = 0; k < 8; ++k)
    r[k] = _mm512_max_epu32(_mm512_unpacklo_epi32(v[2 * k], v[2 * k + 1]),
                            _mm512_unpackhi_epi32(v[2 * k], v[2 * k + 1]));
  for (int k = 0; k < 4; ++k)
    s[k] = _mm512_max_epu32(_mm512_unpacklo_epi64(r[2 * k], r[2 * k + 1]),
                            _mm512_unpackhi_epi64(r[2 * k], r[2 * k + 1]));
  for (int k = 0; k < 2; ++k)
    x[k] = _mm512_max_epu32(
        _mm512_shuffle_i32x4(s[2 * k], s[2 * k + 1], _MM_SHUFFLE(1, 0, 1, 0)),
        _mm512_shuffle_i32x4(s[2 * k], s[2 * k + 1], _MM_SHUFFLE(3, 2, 3, 2)));
  return _mm512_max_epu32(
      _mm512_shuffle_i32x4(x[0], x[1], _MM_SHUFFLE(2, 0, 2, 0)),
      _mm512_shuffle_i32x4(x[0], x[1], _MM_SHUFFLE(3, 1, 3, 1)));
}

// Magnitude bits per group of a batch (lane k = group k; 0 past nb).
struct BatchBits {
  __m512i hi;   // of max(max, 0) (symmetric: of absmax)
  __m512i neg;  // of -min(min, 0) (asymmetric only)
};

template <DType kIn, bool kSym>
inline BatchBits ScanBatch(const void* row, int64_t c0, int64_t group, int nb) {
  __m512i hv[16], nv[16];
  for (int k = 0; k < nb; ++k)
    ScanGroupLanes<kIn, kSym>(row, c0 + k * group, c0 + (k + 1) * group, &hv[k],
                              &nv[k]);
  for (int k = nb; k < 16; ++k) hv[k] = nv[k] = _mm512_setzero_si512();
  constexpr bool kWide = kIn == DType::kF32;
  BatchBits b;
  b.hi = kWide ? TreeMaxU32(hv) : TreeMaxU16(hv);
  if constexpr (kSym) {
    b.neg = _mm512_setzero_si512();
  } else {
    const __m512i n = kWide ? TreeMaxU32(nv) : TreeMaxU16(nv);
    const __m512i sign = _mm512_set1_epi32(kWide ? INT32_MIN : 0x8000);
    const __m512i mag = _mm512_set1_epi32(kWide ? 0x7fffffff : 0x7fff);
    b.neg = _mm512_maskz_and_epi32(_mm512_test_epi32_mask(n, sign), n, mag);
  }
  return b;
}

// ---------------------------------------------------------------------------
// Pass 2: quantize, pack, measure.

struct VecParams {
  __m512 inv, zp, scale, lo, hi;
  __m512i zp_i, lo_i, hi_i;  // the same as integers
  // Bytes ahead of the current input to prefetch: the span of one batch
  // (at most kMaxPrefetch), so that pass 1 of the next batch or row finds
  // its data in cache. Measured 15-20% on whole-row groups (F16 INT8
  // per-channel), where pass 1 is otherwise a plain stream with no
  // arithmetic to overlap; neutral on 128-column groups.
  int64_t prefetch;
};
constexpr int64_t kMaxPrefetch = 64 * 1024;

struct MetricLanes {
  __m512 e2, x2, xe, max_abs;
  __m512d de2[2], dx2[2], dxe[2];

  void Reset() {
    e2 = x2 = xe = max_abs = _mm512_setzero_ps();
    for (int i = 0; i < 2; ++i) {
      de2[i] = dx2[i] = dxe[i] = _mm512_setzero_pd();
    }
  }
  static void FlushOne(__m512& f, __m512d* d) {
    d[0] = _mm512_add_pd(d[0], _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
    d[1] = _mm512_add_pd(d[1], _mm512_cvtps_pd(_mm512_extractf32x8_ps(f, 1)));
    f = _mm512_setzero_ps();
  }
  void Flush() {
    FlushOne(e2, de2);
    FlushOne(x2, dx2);
    FlushOne(xe, dxe);
  }
  // Lane i of x and q is column 16k + i of the row.
  void Add(__m512 x, __m512 d) {
    const __m512 e = _mm512_sub_ps(d, x);
    e2 = _mm512_fmadd_ps(e, e, e2);
    x2 = _mm512_fmadd_ps(x, x, x2);
    xe = _mm512_fmadd_ps(x, e, xe);
    // max(|e|, |max_abs|) in one VRANGEPS (imm 0b1011: larger magnitude,
    // sign cleared). No lane holds a NaN, so this is the scalar
    // `a > max ? a : max` on a = |e|.
    max_abs = _mm512_range_ps(e, max_abs, 0x0b);
  }
};

// GCC 12's _mm512_reduce_max_ps extracts through _mm256_undefined_ps(); this
// uses the DQ extract instead.
inline float ReduceMaxPs(__m512 v) {
  __m256 m =
      _mm256_max_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
  x = _mm_max_ps(x, _mm_shuffle_ps(x, x, 0x4e));
  x = _mm_max_ps(x, _mm_shuffle_ps(x, x, 0xb1));
  return _mm_cvtss_f32(x);
}

inline double SumDoubleLanes(const __m512d* d) {
  alignas(64) double lanes[kLanes];
  _mm512_store_pd(lanes, d[0]);
  _mm512_store_pd(lanes + 8, d[1]);
  return SumLanes(lanes);
}

// The clamped code value of 16 elements, as float (an integer value).
//
// kClamp = false (symmetric groups whose scale was not capped): the scalar
// clamp never binds, so it is left out. The scale is at least absmax / qmax
// (rounded up from a double quotient, relative error <= 2^-53) and
// inv = 1/scale and x * inv each add at most one float rounding, so
// |x * inv| <= qmax * (1 + 2^-22) < qmax + 1/2 and rounds to at most qmax.
// A capped scale (common.h) is below absmax / qmax, by up to one part in 2^7
// (BF16), so 127 * (1 + 2^-7) can round to 128: those groups, and every
// asymmetric group, take the clamp (kClamp = true). The equivalence suites
// check both against scalar.cc.
template <bool kSym, bool kClamp>
inline __m512 QuantizeVec(__m512 x, const VecParams& p) {
  static_assert(kSym || kClamp, "asymmetric codes are always clamped");
  __m512 q = _mm512_roundscale_ps(
      _mm512_mul_ps(x, p.inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if constexpr (!kClamp) return q;
  if constexpr (!kSym) q = _mm512_add_ps(q, p.zp);
  // As the scalar `q < lo ? lo : q` then `q > hi ? hi : q`.
  q = _mm512_max_ps(p.lo, q);
  return _mm512_min_ps(p.hi, q);
}

// The same codes computed in the integer domain, one instruction shorter:
// VCVTPS2DQ with embedded round-to-nearest-even ({rn-sae}, MXCSR untouched)
// is ROUNDSCALE followed by an exact conversion, and every rounded value is
// an integer of magnitude at most qmax + 1 (the scale is at least
// absmax / qmax, (hi - lo) / qmax when asymmetric, or capped just below it),
// so adding the zero point (<= qmax) and clamping (max then min) give the
// same integers in int32 as in float.
// Measured 12% faster on F16 -> INT4-g128. Used when no metric needs the
// float level; the metrics path keeps the float sequence of scalar.cc.
template <bool kSym, bool kClamp>
inline __m512i QuantizeVecInt(__m512 x, const VecParams& p) {
  __m512i q = _mm512_cvt_roundps_epi32(
      _mm512_mul_ps(x, p.inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if constexpr (!kClamp) return q;  // cannot bind (see QuantizeVec)
  if constexpr (!kSym) q = _mm512_add_epi32(q, p.zp_i);
  q = _mm512_max_epi32(p.lo_i, q);
  return _mm512_min_epi32(p.hi_i, q);
}

// Dword k of the packed result picks the 4 bytes that came from vector k / 4,
// elements 4 (k % 4) ..: undoes the 128-bit-lane interleave of packs/packus.
inline __m512i PackOrder() {
  return _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11,
                           15);
}

// kVecs (2 or 4) vectors of 16 elements starting at column j (a multiple of
// 16). kMasked: only the first n elements exist (n < 16 * kVecs); the rest
// are loaded as 0 and not stored. Metric lanes see the vectors in column
// order.
template <DType kIn, int kBits, bool kSym, bool kClamp, bool kMetrics,
          int kVecs, bool kMasked>
inline void QuantizeChunk(const void* row, int64_t j, int64_t n, uint8_t* codes,
                          const VecParams& p, MetricLanes& m) {
  __m512 x[4], q[4];
  __m512i c[4];
  if constexpr (!kMasked && kVecs == 4) {
    constexpr int64_t kEs = kIn == DType::kF32 ? 4 : 2;
    const char* ahead = static_cast<const char*>(row) + j * kEs + p.prefetch;
    for (int64_t l = 0; l < 64 * kEs; l += 64)
      _mm_prefetch(ahead + l, _MM_HINT_T0);
  }
  for (int v = 0; v < kVecs; ++v) {
    x[v] = LoadX<kIn, kMasked>(row, j + 16 * v, n - 16 * v);
    if constexpr (kMetrics) {
      q[v] = QuantizeVec<kSym, kClamp>(x[v], p);
      // q is an integer value in range: truncation is exact.
      c[v] = _mm512_cvttps_epi32(q[v]);
    } else {
      c[v] = QuantizeVecInt<kSym, kClamp>(x[v], p);
    }
  }
  for (int v = kVecs; v < 4; ++v) c[v] = _mm512_setzero_si512();
  // int32 -> 8-bit codes in column order (packs interleave 128-bit lanes).
  const __m512i ab = _mm512_packs_epi32(c[0], c[1]);
  const __m512i cd = _mm512_packs_epi32(c[2], c[3]);
  __m512i bytes =
      kSym ? _mm512_packs_epi16(ab, cd) : _mm512_packus_epi16(ab, cd);
  bytes = _mm512_permutexvar_epi32(PackOrder(), bytes);
  if constexpr (kBits == 8) {
    uint8_t* dst = codes + j;
    if constexpr (kVecs == 4) {
      if constexpr (kMasked) {
        _mm512_mask_storeu_epi8(dst, Mask64(n), bytes);
      } else {
        _mm512_storeu_si512(dst, bytes);
      }
    } else {
      const __m256i b = _mm512_castsi512_si256(bytes);
      if constexpr (kMasked) {
        _mm256_mask_storeu_epi8(dst, Mask32(n), b);
      } else {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), b);
      }
    }
  } else {
    // Byte k = code(2k) + 16 * code(2k+1). Symmetric codes are signed bytes
    // -7..7: (c0 + 8) + 16 (c1 + 8) = c0 + 16 c1 + 136.
    const __m512i w = _mm512_set1_epi16(0x1001);  // bytes {1, 16}
    __m512i pairs;
    if constexpr (kSym) {
      pairs = _mm512_add_epi16(_mm512_maddubs_epi16(w, bytes),
                               _mm512_set1_epi16(136));
    } else {
      pairs = _mm512_maddubs_epi16(bytes, w);
    }
    uint8_t* dst = codes + (j >> 1);
    if constexpr (kVecs == 4) {
      const __m256i b = _mm512_cvtepi16_epi8(pairs);
      if constexpr (kMasked) {
        _mm256_mask_storeu_epi8(dst, Mask32((n + 1) >> 1), b);
      } else {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), b);
      }
    } else {
      const __m128i b = _mm256_cvtepi16_epi8(_mm512_castsi512_si256(pairs));
      if constexpr (kMasked) {
        _mm_mask_storeu_epi8(dst, Mask16((n + 1) >> 1), b);
      } else {
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), b);
      }
    }
  }
  if constexpr (kMetrics) {
    for (int v = 0; v < kVecs; ++v) {
      const __m512 level = kSym ? q[v] : _mm512_sub_ps(q[v], p.zp);
      m.Add(x[v], _mm512_mul_ps(level, p.scale));
    }
  }
}

// Columns [j0, j1) of one group, j0 a multiple of 16.
template <DType kIn, int kBits, bool kSym, bool kClamp, bool kMetrics>
inline void QuantizeSpanT(const void* row, int64_t j0, int64_t j1,
                          uint8_t* codes, const VecParams& p, MetricLanes& m) {
  int64_t j = j0;
  for (; j + 64 <= j1; j += 64)
    QuantizeChunk<kIn, kBits, kSym, kClamp, kMetrics, 4, false>(row, j, 64,
                                                                codes, p, m);
  if (j + 32 <= j1) {
    QuantizeChunk<kIn, kBits, kSym, kClamp, kMetrics, 2, false>(row, j, 32,
                                                                codes, p, m);
    j += 32;
  }
  if (j < j1)
    QuantizeChunk<kIn, kBits, kSym, kClamp, kMetrics, 2, true>(row, j, j1 - j,
                                                               codes, p, m);
}

// The same with the code clamp chosen per group: `capped` (a symmetric group
// whose scale the cap of common.h stepped down) takes the clamped variant.
template <DType kIn, int kBits, bool kSym, bool kMetrics>
inline void QuantizeSpan(bool capped, const void* row, int64_t j0, int64_t j1,
                         uint8_t* codes, const VecParams& p, MetricLanes& m) {
  if constexpr (kSym) {
    if (!capped) {
      QuantizeSpanT<kIn, kBits, kSym, false, kMetrics>(row, j0, j1, codes, p,
                                                       m);
      return;
    }
  }
  QuantizeSpanT<kIn, kBits, kSym, true, kMetrics>(row, j0, j1, codes, p, m);
}

// ---------------------------------------------------------------------------
// Per-group parameters, 16 groups at a time.
//
// DeriveSymmetric / DeriveAsymmetric (common.h) define the parameters. Their
// RoundScaleUp rounds to the scale dtype in two scalar steps, each with a
// data-dependent branch taken about half the time (double -> float by
// nearest, then nextafter when below v; float -> F16/BF16 by nearest, then one
// increment when below v). Called once per group that costs about as much as
// quantizing the group (measured on Zen 4, one thread, F16 4096x11008:
// INT4-g128 at 7.1 GB/s through them, 13 GB/s with the code below; g32 2.8
// vs 7.9 GB/s). Each step computes "the smallest value of
// the type that is >= v", which the instructions compute directly with
// directed rounding encoded in the instruction (VCVTPD2PS {ru-sae}, VCVTPS2PH
// with imm8 round-up), MXCSR untouched:
//  - float(v) by nearest, bumped by nextafter when below v, is the smallest
//    float >= v, i.e. float(v) rounded up;
//  - F16 and BF16 values are floats, so none lies in [v, f) for that f:
//    nearest-then-increment of f gives the smallest F16/BF16 >= f, i.e. f
//    rounded up (and the smallest one >= v);
//  - the floors (2^-24 for F16 comes for free: a positive value rounded up is
//    at least the smallest subnormal; 0x0080 for BF16; FLT_MIN for F32) and
//    the overflow checks (Inf after rounding) are the scalar ones.
// The inverse (1.0f / scale), the zero point (nearest of -l * inv, clamped,
// -0.0 when there is no negative element, exactly as the scalar code) and the
// zero-group case are the same IEEE operations. kVectorDerive = false calls
// the shared scalar functions instead (same bytes, slower); the scratch
// harness compared both against scalar.cc and checked the vector derivation
// against DeriveSymmetric / DeriveAsymmetric for every F16 and BF16 magnitude
// (and F16 (lo, hi) pairs), and for F32 magnitudes at every exponent.
constexpr bool kVectorDerive = true;
constexpr int kBatchGroups = 16;

struct BatchParams {
  alignas(64) float scale[kBatchGroups];
  alignas(64) float inv[kBatchGroups];
  alignas(64) float zp[kBatchGroups];
  alignas(64) uint32_t bits[kBatchGroups];  // stored scale representation
};

// Float values of 16 magnitude-bit patterns of an input dtype.
template <DType kIn>
inline __m512 MagnitudesToFloat(__m512i bits) {
  if constexpr (kIn == DType::kF16) {
    return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(bits));
  } else if constexpr (kIn == DType::kBF16) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(bits, 16));
  } else {
    return _mm512_castsi512_ps(bits);
  }
}

inline __m512 JoinPs(__m256 lo, __m256 hi) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
}

// RoundScaleUp on 16 lanes: v (positive, finite, as two halves of 8 doubles)
// rounded up to scale_dtype. Returns the lanes that overflow.
inline __mmask16 RoundScaleUpX16(__m512d v_lo, __m512d v_hi, DType dt,
                                 __m512* scale, __m512i* bits) {
  constexpr int kUp = _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC;
  __m512 f = JoinPs(_mm512_cvt_roundpd_ps(v_lo, kUp),
                    _mm512_cvt_roundpd_ps(v_hi, kUp));
  if (dt == DType::kF32) {
    // As `f < FLT_MIN ? FLT_MIN : f`.
    f = _mm512_max_ps(_mm512_set1_ps(1.17549435e-38f), f);
    *scale = f;
    *bits = _mm512_castps_si512(f);
    return _mm512_cmpge_epu32_mask(*bits, _mm512_set1_epi32(0x7f800000));
  }
  if (dt == DType::kF16) {
    const __m256i h =
        _mm512_cvtps_ph(f, _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC);
    *scale = _mm512_cvtph_ps(h);
    *bits = _mm512_cvtepu16_epi32(h);
    return _mm512_cmpge_epu32_mask(*bits, _mm512_set1_epi32(0x7c00));
  }
  // BF16: f > 0 is finite, so rounding its upper half up is adding 0xffff.
  __m512i b = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_castps_si512(f), _mm512_set1_epi32(0xffff)), 16);
  b = _mm512_max_epu32(b, _mm512_set1_epi32(0x0080));
  *scale = _mm512_castsi512_ps(_mm512_slli_epi32(b, 16));
  *bits = b;
  return _mm512_cmpge_epu32_mask(b, _mm512_set1_epi32(0x7f80));
}

// DeriveSymmetric on 16 lanes of magnitude bits; returns the lanes whose
// scale overflows.
template <DType kIn>
inline __mmask16 DeriveSymmetricX16(__m512i abits, int qmax, DType sdt,
                                    BatchParams* bp) {
  const __mmask16 nz = _mm512_test_epi32_mask(abits, abits);
  const __m512 a = MagnitudesToFloat<kIn>(abits);
  const __m512d q = _mm512_set1_pd(static_cast<double>(qmax));
  const __m512d v_lo =
      _mm512_div_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(a)), q);
  const __m512d v_hi =
      _mm512_div_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(a, 1)), q);
  __m512 scale;
  __m512i bits;
  const __mmask16 overflow = RoundScaleUpX16(v_lo, v_hi, sdt, &scale, &bits);
  scale = _mm512_maskz_mov_ps(nz, scale);
  _mm512_store_ps(bp->scale, scale);
  _mm512_store_ps(bp->inv,
                  _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), scale));
  _mm512_store_ps(bp->zp, _mm512_setzero_ps());
  _mm512_store_si512(bp->bits, _mm512_maskz_mov_epi32(nz, bits));
  return overflow & nz;
}

// DeriveAsymmetric(-magnitude(nbits), magnitude(hbits)) on 16 lanes.
template <DType kIn>
inline __mmask16 DeriveAsymmetricX16(__m512i nbits, __m512i hbits, int qmax,
                                     DType sdt, BatchParams* bp) {
  const __mmask16 has_neg = _mm512_test_epi32_mask(nbits, nbits);
  const __mmask16 nz = has_neg | _mm512_test_epi32_mask(hbits, hbits);
  const __m512 n = MagnitudesToFloat<kIn>(nbits);  // -l (+0.0 when l = 0)
  const __m512 h = MagnitudesToFloat<kIn>(hbits);
  // range = h - l = h + (-l) in double, exact operands as in the scalar code.
  const __m512d q = _mm512_set1_pd(static_cast<double>(qmax));
  const __m512d r_lo =
      _mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(h)),
                    _mm512_cvtps_pd(_mm512_castps512_ps256(n)));
  const __m512d r_hi =
      _mm512_add_pd(_mm512_cvtps_pd(_mm512_extractf32x8_ps(h, 1)),
                    _mm512_cvtps_pd(_mm512_extractf32x8_ps(n, 1)));
  __m512 scale;
  __m512i bits;
  const __mmask16 overflow = RoundScaleUpX16(
      _mm512_div_pd(r_lo, q), _mm512_div_pd(r_hi, q), sdt, &scale, &bits);
  scale = _mm512_maskz_mov_ps(nz, scale);
  const __m512 inv = _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), scale);
  // The scalar code rounds float(-l) * inv where l is +0.0 without negative
  // elements, so -l is -0.0 and so is the zero point (kept: it is added to
  // every rounded value in pass 2).
  const __m512 negl = _mm512_mask_mov_ps(_mm512_set1_ps(-0.0f), has_neg, n);
  __m512 zp = _mm512_roundscale_ps(
      _mm512_mul_ps(negl, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  zp = _mm512_max_ps(_mm512_setzero_ps(), zp);  // `zp < 0 ? 0 : zp`
  zp = _mm512_min_ps(_mm512_set1_ps(static_cast<float>(qmax)), zp);
  _mm512_store_ps(bp->scale, scale);
  _mm512_store_ps(bp->inv, inv);
  _mm512_store_ps(bp->zp, _mm512_maskz_mov_ps(nz, zp));
  _mm512_store_si512(bp->bits, _mm512_maskz_mov_epi32(nz, bits));
  return overflow & nz;
}

// The shared scalar functions for the lanes in `lanes`: their parameters
// replace those lanes of bp and their verdicts those bits of `overflow`,
// which is returned. Out of line and cold: with kVectorDerive only groups
// next to the scale dtype's limit come here.
template <DType kIn, bool kSym>
__attribute__((noinline, cold)) __mmask16 DeriveScalarLanesX16(
    const BatchBits& b, __mmask16 lanes, __mmask16 overflow, int qmax,
    DType sdt, BatchParams* bp) {
  alignas(64) uint32_t hi[kBatchGroups], neg[kBatchGroups];
  _mm512_store_si512(hi, b.hi);
  _mm512_store_si512(neg, b.neg);
  for (uint32_t l = lanes; l != 0; l &= l - 1) {
    const int k = __builtin_ctz(l);
    GroupParams gp{0.0f, 0.0f, 0.0f, 0};
    const bool fits =
        kSym ? DeriveSymmetric(MagnitudeToFloat(hi[k], kIn), qmax, sdt, &gp)
             : DeriveAsymmetric(-MagnitudeToFloat(neg[k], kIn),
                                MagnitudeToFloat(hi[k], kIn), qmax, sdt, &gp);
    overflow = static_cast<__mmask16>(fits ? overflow & ~(1u << k)
                                           : overflow | (1u << k));
    bp->scale[k] = gp.scale;
    bp->inv[k] = gp.inv;
    bp->zp[k] = gp.zp;
    bp->bits[k] = gp.scale_bits;
  }
  return overflow;
}

// Parameters of the first nb groups of a batch into bp; returns the lanes
// whose scale overflows. The vector code computes the plain round-up of
// DeriveSymmetric / DeriveAsymmetric; the lanes whose rounded-up scale is
// above cap_bits (CapScaleBits: only those can be capped or refused by the
// scale cap of common.h) or that overflow are derived again by the scalar
// functions, so the cap is written once, in common.h. *capped gets those
// lanes that fit (their scale may be below absmax / qmax: pass 2 clamps).
// Lanes of non_finite fail before their parameters matter and are skipped.
template <DType kIn, bool kSym>
inline __mmask16 DeriveBatch(const BatchBits& b, int nb, __mmask16 non_finite,
                             int qmax, DType sdt, uint32_t cap_bits,
                             BatchParams* bp, __mmask16* capped) {
  const __mmask16 live = static_cast<__mmask16>(Mask16(nb) & ~non_finite);
  if constexpr (!kVectorDerive) {
    const __mmask16 overflow =
        DeriveScalarLanesX16<kIn, kSym>(b, live, 0, qmax, sdt, bp);
    *capped = static_cast<__mmask16>(live & ~overflow);
    return overflow;
  } else {
    const __mmask16 overflow =
        kSym ? DeriveSymmetricX16<kIn>(b.hi, qmax, sdt, bp)
             : DeriveAsymmetricX16<kIn>(b.neg, b.hi, qmax, sdt, bp);
    const __mmask16 slow = static_cast<__mmask16>(
        (overflow | _mm512_cmpgt_epu32_mask(
                        _mm512_load_si512(bp->bits),
                        _mm512_set1_epi32(static_cast<int32_t>(cap_bits)))) &
        live);
    if (__builtin_expect(slow == 0, 1)) {
      *capped = 0;
      return overflow;
    }
    const __mmask16 result =
        DeriveScalarLanesX16<kIn, kSym>(b, slow, overflow, qmax, sdt, bp);
    *capped = static_cast<__mmask16>(slow & ~result);
    return result;
  }
}

// Scales (and zero points) of groups [g0, g0 + nb) of one row.
template <bool kSym>
inline void StoreBatch(const BatchParams& bp, int nb, DType sdt, void* scales,
                       uint8_t* zps, int64_t g0) {
  const __mmask16 m = Mask16(nb);
  const __m512i bits = _mm512_load_si512(bp.bits);
  if (sdt == DType::kF32) {
    _mm512_mask_storeu_epi32(static_cast<uint32_t*>(scales) + g0, m, bits);
  } else {
    _mm256_mask_storeu_epi16(static_cast<uint16_t*>(scales) + g0, m,
                             _mm512_cvtepi32_epi16(bits));
  }
  if constexpr (!kSym) {
    _mm_mask_storeu_epi8(
        zps + g0, m,
        _mm512_cvtepi32_epi8(_mm512_cvttps_epi32(_mm512_load_ps(bp.zp))));
  }
}

// Groups are handled in batches of 16: pass 1 for each, the parameters of all
// of them, then pass 2 for each. A failing group ends the batch (and the row)
// there, as in the scalar loop; the groups before it are still written.
template <DType kIn, int kBits, bool kSym, bool kMetrics>
void QuantizeRowsT(const QuantizeArgs& a, int64_t row_begin, int64_t row_end,
                   RowOutcome* outcomes) {
  const int qmax = QMax(kBits, kSym);
  const int64_t groups = a.cols / a.group;
  const size_t esize = kIn == DType::kF32 ? 4 : 2;
  const size_t ssize = a.scale_dtype == DType::kF32 ? 4 : 2;
  VecParams p;
  p.lo = _mm512_set1_ps(kSym ? -static_cast<float>(qmax) : 0.0f);
  p.hi = _mm512_set1_ps(static_cast<float>(qmax));
  p.lo_i = _mm512_set1_epi32(kSym ? -qmax : 0);
  p.hi_i = _mm512_set1_epi32(qmax);
  MetricLanes m;
  BatchParams bp;
  // Groups that never straddle a flush boundary (every valid grouped scheme)
  // flush after the group that ends on one; a whole-row group is split.
  const bool aligned_groups = kFlushCols % a.group == 0;
  const __m512i non_finite_bits =
      _mm512_set1_epi32(static_cast<int32_t>(NonFiniteBits(kIn)));
  const uint32_t cap_bits = CapScaleBits(qmax, a.scale_dtype);
  for (int64_t r = row_begin; r < row_end; ++r) {
    RowOutcome& o = outcomes[r - row_begin];
    o = RowOutcome{0.0, 0.0, 0.0, 0.0f, kRowOk, -1};
    const void* row = static_cast<const uint8_t*>(a.in) +
                      static_cast<size_t>(r) * a.in_stride * esize;
    uint8_t* codes = a.codes + r * a.codes_stride;
    void* scales = static_cast<uint8_t*>(a.scales) +
                   static_cast<size_t>(r) * a.scales_stride * ssize;
    uint8_t* zps = kSym ? nullptr : a.zero_points + r * a.zero_points_stride;
    if (kMetrics) m.Reset();
    for (int64_t g0 = 0; g0 < groups && o.status == kRowOk;
         g0 += kBatchGroups) {
      int nb = static_cast<int>(groups - g0 < kBatchGroups ? groups - g0
                                                           : kBatchGroups);
      const BatchBits b = ScanBatch<kIn, kSym>(row, g0 * a.group, a.group, nb);
      const __mmask16 non_finite = _mm512_cmpge_epu32_mask(
          _mm512_max_epu32(b.hi, b.neg), non_finite_bits);
      __mmask16 capped = 0;
      const uint32_t bad =
          static_cast<uint32_t>(non_finite |
                                DeriveBatch<kIn, kSym>(b, nb, non_finite, qmax,
                                                       a.scale_dtype, cap_bits,
                                                       &bp, &capped)) &
          Mask16(nb);
      if (bad != 0) {
        const int k = __builtin_ctz(bad);
        const int64_t c0 = (g0 + k) * a.group;
        if ((non_finite >> k) & 1u) {
          o.status = kRowNonFinite;
          o.bad_col = FindNonFinite(row, kIn, c0, c0 + a.group);
        } else {
          o.status = kRowScaleOverflow;
          o.bad_col = c0;
        }
        nb = k;
      }
      StoreBatch<kSym>(bp, nb, a.scale_dtype, scales, zps, g0);
      const int64_t span = nb * a.group * static_cast<int64_t>(esize);
      p.prefetch = span < kMaxPrefetch ? span : kMaxPrefetch;
      for (int k = 0; k < nb; ++k) {
        const int64_t c0 = (g0 + k) * a.group, c1 = c0 + a.group;
        p.inv = _mm512_set1_ps(bp.inv[k]);
        p.zp = _mm512_set1_ps(bp.zp[k]);
        p.zp_i = _mm512_set1_epi32(static_cast<int32_t>(bp.zp[k]));
        p.scale = _mm512_set1_ps(bp.scale[k]);
        const bool clamp = (capped >> k) & 1u;
        if constexpr (kMetrics) {
          if (aligned_groups) {
            QuantizeSpan<kIn, kBits, kSym, true>(clamp, row, c0, c1, codes, p,
                                                 m);
            if ((c1 & (kFlushCols - 1)) == 0) m.Flush();
          } else {
            // Flush after every column 255 mod 256.
            int64_t j = c0;
            while (j < c1) {
              const int64_t end = (j | (kFlushCols - 1)) + 1;
              const int64_t stop = end < c1 ? end : c1;
              QuantizeSpan<kIn, kBits, kSym, true>(clamp, row, j, stop, codes,
                                                   p, m);
              if (stop == end) m.Flush();
              j = stop;
            }
          }
        } else {
          QuantizeSpan<kIn, kBits, kSym, false>(clamp, row, c0, c1, codes, p,
                                                m);
        }
      }
    }
    // An odd INT4 row's pad nibble was produced by the zero-filled lane.
    if (kMetrics && o.status == kRowOk) {
      m.Flush();
      o.sum_sq_error = SumDoubleLanes(m.de2);
      o.sum_sq_ref = SumDoubleLanes(m.dx2);
      o.sum_ref_error = SumDoubleLanes(m.dxe);
      o.max_abs_error = ReduceMaxPs(m.max_abs);
    }
  }
}

// ---------------------------------------------------------------------------
// GGML schemes (Q8_0, Q4_0, Q4_1; see common.h), the AVX2 path's design in
// zmm registers: every group is 32 columns (two vectors of 16 floats); pass 1
// takes integer maxima of the bit patterns for 16 groups (ScanBatch's
// magnitudes for Q8_0, order-preserving keys for the min and max of Q4_0 and
// Q4_1), the elements fix what maxima lose in the rare groups that need it
// (Q4_0's sign of the first element of largest magnitude when +a and -a both
// occur, a Q4_1 minimum of -0.0 whose first zero is +0.0), the
// parameters of the 16 groups are derived per vector with ggml's float
// operations, and pass 2 computes ggml's codes.

// Q4_0 / Q4_1 keys: bits ^ 0x8000 (sign clear) or ~bits (sign set), 16-bit
// shown, 32-bit alike; their unsigned order is the float order with -0.0 just
// below +0.0. kmax: lane maxima of the keys, kminc: of the complemented keys.
template <DType kIn>
inline void ScanGroupKeys(const void* row, int64_t c0, __m512i* kmax,
                          __m512i* kminc) {
  const __m512i ones = _mm512_set1_epi32(-1);
  if constexpr (kIn == DType::kF32) {
    const uint32_t* p = static_cast<const uint32_t*>(row) + c0;
    const __m512i top = _mm512_set1_epi32(INT32_MIN);
    const __m512i v0 = _mm512_loadu_si512(p);
    const __m512i v1 = _mm512_loadu_si512(p + 16);
    const __m512i k0 =
        _mm512_xor_si512(v0, _mm512_or_si512(_mm512_srai_epi32(v0, 31), top));
    const __m512i k1 =
        _mm512_xor_si512(v1, _mm512_or_si512(_mm512_srai_epi32(v1, 31), top));
    *kmax = _mm512_max_epu32(k0, k1);
    *kminc = _mm512_max_epu32(_mm512_xor_si512(k0, ones),
                              _mm512_xor_si512(k1, ones));
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(row) + c0;
    const __m512i top = _mm512_set1_epi16(static_cast<int16_t>(0x8000));
    const __m512i v = _mm512_loadu_si512(p);
    const __m512i k =
        _mm512_xor_si512(v, _mm512_or_si512(_mm512_srai_epi16(v, 15), top));
    *kmax = k;
    *kminc = _mm512_xor_si512(k, ones);
  }
}

// Keys (u32 lanes; 16-bit keys zero-extended) back to bit patterns.
template <DType kIn>
inline __m512i KeysToBits(__m512i key) {
  constexpr bool kWide = kIn == DType::kF32;
  const __m512i top = _mm512_set1_epi32(kWide ? INT32_MIN : 0x8000);
  const __m512i all = _mm512_set1_epi32(kWide ? -1 : 0xffff);
  // Top bit clear: a negative float, all of its bits were flipped.
  const __mmask16 negative = _mm512_cmplt_epu32_mask(key, top);
  return _mm512_xor_si512(key, _mm512_mask_blend_epi32(negative, top, all));
}

// Sign bit (0 or 1) of the first of the 32 elements at column c0 whose
// magnitude bits equal `mag` (one exists).
template <DType kIn>
inline uint32_t FirstSignOfMagnitude(const void* row, int64_t c0,
                                     uint32_t mag) {
  if constexpr (kIn == DType::kF32) {
    const uint32_t* p = static_cast<const uint32_t*>(row) + c0;
    const __m512i m = _mm512_set1_epi32(static_cast<int32_t>(mag));
    const __m512i abs = _mm512_set1_epi32(0x7fffffff);
    const uint32_t hits =
        static_cast<uint32_t>(_mm512_cmpeq_epi32_mask(
            _mm512_and_si512(_mm512_loadu_si512(p), abs), m)) |
        (static_cast<uint32_t>(_mm512_cmpeq_epi32_mask(
             _mm512_and_si512(_mm512_loadu_si512(p + 16), abs), m))
         << 16);
    return p[__builtin_ctz(hits)] >> 31;
  } else {
    const uint16_t* p = static_cast<const uint16_t*>(row) + c0;
    const __m512i m = _mm512_set1_epi16(static_cast<int16_t>(mag));
    const __m512i abs = _mm512_set1_epi16(0x7fff);
    const uint32_t hits = static_cast<uint32_t>(_mm512_cmpeq_epi16_mask(
        _mm512_and_si512(_mm512_loadu_si512(p), abs), m));
    return static_cast<uint32_t>(p[__builtin_ctz(hits)] >> 15);
  }
}

struct GgmlBatch {
  // Bit patterns per group: Q8_0 the largest magnitude, Q4_0 the element of
  // largest magnitude (signed), Q4_1 the max; lo: Q4_1's min.
  alignas(64) uint32_t hi[kBatchGroups];
  alignas(64) uint32_t lo[kBatchGroups];
  alignas(64) float id[kBatchGroups];
  alignas(64) float lo_f[kBatchGroups];
  alignas(64) float scale[kBatchGroups];
  alignas(64) float offset[kBatchGroups];
  alignas(64) uint32_t d_bits[kBatchGroups];
  alignas(64) uint32_t m_bits[kBatchGroups];
};

// DeriveGgmlQ8_0 / Q4_0 / Q4_1 on the 16 lanes of bp; returns the lanes
// whose scale or minimum overflows F16.
template <DType kIn, GgmlType kType>
inline __mmask16 DeriveGgmlX16(GgmlBatch* bp) {
  const __m512 hi = MagnitudesToFloat<kIn>(_mm512_load_si512(bp->hi));
  __m512 lo = _mm512_setzero_ps();
  __m512 d;
  if constexpr (kType == GgmlType::kQ8_0) {
    d = _mm512_div_ps(hi, _mm512_set1_ps(127.0f));
  } else if constexpr (kType == GgmlType::kQ4_0) {
    d = _mm512_div_ps(hi, _mm512_set1_ps(-8.0f));
  } else {
    lo = MagnitudesToFloat<kIn>(_mm512_load_si512(bp->lo));
    d = _mm512_div_ps(_mm512_sub_ps(hi, lo), _mm512_set1_ps(15.0f));
  }
  // `d ? 1.0f/d : 0.0f`
  const __mmask16 nz = _mm512_cmp_ps_mask(d, _mm512_setzero_ps(), _CMP_NEQ_UQ);
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  const __m256i dh = _mm512_cvtps_ph(d, kNearest);
  const __m512i d_bits = _mm512_cvtepu16_epi32(dh);
  const __m512i mag16 = _mm512_set1_epi32(0x7fff);
  const __m512i f16_max = _mm512_set1_epi32(0x7bff);
  __mmask16 overflow =
      _mm512_cmpgt_epu32_mask(_mm512_and_si512(d_bits, mag16), f16_max);
  _mm512_store_ps(bp->id, _mm512_maskz_div_ps(nz, _mm512_set1_ps(1.0f), d));
  _mm512_store_ps(bp->scale, _mm512_cvtph_ps(dh));
  _mm512_store_si512(bp->d_bits, d_bits);
  _mm512_store_ps(bp->lo_f, lo);
  if constexpr (kType == GgmlType::kQ4_1) {
    const __m256i mh = _mm512_cvtps_ph(lo, kNearest);
    const __m512i m_bits = _mm512_cvtepu16_epi32(mh);
    overflow = static_cast<__mmask16>(
        overflow |
        _mm512_cmpgt_epu32_mask(_mm512_and_si512(m_bits, mag16), f16_max));
    _mm512_store_ps(bp->offset, _mm512_cvtph_ps(mh));
    _mm512_store_si512(bp->m_bits, m_bits);
  }
  return overflow;
}

struct GgmlVec {
  __m512 id, lo, scale, offset;
};

// ggml's codes of 16 elements as int32 (common.h's GgmlCode*), as in avx2.cc:
//  Q8_0  roundf(x * id) = trunc(v) plus sign(v) where |v - trunc(v)| >= 0.5
//        (exact), 0 where v is not finite.
//  Q4_0  clamp(trunc(x * id + 8.5), 0, 15); Q4_1 the same of
//        (x - lo) * id + 0.5 (VCVTTPS2DQ gives INT32_MIN when not finite).
template <GgmlType kType>
inline __m512i GgmlCodesX16(__m512 x, const GgmlVec& p) {
  if constexpr (kType == GgmlType::kQ8_0) {
    const __m512 v = _mm512_mul_ps(x, p.id);
    __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __mmask16 away = _mm512_cmp_ps_mask(
        _mm512_abs_ps(_mm512_sub_ps(v, t)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
    const __m512 one = _mm512_or_ps(_mm512_set1_ps(1.0f),
                                    _mm512_and_ps(v, _mm512_set1_ps(-0.0f)));
    t = _mm512_mask_add_ps(t, away, t, one);
    const __mmask16 finite = _mm512_cmp_ps_mask(
        _mm512_abs_ps(v), _mm512_set1_ps(std::numeric_limits<float>::max()),
        _CMP_LE_OQ);
    return _mm512_cvttps_epi32(_mm512_maskz_mov_ps(finite, t));
  } else {
    const __m512 v =
        kType == GgmlType::kQ4_0
            ? _mm512_add_ps(_mm512_mul_ps(x, p.id), _mm512_set1_ps(8.5f))
            : _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(x, p.lo), p.id),
                            _mm512_set1_ps(0.5f));
    const __m512i t =
        _mm512_min_epi32(_mm512_cvttps_epi32(v), _mm512_set1_epi32(15));
    return _mm512_max_epi32(t, _mm512_setzero_si512());
  }
}

// One group: columns [c0, c0 + 32), 32 (Q8_0) or 16 (Q4_0, Q4_1) code bytes.
template <DType kIn, GgmlType kType, bool kMetrics>
inline void QuantizeGgmlGroup(const void* row, int64_t c0, uint8_t* codes,
                              const GgmlVec& p, MetricLanes& m) {
  __m512 x[2];
  __m512i c[2];
  for (int v = 0; v < 2; ++v) {
    x[v] = LoadX<kIn, false>(row, c0 + 16 * v, 16);
    c[v] = GgmlCodesX16<kType>(x[v], p);
  }
  const __m512i zero = _mm512_setzero_si512();
  const __m512i ab = _mm512_packs_epi32(c[0], c[1]);
  __m512i bytes = kType == GgmlType::kQ8_0 ? _mm512_packs_epi16(ab, zero)
                                           : _mm512_packus_epi16(ab, zero);
  bytes = _mm512_permutexvar_epi32(PackOrder(), bytes);
  if constexpr (kType == GgmlType::kQ8_0) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + c0),
                        _mm512_castsi512_si256(bytes));
  } else {
    // Byte k = code(2k) + 16 * code(2k+1), codes 0..15.
    const __m512i pairs =
        _mm512_maddubs_epi16(bytes, _mm512_set1_epi16(0x1001));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + (c0 >> 1)),
                     _mm256_cvtepi16_epi8(_mm512_castsi512_si256(pairs)));
  }
  if constexpr (kMetrics) {
    for (int v = 0; v < 2; ++v) {
      // ggml's dequantization: q * d, (q - 8) * d, q * d + m.
      const __m512i level = kType == GgmlType::kQ4_0
                                ? _mm512_sub_epi32(c[v], _mm512_set1_epi32(8))
                                : c[v];
      __m512 w = _mm512_mul_ps(_mm512_cvtepi32_ps(level), p.scale);
      if constexpr (kType == GgmlType::kQ4_1) w = _mm512_add_ps(w, p.offset);
      m.Add(x[v], w);
    }
  }
}

template <DType kIn, GgmlType kType, bool kMetrics>
void QuantizeGgmlRowsT(const QuantizeArgs& a, int64_t row_begin,
                       int64_t row_end, RowOutcome* outcomes) {
  constexpr bool kWide = kIn == DType::kF32;
  constexpr uint32_t kSignBit = kWide ? 0x80000000u : 0x8000u;
  const int64_t groups = a.cols / kGgmlBlock;
  const size_t esize = kWide ? 4 : 2;
  const __m512i non_finite_bits =
      _mm512_set1_epi32(static_cast<int32_t>(NonFiniteBits(kIn)));
  const __m512i mag_mask = _mm512_set1_epi32(kWide ? 0x7fffffff : 0x7fff);
  const __m512i key_ones = _mm512_set1_epi32(kWide ? -1 : 0xffff);
  GgmlBatch bp;
  GgmlVec p{_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
            _mm512_setzero_ps()};
  MetricLanes m;
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
    if (kMetrics) m.Reset();
    for (int64_t g0 = 0; g0 < groups && o.status == kRowOk;
         g0 += kBatchGroups) {
      int nb = static_cast<int>(groups - g0 < kBatchGroups ? groups - g0
                                                           : kBatchGroups);
      const int64_t b0 = g0 * kGgmlBlock;
      __m512i hi, lo = _mm512_setzero_si512(), mag;
      __mmask16 resolve = 0;
      if constexpr (kType == GgmlType::kQ8_0) {
        hi = ScanBatch<kIn, true>(row, b0, kGgmlBlock, nb).hi;
        mag = hi;
      } else {
        // The max (hi) and the min (lo) of each group.
        __m512i hv[kBatchGroups], nv[kBatchGroups];
        for (int k = 0; k < nb; ++k)
          ScanGroupKeys<kIn>(row, b0 + k * kGgmlBlock, &hv[k], &nv[k]);
        for (int k = nb; k < kBatchGroups; ++k)
          hv[k] = nv[k] = _mm512_setzero_si512();
        hi = KeysToBits<kIn>(kWide ? TreeMaxU32(hv) : TreeMaxU16(hv));
        lo = KeysToBits<kIn>(_mm512_xor_si512(
            kWide ? TreeMaxU32(nv) : TreeMaxU16(nv), key_ones));
        const __m512i mh = _mm512_and_si512(hi, mag_mask);
        const __m512i ml = _mm512_and_si512(lo, mag_mask);
        mag = _mm512_max_epu32(mh, ml);
        const __mmask16 nonzero = _mm512_test_epi32_mask(mag, mag);
        if constexpr (kType == GgmlType::kQ4_0) {
          // ggml's max is the element of largest magnitude: the max or the
          // min, whichever is larger in magnitude; +0.0 when all are zero;
          // the first of +a and -a when both occur (`resolve`, from the
          // elements below).
          resolve = static_cast<__mmask16>(_mm512_cmpeq_epu32_mask(mh, ml) &
                                           _mm512_cmpneq_epu32_mask(hi, lo) &
                                           nonzero);
          hi = _mm512_mask_blend_epi32(_mm512_cmpgt_epu32_mask(ml, mh), hi, lo);
          hi = _mm512_maskz_mov_epi32(nonzero, hi);
        } else {
          // A -0.0 minimum means no negative element: ggml's minimum is the
          // first zero, which may be +0.0 (`resolve`).
          resolve = _mm512_cmpeq_epu32_mask(
              lo, _mm512_set1_epi32(static_cast<int32_t>(kSignBit)));
        }
      }
      // Those groups fail before deriving: keep NaN/Inf out of it (the
      // padding lanes of the keys decode to NaN patterns and end up here).
      const __mmask16 non_finite =
          _mm512_cmpge_epu32_mask(mag, non_finite_bits);
      _mm512_store_si512(bp.hi, _mm512_maskz_mov_epi32(
                                    static_cast<__mmask16>(~non_finite), hi));
      _mm512_store_si512(bp.lo, _mm512_maskz_mov_epi32(
                                    static_cast<__mmask16>(~non_finite), lo));
      // Rare: Q4_0 groups holding +a and -a as largest magnitudes, Q4_1
      // groups whose minimum is -0.0.
      for (uint32_t left = static_cast<uint32_t>(resolve & ~non_finite) &
                           static_cast<uint32_t>(Mask16(nb));
           left != 0; left &= left - 1) {
        const int k = __builtin_ctz(left);
        const int64_t c0 = b0 + k * kGgmlBlock;
        if constexpr (kType == GgmlType::kQ4_0) {
          const uint32_t amax = bp.hi[k] & ~kSignBit;
          bp.hi[k] =
              amax | (FirstSignOfMagnitude<kIn>(row, c0, amax) ? kSignBit : 0u);
        } else if constexpr (kType == GgmlType::kQ4_1) {
          if (!FirstSignOfMagnitude<kIn>(row, c0, 0)) bp.lo[k] = 0;
        }
      }
      const uint32_t bad =
          static_cast<uint32_t>(non_finite | DeriveGgmlX16<kIn, kType>(&bp)) &
          Mask16(nb);
      if (bad != 0) {
        const int k = __builtin_ctz(bad);
        const int64_t c0 = b0 + k * kGgmlBlock;
        if ((non_finite >> k) & 1u) {
          o.status = kRowNonFinite;
          o.bad_col = FindNonFinite(row, kIn, c0, c0 + kGgmlBlock);
        } else {
          o.status = kRowScaleOverflow;
          o.bad_col = c0;
        }
        nb = k;
      }
      for (int k = 0; k < nb; ++k) {
        scales[g0 + k] = static_cast<uint16_t>(bp.d_bits[k]);
        if constexpr (kType == GgmlType::kQ4_1)
          offsets[g0 + k] = static_cast<uint16_t>(bp.m_bits[k]);
      }
      for (int k = 0; k < nb; ++k) {
        const int64_t c0 = b0 + k * kGgmlBlock;
        p.id = _mm512_set1_ps(bp.id[k]);
        p.lo = _mm512_set1_ps(bp.lo_f[k]);
        if constexpr (kMetrics) {
          p.scale = _mm512_set1_ps(bp.scale[k]);
          if constexpr (kType == GgmlType::kQ4_1)
            p.offset = _mm512_set1_ps(bp.offset[k]);
        }
        QuantizeGgmlGroup<kIn, kType, kMetrics>(row, c0, codes, p, m);
        if constexpr (kMetrics) {
          if (((c0 + kGgmlBlock) & (kFlushCols - 1)) == 0) m.Flush();
        }
      }
    }
    if (kMetrics && o.status == kRowOk) {
      m.Flush();
      o.sum_sq_error = SumDoubleLanes(m.de2);
      o.sum_sq_ref = SumDoubleLanes(m.dx2);
      o.sum_ref_error = SumDoubleLanes(m.dxe);
      o.max_abs_error = ReduceMaxPs(m.max_abs);
    }
  }
}

// ---------------------------------------------------------------------------
// Dequantize.

// The integer levels (code - zero point) of the 16 elements at column j (a
// multiple of 16); kMasked: only the first n exist (the others are garbage
// and never stored).
template <int kBits, bool kSym, bool kMasked>
inline __m512i LevelsVec(const uint8_t* codes, int64_t j, int64_t n,
                         __m512i zp) {
  __m512i v;
  if constexpr (kBits == 8) {
    const __m128i b =
        kMasked ? _mm_maskz_loadu_epi8(Mask16(n), codes + j)
                : _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + j));
    v = kSym ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
  } else {
    const uint8_t* src = codes + (j >> 1);
    const __m128i b =
        kMasked ? _mm_maskz_loadu_epi8(Mask16((n + 1) >> 1), src)
                : _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src));
    // Byte k in qword k; (q | q << 28) puts its high nibble at bit 32, so
    // dword 2k = low nibble and dword 2k+1 = high nibble after the mask.
    const __m512i q = _mm512_cvtepu8_epi64(b);
    v = _mm512_ternarylogic_epi64(q, _mm512_slli_epi64(q, 28),
                                  _mm512_set1_epi32(0xf), 0xa8);  // (a|b)&c
  }
  if constexpr (kBits == 8 && kSym) return v;
  return _mm512_sub_epi32(v, zp);
}

// w = level * scale saturated like the scalar `w > mf ? mf : w` then
// `w < -mf ? -mf : w` (operand order keeps a NaN from a NaN scale).
inline __m512 ScaleClamp(__m512i level, __m512 s, __m512 mf, __m512 nmf) {
  __m512 w = _mm512_mul_ps(_mm512_cvtepi32_ps(level), s);
  w = _mm512_min_ps(mf, w);
  return _mm512_max_ps(nmf, w);
}

// FloatToBf16Bits on 16 lanes: round to nearest even on the upper half; a
// NaN keeps its upper half with the quiet bit set.
inline __m256i Bf16RoundInt(__m512 w) {
  const __m512i x = _mm512_castps_si512(w);
  const __m512i hi = _mm512_srli_epi32(x, 16);
  __m512i r = _mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7fff)),
                               _mm512_and_si512(hi, _mm512_set1_epi32(1)));
  r = _mm512_srli_epi32(r, 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(
      _mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)),
      _mm512_set1_epi32(0x7f800000));
  r = _mm512_mask_or_epi32(r, nan, hi, _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(r);
}

template <DType kOut, bool kMasked>
inline void StoreOut(void* out, int64_t j, int64_t n, __m512 w) {
  if constexpr (kOut == DType::kF32) {
    float* p = static_cast<float*>(out) + j;
    if constexpr (kMasked) {
      _mm512_mask_storeu_ps(p, Mask16(n), w);
    } else {
      _mm512_storeu_ps(p, w);
    }
  } else {
    const __m256i h =
        kOut == DType::kF16
            ? _mm512_cvtps_ph(w, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)
            : Bf16RoundInt(w);
    uint16_t* p = static_cast<uint16_t*>(out) + j;
    if constexpr (kMasked) {
      _mm256_mask_storeu_epi16(p, Mask16(n), h);
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
    }
  }
}

struct DequantRow {
  const uint8_t* codes;
  const void* scales;
  const uint8_t* zps;  // null when symmetric
  void* out;
};

inline DequantRow RowPointers(const DequantizeArgs& a, int64_t r,
                              size_t osize) {
  const size_t ssize = a.scale_dtype == DType::kF32 ? 4 : 2;
  DequantRow d;
  d.codes = a.codes + r * a.codes_stride;
  d.scales = static_cast<const uint8_t*>(a.scales) +
             static_cast<size_t>(r) * a.scales_stride * ssize;
  d.zps = a.symmetric ? nullptr : a.zero_points + r * a.zero_points_stride;
  d.out = static_cast<uint8_t*>(a.out) +
          static_cast<size_t>(r) * a.out_stride * osize;
  return d;
}

template <int kBits, bool kSym>
inline __m512i GroupZeroPoint(const DequantRow& d, int64_t g) {
  if constexpr (!kSym) return _mm512_set1_epi32(d.zps[g]);
  return _mm512_set1_epi32(kBits == 4 ? 8 : 0);
}

template <DType kOut, int kBits, bool kSym>
inline void DequantizeSpan(const DequantRow& d, int64_t c0, int64_t c1,
                           __m512i zp, __m512 s, __m512 mf, __m512 nmf) {
  int64_t j = c0;
  for (; j + 16 <= c1; j += 16) {
    const __m512i l = LevelsVec<kBits, kSym, false>(d.codes, j, 16, zp);
    StoreOut<kOut, false>(d.out, j, 16, ScaleClamp(l, s, mf, nmf));
  }
  if (j < c1) {
    const __m512i l = LevelsVec<kBits, kSym, true>(d.codes, j, c1 - j, zp);
    StoreOut<kOut, true>(d.out, j, c1 - j, ScaleClamp(l, s, mf, nmf));
  }
}

template <DType kOut, int kBits, bool kSym>
void DequantizeRowsT(const DequantizeArgs& a, int64_t row_begin,
                     int64_t row_end) {
  const int64_t groups = a.cols / a.group;
  const __m512 mf = _mm512_set1_ps(MaxFinite(kOut));
  const __m512 nmf = _mm512_set1_ps(-MaxFinite(kOut));
  const size_t osize = kOut == DType::kF32 ? 4 : 2;
  for (int64_t r = row_begin; r < row_end; ++r) {
    const DequantRow d = RowPointers(a, r, osize);
    for (int64_t g = 0; g < groups; ++g) {
      const __m512 s = _mm512_set1_ps(LoadScale(d.scales, g, a.scale_dtype));
      DequantizeSpan<kOut, kBits, kSym>(d, g * a.group, (g + 1) * a.group,
                                        GroupZeroPoint<kBits, kSym>(d, g), s,
                                        mf, nmf);
    }
  }
}

// Q4_1: code * d + m (scalar.cc's DequantizeQ4_1RowsT), two vectors per
// group.
template <DType kOut>
void DequantizeQ4_1RowsT(const DequantizeArgs& a, int64_t row_begin,
                         int64_t row_end) {
  const int64_t groups = a.cols / kGgmlBlock;
  const __m512 mf = _mm512_set1_ps(MaxFinite(kOut));
  const __m512 nmf = _mm512_set1_ps(-MaxFinite(kOut));
  const size_t osize = kOut == DType::kF32 ? 4 : 2;
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* codes = a.codes + r * a.codes_stride;
    const uint16_t* scales =
        static_cast<const uint16_t*>(a.scales) + r * a.scales_stride;
    const uint16_t* offsets =
        static_cast<const uint16_t*>(a.offsets) + r * a.offsets_stride;
    void* out = static_cast<uint8_t*>(a.out) +
                static_cast<size_t>(r) * a.out_stride * osize;
    for (int64_t g = 0; g < groups; ++g) {
      const __m512 s = _mm512_set1_ps(HalfBitsToFloat(scales[g]));
      const __m512 add = _mm512_set1_ps(HalfBitsToFloat(offsets[g]));
      for (int64_t j = g * kGgmlBlock; j < (g + 1) * kGgmlBlock; j += 16) {
        const __m512i l = LevelsVec<4, false, false>(codes, j, 16, zero);
        __m512 w = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(l), s), add);
        w = _mm512_min_ps(mf, w);
        w = _mm512_max_ps(nmf, w);
        StoreOut<kOut, false>(out, j, 16, w);
      }
    }
  }
}

// BF16 output with VCVTNEPS2BF16. Measured on this machine (Zen 4) over all
// 2^32 float inputs against FloatToBf16Bits: identical for every NaN, zero,
// normal and infinite input (near-overflow values included); different for
// every float subnormal input, which the instruction flushes to a signed
// zero (e.g. 0x807fffff gives 0x8000, FloatToBf16Bits 0x8080). A dequantized
// value (q - zp) * scale with an integer q - zp is subnormal only when the
// scale itself is subnormal (|q - zp| >= 1 otherwise keeps it >= 2^-126).
// Quantize never writes such a scale, but a caller's scale buffer may hold
// one: such a group takes the integer rounding path, chosen once per group.
// Measured: 1.7-2x the integer path (F16 4096x11008 to BF16, one thread).
#define NIBBLE_AVX512BF16_TARGET \
  __attribute__((                \
      target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,avx512bf16")))

template <int kBits, bool kSym>
NIBBLE_AVX512BF16_TARGET void DequantizeRowsBf16Native(const DequantizeArgs& a,
                                                       int64_t row_begin,
                                                       int64_t row_end) {
  const int64_t groups = a.cols / a.group;
  const __m512 mf = _mm512_set1_ps(MaxFinite(DType::kBF16));
  const __m512 nmf = _mm512_set1_ps(-MaxFinite(DType::kBF16));
  for (int64_t r = row_begin; r < row_end; ++r) {
    const DequantRow d = RowPointers(a, r, 2);
    uint16_t* out = static_cast<uint16_t*>(d.out);
    for (int64_t g = 0; g < groups; ++g) {
      const float scale = LoadScale(d.scales, g, a.scale_dtype);
      const __m512 s = _mm512_set1_ps(scale);
      const __m512i zp = GroupZeroPoint<kBits, kSym>(d, g);
      const int64_t c0 = g * a.group, c1 = c0 + a.group;
      const uint32_t sbits = FloatBits(scale) & 0x7fffffffu;
      if (sbits != 0 && sbits < 0x00800000u) {
        DequantizeSpan<DType::kBF16, kBits, kSym>(d, c0, c1, zp, s, mf, nmf);
        continue;
      }
      int64_t j = c0;
      for (; j + 32 <= c1; j += 32) {
        const __m512 w0 = ScaleClamp(
            LevelsVec<kBits, kSym, false>(d.codes, j, 16, zp), s, mf, nmf);
        const __m512 w1 = ScaleClamp(
            LevelsVec<kBits, kSym, false>(d.codes, j + 16, 16, zp), s, mf, nmf);
        // Element i of the result is w0[i] for i < 16, w1[i - 16] after.
        const __m512bh h = _mm512_cvtne2ps_pbh(w1, w0);
        _mm512_storeu_si512(out + j, reinterpret_cast<const __m512i&>(h));
      }
      for (; j < c1; j += 16) {
        const __m512 w = ScaleClamp(
            LevelsVec<kBits, kSym, true>(d.codes, j, c1 - j, zp), s, mf, nmf);
        const __m256bh h = _mm512_cvtneps_pbh(w);
        _mm256_mask_storeu_epi16(out + j, Mask16(c1 - j),
                                 reinterpret_cast<const __m256i&>(h));
      }
    }
  }
}
#undef NIBBLE_AVX512BF16_TARGET

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

void DequantizeRowsBf16(const DequantizeArgs& a, int64_t r0, int64_t r1) {
  // Q4_1's q * d + m is subnormal whenever the sum is, not only for a
  // subnormal scale: it always takes the integer rounding.
  if (!CpuHasAvx512Bf16() || a.ggml == GgmlType::kQ4_1) {
    DequantizeForScheme<Kernels, DType::kBF16>(a, r0, r1);
  } else if (a.bits == 8) {
    a.symmetric ? DequantizeRowsBf16Native<8, true>(a, r0, r1)
                : DequantizeRowsBf16Native<8, false>(a, r0, r1);
  } else {
    a.symmetric ? DequantizeRowsBf16Native<4, true>(a, r0, r1)
                : DequantizeRowsBf16Native<4, false>(a, r0, r1);
  }
}

void DequantizeRows(const DequantizeArgs& a, int64_t r0, int64_t r1) {
  switch (a.out_dtype) {
    case DType::kF32:
      DequantizeForScheme<Kernels, DType::kF32>(a, r0, r1);
      break;
    case DType::kF16:
      DequantizeForScheme<Kernels, DType::kF16>(a, r0, r1);
      break;
    case DType::kBF16:
      DequantizeRowsBf16(a, r0, r1);
      break;
  }
}

constexpr Table kAvx512Table = {Isa::kAvx512, &QuantizeRows, &DequantizeRows};

}  // namespace

const Table* Avx512Table() { return &kAvx512Table; }

}  // namespace nibble::kernels
