// The AVX2 (+FMA, F16C) path. It reproduces scalar.cc byte for byte: the same
// per-group parameters (the IEEE operations of common.h's DeriveSymmetric /
// DeriveAsymmetric, 8 groups per vector; see "Per-group parameters"), the
// same codes (see QuantizeVecInt for the integer-domain variant used without
// metrics), the same float operations in the same order per element when
// metrics are on, and the same metric lane shape (column j -> lane j % 16,
// flushed to double every 256 columns and at the row's end, reduced by
// SumLanes).
//
// Work is done in steps of 32 columns. Every sized group (32..256) is a
// multiple of 32 and starts at a multiple of 32; only a per-row group can end
// in a partial step, which runs from a zero-padded stack buffer (zero is
// neutral for absmax and for min/max that start at 0, its codes are never
// stored except the INT4 pad nibble, which is defined as the code of 0.0, and
// its metric terms are fma(0, 0, acc) = acc).
#include <immintrin.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/common.h"
#include "kernels/instantiate.h"
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
// Pass 1: integer maxima over a group's bit patterns, kept as lane vectors.
//
// Symmetric: max of the magnitude bits (exact; NaN/Inf show up as >=
// NonFiniteBits). Asymmetric: the scalar path's float min and max starting at
// 0.0 are recovered from the raw bits, exactly and without converting: among
// non-negative patterns the signed integer maximum is the largest value (hi),
// and among negative ones the unsigned maximum has the largest magnitude
// (lo = -magnitude). Starting both at 0 reproduces the "start at 0.0" of the
// scalar loop; -0.0 as lo is 0 for DeriveAsymmetric exactly like +0.0. A
// NaN/Inf of either sign is the largest pattern of its kind, so the maximum
// of hi and the negative magnitude detects it like the scalar absmax.
//
// Each group leaves one vector of lane maxima (16 u16 lanes for F16/BF16,
// 8 u32 for F32); the lanes of 8 groups are then reduced together by a
// transpose tree (about 3 instructions per group instead of a dozen).

template <DType kIn, bool kSym>
NIBBLE_AVX2_INLINE void ScanStep(const uint8_t* p, __m256i* hi, __m256i* neg) {
  if constexpr (kIn == DType::kF32) {
    const __m256i mask = _mm256_set1_epi32(0x7fffffff);
    for (int k = 0; k < 4; ++k) {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * k));
      if constexpr (kSym) {
        hi[k & 1] = _mm256_max_epu32(hi[k & 1], _mm256_and_si256(v, mask));
      } else {
        hi[k & 1] = _mm256_max_epi32(hi[k & 1], v);
        neg[k & 1] = _mm256_max_epu32(neg[k & 1], v);
      }
    }
  } else {
    const __m256i mask = _mm256_set1_epi16(0x7fff);
    for (int k = 0; k < 2; ++k) {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32 * k));
      if constexpr (kSym) {
        hi[k] = _mm256_max_epu16(hi[k], _mm256_and_si256(v, mask));
      } else {
        hi[k] = _mm256_max_epi16(hi[k], v);
        neg[k] = _mm256_max_epu16(neg[k], v);
      }
    }
  }
}

// Lane maxima of one group (full_steps steps at gp, then `rem` columns
// through the zero-padded `tail` buffer). Every lane of *hi is a
// non-negative pattern (magnitudes, or signed maxima started at 0), so the
// reductions below may use unsigned maxima for both outputs.
template <DType kIn, bool kSym>
NIBBLE_AVX2_INLINE void ScanGroup(const uint8_t* gp, int64_t full_steps,
                                  int64_t rem, uint8_t* tail, __m256i* hi,
                                  __m256i* neg) {
  constexpr size_t esize = InSize<kIn>();
  __m256i h[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
  __m256i n[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
  for (int64_t s = 0; s < full_steps; ++s) {
    ScanStep<kIn, kSym>(gp + static_cast<size_t>(s) * kStep * esize, h, n);
  }
  if (rem != 0) {
    std::memset(tail, 0, kStep * 4);
    std::memcpy(tail, gp + static_cast<size_t>(full_steps) * kStep * esize,
                static_cast<size_t>(rem) * esize);
    ScanStep<kIn, kSym>(tail, h, n);
  }
  if constexpr (kIn == DType::kF32) {
    *hi = kSym ? _mm256_max_epu32(h[0], h[1]) : _mm256_max_epi32(h[0], h[1]);
    *neg = _mm256_max_epu32(n[0], n[1]);
  } else {
    *hi = kSym ? _mm256_max_epu16(h[0], h[1]) : _mm256_max_epi16(h[0], h[1]);
    *neg = _mm256_max_epu16(n[0], n[1]);
  }
}

// v[k] (16 u16 lanes each, k < 8) -> lane k of the result = max over v[k],
// as u32. Each step interleaves pairs of vectors and keeps the larger
// halves; after the 16-, 32- and 64-bit steps each 128-bit lane holds one
// partial maximum of each group in order, and the last step folds the lanes.
NIBBLE_AVX2_INLINE __m256i TreeMaxU16(const __m256i* v) {
  __m256i r[4], s[2];
  for (int k = 0; k < 4; ++k)
    r[k] = _mm256_max_epu16(_mm256_unpacklo_epi16(v[2 * k], v[2 * k + 1]),
                            _mm256_unpackhi_epi16(v[2 * k], v[2 * k + 1]));
  for (int k = 0; k < 2; ++k)
    s[k] = _mm256_max_epu16(_mm256_unpacklo_epi32(r[2 * k], r[2 * k + 1]),
                            _mm256_unpackhi_epi32(r[2 * k], r[2 * k + 1]));
  const __m256i t = _mm256_max_epu16(_mm256_unpacklo_epi64(s[0], s[1]),
                                     _mm256_unpackhi_epi64(s[0], s[1]));
  return _mm256_cvtepu16_epi32(_mm_max_epu16(_mm256_castsi256_si128(t),
                                             _mm256_extracti128_si256(t, 1)));
}

// The same for 8 u32 lanes per vector.
NIBBLE_AVX2_INLINE __m256i TreeMaxU32(const __m256i* v) {
  __m256i r[4], s[2];
  for (int k = 0; k < 4; ++k)
    r[k] = _mm256_max_epu32(_mm256_unpacklo_epi32(v[2 * k], v[2 * k + 1]),
                            _mm256_unpackhi_epi32(v[2 * k], v[2 * k + 1]));
  for (int k = 0; k < 2; ++k)
    s[k] = _mm256_max_epu32(_mm256_unpacklo_epi64(r[2 * k], r[2 * k + 1]),
                            _mm256_unpackhi_epi64(r[2 * k], r[2 * k + 1]));
  return _mm256_max_epu32(_mm256_permute2x128_si256(s[0], s[1], 0x20),
                          _mm256_permute2x128_si256(s[0], s[1], 0x31));
}

// Magnitude bits of 8 groups (lane k = group k), as u32 below 2^31.
struct GroupBits8 {
  __m256i hi;   // of max(max, 0) (symmetric: of absmax)
  __m256i neg;  // of -min(min, 0) (asymmetric only)
};

template <DType kIn, bool kSym>
NIBBLE_AVX2_INLINE GroupBits8 ReduceGroups8(const __m256i* hv,
                                            const __m256i* nv) {
  constexpr bool kWide = kIn == DType::kF32;
  GroupBits8 b;
  b.hi = kWide ? TreeMaxU32(hv) : TreeMaxU16(hv);
  if constexpr (kSym) {
    b.neg = _mm256_setzero_si256();
  } else {
    const __m256i n = kWide ? TreeMaxU32(nv) : TreeMaxU16(nv);
    const __m256i sign =
        kWide ? _mm256_srai_epi32(n, 31)
              : _mm256_cmpgt_epi32(n, _mm256_set1_epi32(0x7fff));
    b.neg = _mm256_and_si256(
        sign,
        _mm256_and_si256(n, _mm256_set1_epi32(kWide ? 0x7fffffff : 0x7fff)));
  }
  return b;
}

// ---------------------------------------------------------------------------
// Per-group parameters, 8 groups per vector, 16 per batch.
//
// DeriveSymmetric / DeriveAsymmetric (common.h) define the parameters. Called
// once per group they cost about 11 ns (two data-dependent branches in
// RoundScaleUp, a double and a float division), which dominated 32-column
// groups. The code below is the AVX2 port of avx512.cc's vector derivation
// (see its comment for why "smallest value of the type >= v" is what the
// scalar nearest-then-bump steps compute). What AVX2 lacks, and how:
//  - VCVTPD2PS has no embedded round-up: convert by nearest (MXCSR default,
//    exactly static_cast<float>), convert back (exact) and compare with v in
//    double; the lanes below v get +1 on their bit pattern, which is
//    nextafter(f, +inf) for a finite f >= 0 -- the scalar sequence itself.
//  - F16: VCVTPS2PH (F16C) takes its rounding mode from imm8 as in AVX-512
//    (round up, MXCSR untouched); only the {sae} exception suppression is
//    missing, which affects status flags only, never results.
//  - BF16 is integer arithmetic, as in AVX-512.
//  - Masked divisions: the lanes of all-zero groups divide 1 by 1.0 instead
//    of 0 (no division-by-zero flag) and are then zeroed.
//  - Lanes of NaN/Inf groups are zeroed before deriving (their results are
//    discarded: the row fails there), so no NaN arithmetic happens.
// kVectorDerive = false calls the shared scalar functions instead (same
// bytes, slower). Checked exhaustively against DeriveSymmetric /
// DeriveAsymmetric (every F16 and BF16 magnitude and many (lo, hi) pairs,
// F32 mantissas at every exponent; all four qmax, all three scale dtypes)
// before the scale cap: the vector code is the plain round-up, and
// DeriveGroups8 hands every lane the cap can touch to the scalar functions.
constexpr bool kVectorDerive = true;
constexpr int kBatch = 16;

struct BatchParams {
  alignas(32) float scale[kBatch];
  alignas(32) float inv[kBatch];
  alignas(32) float zp[kBatch];
  alignas(32) uint32_t bits[kBatch];  // stored scale representation
};

// Float values of 8 magnitude-bit patterns (u32 lanes) of an input dtype.
template <DType kIn>
NIBBLE_AVX2_INLINE __m256 MagnitudesToFloat(__m256i bits) {
  if constexpr (kIn == DType::kF16) {
    // Patterns are below 0x8000: the unsigned saturation keeps them.
    return _mm256_cvtph_ps(_mm_packus_epi32(_mm256_castsi256_si128(bits),
                                            _mm256_extracti128_si256(bits, 1)));
  } else if constexpr (kIn == DType::kBF16) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(bits, 16));
  } else {
    return _mm256_castsi256_ps(bits);
  }
}

// RoundScaleUp on 8 lanes: v (>= 0, finite, as two halves of 4 doubles)
// rounded up to scale_dtype. Returns the lanes that overflow (all ones).
NIBBLE_AVX2_INLINE __m256i RoundScaleUp8(__m256d v_lo, __m256d v_hi, DType dt,
                                         __m256* scale, __m256i* bits) {
  // By nearest, as static_cast<float>; the way back to double is exact.
  const __m128 n_lo = _mm256_cvtpd_ps(v_lo);
  const __m128 n_hi = _mm256_cvtpd_ps(v_hi);
  const __m256d below_lo =
      _mm256_cmp_pd(_mm256_cvtps_pd(n_lo), v_lo, _CMP_LT_OQ);
  const __m256d below_hi =
      _mm256_cmp_pd(_mm256_cvtps_pd(n_hi), v_hi, _CMP_LT_OQ);
  // 64-bit masks m0..m3, n0..n3 -> 32-bit lanes m0..m3 n0..n3.
  const __m256i below = _mm256_permutevar8x32_epi32(
      _mm256_blend_epi32(_mm256_castpd_si256(below_lo),
                         _mm256_castpd_si256(below_hi), 0xaa),
      _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
  // f - (-1) = nextafter(f, +inf) on the lanes below v (f >= 0, finite:
  // an Inf f is never below v).
  const __m256 f = _mm256_castsi256_ps(_mm256_sub_epi32(
      _mm256_castps_si256(_mm256_set_m128(n_hi, n_lo)), below));
  if (dt == DType::kF32) {
    // As `f < FLT_MIN ? FLT_MIN : f`.
    *scale = _mm256_max_ps(_mm256_set1_ps(1.17549435e-38f), f);
    *bits = _mm256_castps_si256(*scale);
    return _mm256_cmpgt_epi32(*bits, _mm256_set1_epi32(0x7f7fffff));
  }
  if (dt == DType::kF16) {
    const __m128i h = _mm256_cvtps_ph(f, _MM_FROUND_TO_POS_INF);
    *scale = _mm256_cvtph_ps(h);
    *bits = _mm256_cvtepu16_epi32(h);
    return _mm256_cmpgt_epi32(*bits, _mm256_set1_epi32(0x7bff));
  }
  // BF16: f >= 0 is finite or +Inf, so rounding its upper half up is adding
  // 0xffff (an Inf stays 0x7f80 and reads as overflow).
  __m256i b = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_castps_si256(f), _mm256_set1_epi32(0xffff)), 16);
  b = _mm256_max_epi32(b, _mm256_set1_epi32(0x0080));
  *scale = _mm256_castsi256_ps(_mm256_slli_epi32(b, 16));
  *bits = b;
  return _mm256_cmpgt_epi32(b, _mm256_set1_epi32(0x7f7f));
}

// 1 / scale on the non-zero lanes nz, 0 elsewhere (never dividing by 0).
NIBBLE_AVX2_INLINE __m256 InverseScale(__m256 scale, __m256 nz) {
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_and_ps(nz,
                       _mm256_div_ps(one, _mm256_blendv_ps(one, scale, nz)));
}

// DeriveSymmetric on 8 lanes of magnitude bits (lane k = group k), stored to
// the 8 floats / words at each output; returns the lanes whose scale
// overflows (all ones).
template <DType kIn>
NIBBLE_AVX2_INLINE __m256i DeriveSymmetric8(__m256i abits, int qmax, DType sdt,
                                            float* scale_out, float* inv_out,
                                            float* zp_out, uint32_t* bits_out) {
  const __m256i nzi = _mm256_cmpgt_epi32(abits, _mm256_setzero_si256());
  const __m256 nz = _mm256_castsi256_ps(nzi);
  const __m256 a = MagnitudesToFloat<kIn>(abits);
  const __m256d q = _mm256_set1_pd(static_cast<double>(qmax));
  const __m256d v_lo =
      _mm256_div_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(a)), q);
  const __m256d v_hi =
      _mm256_div_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)), q);
  __m256 scale;
  __m256i bits;
  const __m256i overflow = RoundScaleUp8(v_lo, v_hi, sdt, &scale, &bits);
  scale = _mm256_and_ps(nz, scale);
  _mm256_store_ps(scale_out, scale);
  _mm256_store_ps(inv_out, InverseScale(scale, nz));
  _mm256_store_ps(zp_out, _mm256_setzero_ps());
  _mm256_store_si256(reinterpret_cast<__m256i*>(bits_out),
                     _mm256_and_si256(nzi, bits));
  return _mm256_and_si256(overflow, nzi);
}

// DeriveAsymmetric(-magnitude(nbits), magnitude(hbits)) on 8 lanes.
template <DType kIn>
NIBBLE_AVX2_INLINE __m256i DeriveAsymmetric8(__m256i nbits, __m256i hbits,
                                             int qmax, DType sdt,
                                             float* scale_out, float* inv_out,
                                             float* zp_out,
                                             uint32_t* bits_out) {
  const __m256i zero = _mm256_setzero_si256();
  const __m256i has_neg = _mm256_cmpgt_epi32(nbits, zero);
  const __m256i nzi =
      _mm256_or_si256(has_neg, _mm256_cmpgt_epi32(hbits, zero));
  const __m256 nz = _mm256_castsi256_ps(nzi);
  const __m256 n = MagnitudesToFloat<kIn>(nbits);  // -l (+0.0 when l = 0)
  const __m256 h = MagnitudesToFloat<kIn>(hbits);
  // range = h - l = h + (-l) in double, exact operands as in the scalar code.
  const __m256d q = _mm256_set1_pd(static_cast<double>(qmax));
  const __m256d r_lo =
      _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(h)),
                    _mm256_cvtps_pd(_mm256_castps256_ps128(n)));
  const __m256d r_hi =
      _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(h, 1)),
                    _mm256_cvtps_pd(_mm256_extractf128_ps(n, 1)));
  __m256 scale;
  __m256i bits;
  const __m256i overflow = RoundScaleUp8(
      _mm256_div_pd(r_lo, q), _mm256_div_pd(r_hi, q), sdt, &scale, &bits);
  scale = _mm256_and_ps(nz, scale);
  const __m256 inv = InverseScale(scale, nz);
  // The scalar code rounds float(-l) * inv where l is +0.0 without negative
  // elements, so -l is -0.0 and so is the zero point (kept: it is added to
  // every rounded value in pass 2 and decides the sign of zero codes there).
  const __m256 negl = _mm256_blendv_ps(_mm256_set1_ps(-0.0f), n,
                                       _mm256_castsi256_ps(has_neg));
  __m256 zp = _mm256_round_ps(_mm256_mul_ps(negl, inv),
                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  zp = _mm256_max_ps(_mm256_setzero_ps(), zp);  // `zp < 0 ? 0 : zp`
  zp = _mm256_min_ps(_mm256_set1_ps(static_cast<float>(qmax)), zp);
  _mm256_store_ps(scale_out, scale);
  _mm256_store_ps(inv_out, inv);
  _mm256_store_ps(zp_out, _mm256_and_ps(nz, zp));  // +0.0 for a zero group
  _mm256_store_si256(reinterpret_cast<__m256i*>(bits_out),
                     _mm256_and_si256(nzi, bits));
  return _mm256_and_si256(overflow, nzi);
}

// The shared scalar functions for the lanes in `lanes` (bit k = lane k):
// their parameters replace those lanes of the outputs and their verdicts
// those bits of `overflow`, which is returned. Out of line and cold: with
// kVectorDerive only groups next to the scale dtype's limit come here.
template <DType kIn, bool kSym>
__attribute__((noinline, cold)) uint32_t DeriveScalarLanes(
    const GroupBits8& b, uint32_t lanes, uint32_t overflow, int qmax, DType sdt,
    float* scale_out, float* inv_out, float* zp_out, uint32_t* bits_out) {
  alignas(32) uint32_t hi[8], neg[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(hi), b.hi);
  _mm256_store_si256(reinterpret_cast<__m256i*>(neg), b.neg);
  for (; lanes != 0; lanes &= lanes - 1) {
    const int k = __builtin_ctz(lanes);
    GroupParams gp{0.0f, 0.0f, 0.0f, 0};
    const bool fits =
        kSym ? DeriveSymmetric(MagnitudeToFloat(hi[k], kIn), qmax, sdt, &gp)
             : DeriveAsymmetric(-MagnitudeToFloat(neg[k], kIn),
                                MagnitudeToFloat(hi[k], kIn), qmax, sdt, &gp);
    overflow = fits ? overflow & ~(1u << k) : overflow | (1u << k);
    scale_out[k] = gp.scale;
    inv_out[k] = gp.inv;
    zp_out[k] = gp.zp;
    bits_out[k] = gp.scale_bits;
  }
  return overflow;
}

// Parameters of the 8 groups of b into bp lanes [8h, 8h + 8); returns the
// overflowing lanes as a bit mask. The vector code computes the plain
// round-up of DeriveSymmetric / DeriveAsymmetric; lanes whose rounded-up
// scale is above cap_bits (CapScaleBits: only those can be capped or refused
// by the scale cap of common.h) or that overflow are derived again by the
// scalar functions, so the cap is written once, in common.h.
template <DType kIn, bool kSym>
NIBBLE_AVX2_INLINE uint32_t DeriveGroups8(const GroupBits8& b, int qmax,
                                          DType sdt, uint32_t cap_bits,
                                          BatchParams* bp, int h) {
  float* s = bp->scale + 8 * h;
  float* i = bp->inv + 8 * h;
  float* z = bp->zp + 8 * h;
  uint32_t* bits = bp->bits + 8 * h;
  if constexpr (!kVectorDerive) {
    return DeriveScalarLanes<kIn, kSym>(b, 0xffu, 0u, qmax, sdt, s, i, z, bits);
  } else {
    __m256i overflow;
    if constexpr (kSym) {
      overflow = DeriveSymmetric8<kIn>(b.hi, qmax, sdt, s, i, z, bits);
    } else {
      overflow = DeriveAsymmetric8<kIn>(b.neg, b.hi, qmax, sdt, s, i, z, bits);
    }
    // Stored bits are below 2^31 (0 for zero groups): a signed compare.
    const __m256i near_limit = _mm256_or_si256(
        overflow, _mm256_cmpgt_epi32(
                      _mm256_load_si256(reinterpret_cast<const __m256i*>(bits)),
                      _mm256_set1_epi32(static_cast<int32_t>(cap_bits))));
    const uint32_t ovf = static_cast<uint32_t>(
        _mm256_movemask_ps(_mm256_castsi256_ps(overflow)));
    const uint32_t slow = static_cast<uint32_t>(
        _mm256_movemask_ps(_mm256_castsi256_ps(near_limit)));
    if (__builtin_expect(slow == 0, 1)) return ovf;
    return DeriveScalarLanes<kIn, kSym>(b, slow, ovf, qmax, sdt, s, i, z, bits);
  }
}

// Scales (and zero points) of groups [g0, g0 + nb) of one row.
template <bool kSym>
NIBBLE_AVX2_INLINE void StoreBatch(const BatchParams& bp, int nb, DType sdt,
                                   void* scales, uint8_t* zps, int64_t g0) {
  if (nb == kBatch) {
    const __m256i b0 =
        _mm256_load_si256(reinterpret_cast<const __m256i*>(bp.bits));
    const __m256i b1 =
        _mm256_load_si256(reinterpret_cast<const __m256i*>(bp.bits + 8));
    if (sdt == DType::kF32) {
      uint32_t* d = static_cast<uint32_t*>(scales) + g0;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d), b0);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + 8), b1);
    } else {
      // 16-bit patterns: packus keeps them; undo the lane interleave.
      _mm256_storeu_si256(
          reinterpret_cast<__m256i*>(static_cast<uint16_t*>(scales) + g0),
          _mm256_permute4x64_epi64(_mm256_packus_epi32(b0, b1), 0xd8));
    }
    if constexpr (!kSym) {
      const __m256i z0 = _mm256_cvttps_epi32(_mm256_load_ps(bp.zp));
      const __m256i z1 = _mm256_cvttps_epi32(_mm256_load_ps(bp.zp + 8));
      const __m256i w = _mm256_permute4x64_epi64(_mm256_packs_epi32(z0, z1),
                                                 0xd8);
      const __m128i z = _mm_packus_epi16(_mm256_castsi256_si128(w),
                                         _mm256_extracti128_si256(w, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(zps + g0), z);
    }
    return;
  }
  for (int k = 0; k < nb; ++k) {
    StoreScale(scales, g0 + k, sdt, bp.bits[k]);
    if constexpr (!kSym) zps[g0 + k] = static_cast<uint8_t>(bp.zp[k]);
  }
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

NIBBLE_AVX2_INLINE float HMaxPs(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

// ---------------------------------------------------------------------------
// Pass 2.

struct VecParams {
  __m256 inv, scale, zp, lo_clamp, hi_clamp;
  __m256i zp_i;  // zp as an integer
};

// Quantizes 8 elements (lanes 8h..8h+7 of the metrics) to int32 codes, with
// the float sequence of scalar.cc (the metrics need the float level).
template <DType kIn, bool kSym>
NIBBLE_AVX2_INLINE __m256i QuantizeVecMetrics(const uint8_t* p,
                                              const VecParams& vp, int h,
                                              Metrics* mt) {
  const __m256 x = Load8<kIn>(p);
  __m256 q = _mm256_round_ps(_mm256_mul_ps(x, vp.inv),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  if constexpr (!kSym) q = _mm256_add_ps(q, vp.zp);
  q = _mm256_max_ps(vp.lo_clamp, q);  // q < lo ? lo : q
  q = _mm256_min_ps(vp.hi_clamp, q);  // q > hi ? hi : q
  const __m256 d = _mm256_mul_ps(kSym ? q : _mm256_sub_ps(q, vp.zp), vp.scale);
  const __m256 e = _mm256_sub_ps(d, x);
  mt->e2[h] = _mm256_fmadd_ps(e, e, mt->e2[h]);
  mt->x2[h] = _mm256_fmadd_ps(x, x, mt->x2[h]);
  mt->xe[h] = _mm256_fmadd_ps(x, e, mt->xe[h]);
  const __m256 a =
      _mm256_and_ps(e, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  mt->mx = _mm256_max_ps(a, mt->mx);  // a > max ? a : max
  return _mm256_cvtps_epi32(q);  // q is an integer: exact
}

// The codes without metrics, in the integer domain: VCVTPS2DQ rounds to
// nearest even under the default MXCSR (as std::nearbyint does in
// scalar.cc), i.e. it is ROUNDPS followed by an exact conversion, as long as
// |x * inv| < 2^31 -- it is at most about qmax, because the scale is at
// least absmax / qmax ((hi - lo) / qmax when asymmetric), or, capped
// (common.h), at most one part in 2^7 below it. Adding the zero
// point is exact in both domains, and the clamp is done on the packed bytes
// (QuantizeStep), where the saturating packs preserve the order of every
// value: clamp(saturate(v)) == clamp(v) for a clamp range inside int8/uint8.
template <DType kIn, bool kSym>
NIBBLE_AVX2_INLINE __m256i QuantizeVecInt(const uint8_t* p,
                                          const VecParams& vp) {
  __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(Load8<kIn>(p), vp.inv));
  if constexpr (!kSym) c = _mm256_add_epi32(c, vp.zp_i);
  return c;
}

// Stores the 32 code bytes b as QuantizeStep's packs leave them (dwords of 4
// consecutive elements in the order 0-3, 8-11, 16-19, 24-27 | 4-7, 12-15,
// 20-23, 28-31): INT8 as 32 bytes, INT4 (every byte 0..15) as 16 bytes of
// nibble pairs, element 2k in the low nibble.
template <int kBits>
NIBBLE_AVX2_INLINE void StorePackedCodes(__m256i b, uint8_t* dst) {
  if constexpr (kBits == 8) {
    b = _mm256_permutevar8x32_epi32(b,
                                    _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), b);
  } else {
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

// Quantizes 32 elements at p and writes 32 (INT8) or 16 (INT4) code bytes.
template <DType kIn, int kBits, bool kSym, bool kMetrics>
NIBBLE_AVX2_INLINE void QuantizeStep(const uint8_t* p, const VecParams& vp,
                                     uint8_t* dst, Metrics* mt) {
  constexpr size_t kVecBytes = 8 * InSize<kIn>();
  // Columns 0-7, 8-15 go to lanes 0-7, 8-15; then 16-23, 24-31 to the same
  // lanes, after them, as in the scalar column order.
  __m256i c[4];
  for (int k = 0; k < 4; ++k) {
    if constexpr (kMetrics) {
      c[k] = QuantizeVecMetrics<kIn, kSym>(p + k * kVecBytes, vp, k & 1, mt);
    } else {
      c[k] = QuantizeVecInt<kIn, kSym>(p + k * kVecBytes, vp);
    }
  }
  const __m256i p01 = _mm256_packs_epi32(c[0], c[1]);
  const __m256i p23 = _mm256_packs_epi32(c[2], c[3]);
  // Dwords of b hold 4 consecutive elements each, in the order
  // 0-3, 8-11, 16-19, 24-27 | 4-7, 12-15, 20-23, 28-31. Asymmetric codes are
  // clamped to [0, 255] by the unsigned saturation.
  __m256i b = kSym ? _mm256_packs_epi16(p01, p23)
                   : _mm256_packus_epi16(p01, p23);
  if constexpr (!kMetrics) {
    // The clamp of scalar.cc (a no-op after the float clamp with metrics).
    if constexpr (kSym) {
      b = _mm256_max_epi8(b, _mm256_set1_epi8(kBits == 8 ? -127 : -7));
      if constexpr (kBits == 4) b = _mm256_min_epi8(b, _mm256_set1_epi8(7));
    } else if constexpr (kBits == 4) {
      b = _mm256_min_epu8(b, _mm256_set1_epi8(15));
    }
  }
  if constexpr (kBits == 4 && kSym) b = _mm256_add_epi8(b, _mm256_set1_epi8(8));
  StorePackedCodes<kBits>(b, dst);
}

// Groups are handled in batches of 16: pass 1 for each, the parameters of
// all of them (two vectors of 8), then pass 2 for each. A failing group ends
// the batch (and the row) there, after the groups before it are written,
// which leaves the same bytes as the scalar group-by-group loop.
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
  const __m256i finite_max =
      _mm256_set1_epi32(static_cast<int32_t>(NonFiniteBits(kIn) - 1));
  const uint32_t cap_bits = CapScaleBits(qmax, a.scale_dtype);
  alignas(32) uint8_t tail[kStep * 4];
  alignas(32) uint8_t tail_codes[kStep];
  __m256i hv[kBatch], nv[kBatch];
  BatchParams bp;
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
    for (int64_t g0 = 0; g0 < groups && o.status == kRowOk; g0 += kBatch) {
      int nb = static_cast<int>(groups - g0 < kBatch ? groups - g0 : kBatch);
      for (int k = 0; k < nb; ++k) {
        ScanGroup<kIn, kSym>(
            row + static_cast<size_t>((g0 + k) * group) * esize, full_steps,
            rem, tail, &hv[k], &nv[k]);
      }
      const int padded = nb <= 8 ? 8 : 16;
      for (int k = nb; k < padded; ++k) {
        hv[k] = nv[k] = _mm256_setzero_si256();
      }
      uint32_t non_finite = 0, bad = 0;
      for (int h = 0; h < padded / 8; ++h) {
        GroupBits8 b = ReduceGroups8<kIn, kSym>(hv + 8 * h, nv + 8 * h);
        const __m256i nf =
            _mm256_cmpgt_epi32(_mm256_max_epi32(b.hi, b.neg), finite_max);
        // Those groups fail before deriving: keep NaN/Inf out of it.
        b.hi = _mm256_andnot_si256(nf, b.hi);
        b.neg = _mm256_andnot_si256(nf, b.neg);
        const uint32_t nfm =
            static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(nf)));
        non_finite |= nfm << (8 * h);
        bad |= (nfm | DeriveGroups8<kIn, kSym>(b, qmax, a.scale_dtype, cap_bits,
                                               &bp, h))
               << (8 * h);
      }
      bad &= (1u << nb) - 1u;
      if (bad != 0) {
        const int k = __builtin_ctz(bad);
        const int64_t c0 = (g0 + k) * group;
        if ((non_finite >> k) & 1u) {
          o.status = kRowNonFinite;
          o.bad_col = FindNonFinite(row, kIn, c0, c0 + group);
        } else {
          o.status = kRowScaleOverflow;
          o.bad_col = c0;
        }
        nb = k;
      }
      StoreBatch<kSym>(bp, nb, a.scale_dtype, scales, zps, g0);
      // Pass 2.
      for (int k = 0; k < nb; ++k) {
        const int64_t c0 = (g0 + k) * group;
        const uint8_t* gp = row + static_cast<size_t>(c0) * esize;
        vp.inv = _mm256_set1_ps(bp.inv[k]);
        if constexpr (kMetrics) vp.scale = _mm256_set1_ps(bp.scale[k]);
        if constexpr (!kSym) {
          vp.zp = _mm256_set1_ps(bp.zp[k]);
          vp.zp_i = _mm256_set1_epi32(static_cast<int32_t>(bp.zp[k]));
        }
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
          // The tail buffer still holds this group's zero-padded last step
          // (a per-row group is alone in its batch). Pad elements quantize
          // 0.0: for INT4 with odd columns this also yields the defined pad
          // nibble of the row's last byte.
          QuantizeStep<kIn, kBits, kSym, kMetrics>(tail, vp, tail_codes, &mt);
          std::memcpy(gc + full_steps * kStep * kBits / 8, tail_codes,
                      static_cast<size_t>(kBits == 8 ? rem : (rem + 1) / 2));
        }
      }
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

// ---------------------------------------------------------------------------
// GGML schemes (Q8_0, Q4_0, Q4_1; see common.h). Every group is one step of
// 32 columns. Pass 1 takes integer maxima of the bit patterns, 16 groups per
// batch as above: Q8_0 the magnitudes (ScanGroup, symmetric), Q4_0 and Q4_1
// order-preserving keys for the min and max (ScanKeys). What the maxima lose
// is recovered from the group's elements, which are in L1 by then, in the
// rare groups that need it: Q4_0's sign of the first element of largest
// magnitude when +a and -a both occur, and Q4_1's minimum when it is -0.0
// (ggml keeps the first zero, which may be +0.0). The parameters of 8
// groups are derived per vector with ggml's float operations (divisions and
// 1/d are correctly rounded, VCVTPS2PH with imm8 = 0 is FloatToHalfBits),
// pass 2 computes ggml's codes, and the codes go through the same packing as
// nibble's schemes.

// Q4_0, Q4_1: the order-preserving key of a float's bits is bits ^ 0x8000 (sign
// clear) or ~bits (sign set), 16-bit shown, 32-bit alike: unsigned order of
// the keys is the float order with -0.0 just below +0.0, and NaN/Inf at the
// ends. The max of the keys gives the max and the max of ~key the min (-0.0
// wins over +0.0 there; the caller resolves that case).
template <DType kIn>
NIBBLE_AVX2_INLINE void ScanKeys(const uint8_t* gp, __m256i* kmax,
                                 __m256i* kminc) {
  const __m256i ones = _mm256_set1_epi32(-1);
  __m256i a[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
  __m256i b[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
  if constexpr (kIn == DType::kF32) {
    const __m256i top = _mm256_set1_epi32(INT32_MIN);
    for (int k = 0; k < 4; ++k) {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(gp + 32 * k));
      const __m256i key =
          _mm256_xor_si256(v, _mm256_or_si256(_mm256_srai_epi32(v, 31), top));
      a[k & 1] = _mm256_max_epu32(a[k & 1], key);
      b[k & 1] = _mm256_max_epu32(b[k & 1], _mm256_xor_si256(key, ones));
    }
    *kmax = _mm256_max_epu32(a[0], a[1]);
    *kminc = _mm256_max_epu32(b[0], b[1]);
  } else {
    const __m256i top = _mm256_set1_epi16(static_cast<int16_t>(0x8000));
    for (int k = 0; k < 2; ++k) {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(gp + 32 * k));
      const __m256i key =
          _mm256_xor_si256(v, _mm256_or_si256(_mm256_srai_epi16(v, 15), top));
      a[k] = _mm256_max_epu16(a[k], key);
      b[k] = _mm256_max_epu16(b[k], _mm256_xor_si256(key, ones));
    }
    *kmax = _mm256_max_epu16(a[0], a[1]);
    *kminc = _mm256_max_epu16(b[0], b[1]);
  }
}

// Keys (u32 lanes; 16-bit keys zero-extended) back to bit patterns.
template <DType kIn>
NIBBLE_AVX2_INLINE __m256i KeysToBits(__m256i key) {
  if constexpr (kIn == DType::kF32) {
    // Top bit clear: a negative float, all bits were flipped.
    const __m256i negative =
        _mm256_xor_si256(_mm256_srai_epi32(key, 31), _mm256_set1_epi32(-1));
    const __m256i flip = _mm256_or_si256(
        _mm256_set1_epi32(INT32_MIN),
        _mm256_and_si256(negative, _mm256_set1_epi32(0x7fffffff)));
    return _mm256_xor_si256(key, flip);
  } else {
    const __m256i negative =
        _mm256_cmpeq_epi32(_mm256_and_si256(key, _mm256_set1_epi32(0x8000)),
                           _mm256_setzero_si256());
    const __m256i flip =
        _mm256_or_si256(_mm256_set1_epi32(0x8000),
                        _mm256_and_si256(negative, _mm256_set1_epi32(0x7fff)));
    return _mm256_xor_si256(key, flip);
  }
}

// Sign bit (0 or 1) of the first of the 32 elements at gp whose magnitude
// bits equal `mag` (one exists).
template <DType kIn>
NIBBLE_AVX2_INLINE uint32_t FirstSignOfMagnitude(const uint8_t* gp,
                                                 uint32_t mag) {
  if constexpr (kIn == DType::kF32) {
    const __m256i m = _mm256_set1_epi32(static_cast<int32_t>(mag));
    const __m256i abs = _mm256_set1_epi32(0x7fffffff);
    uint32_t hits = 0;
    for (int k = 0; k < 4; ++k) {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(gp + 32 * k));
      const __m256i eq = _mm256_cmpeq_epi32(_mm256_and_si256(v, abs), m);
      hits |= static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(eq)))
              << (8 * k);
    }
    uint32_t bits;
    std::memcpy(&bits, gp + 4 * __builtin_ctz(hits), 4);
    return bits >> 31;
  } else {
    const __m256i m = _mm256_set1_epi16(static_cast<int16_t>(mag));
    const __m256i abs = _mm256_set1_epi16(0x7fff);
    uint64_t hits = 0;
    for (int k = 0; k < 2; ++k) {
      const __m256i v =
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(gp + 32 * k));
      const __m256i eq = _mm256_cmpeq_epi16(_mm256_and_si256(v, abs), m);
      hits |=
          static_cast<uint64_t>(static_cast<uint32_t>(_mm256_movemask_epi8(eq)))
          << (32 * k);
    }
    uint16_t bits;
    std::memcpy(&bits, gp + 2 * (__builtin_ctzll(hits) / 2), 2);
    return static_cast<uint32_t>(bits >> 15);
  }
}

struct GgmlBatch {
  // Bit patterns per group: Q8_0 the largest magnitude, Q4_0 the element of
  // largest magnitude (signed), Q4_1 the max; lo: Q4_1's min.
  alignas(32) uint32_t hi[kBatch];
  alignas(32) uint32_t lo[kBatch];
  alignas(32) float id[kBatch];
  alignas(32) float lo_f[kBatch];
  alignas(32) float scale[kBatch];
  alignas(32) float offset[kBatch];
  alignas(32) uint32_t d_bits[kBatch];
  alignas(32) uint32_t m_bits[kBatch];
};

// DeriveGgmlQ8_0 / Q4_0 / Q4_1 on lanes [8h, 8h + 8) of bp; returns the
// lanes whose scale or minimum overflows F16 as a bit mask.
template <DType kIn, GgmlType kType>
NIBBLE_AVX2_INLINE uint32_t DeriveGgml8(GgmlBatch* bp, int h) {
  const __m256i hbits =
      _mm256_load_si256(reinterpret_cast<const __m256i*>(bp->hi + 8 * h));
  const __m256 hi = MagnitudesToFloat<kIn>(hbits);  // sign kept
  __m256 lo = _mm256_setzero_ps();
  __m256 d;
  if constexpr (kType == GgmlType::kQ8_0) {
    d = _mm256_div_ps(hi, _mm256_set1_ps(127.0f));
  } else if constexpr (kType == GgmlType::kQ4_0) {
    d = _mm256_div_ps(hi, _mm256_set1_ps(-8.0f));
  } else {
    lo = MagnitudesToFloat<kIn>(
        _mm256_load_si256(reinterpret_cast<const __m256i*>(bp->lo + 8 * h)));
    d = _mm256_div_ps(_mm256_sub_ps(hi, lo), _mm256_set1_ps(15.0f));
  }
  // `d ? 1.0f/d : 0.0f`
  const __m256 nz = _mm256_cmp_ps(d, _mm256_setzero_ps(), _CMP_NEQ_UQ);
  const __m128i dh = _mm256_cvtps_ph(d, _MM_FROUND_TO_NEAREST_INT);
  const __m256i d_bits = _mm256_cvtepu16_epi32(dh);
  const __m256i f16_max = _mm256_set1_epi32(0x7bff);
  const __m256i mag16 = _mm256_set1_epi32(0x7fff);
  __m256i overflow =
      _mm256_cmpgt_epi32(_mm256_and_si256(d_bits, mag16), f16_max);
  _mm256_store_ps(bp->id + 8 * h, InverseScale(d, nz));
  _mm256_store_ps(bp->scale + 8 * h, _mm256_cvtph_ps(dh));
  _mm256_store_si256(reinterpret_cast<__m256i*>(bp->d_bits + 8 * h), d_bits);
  _mm256_store_ps(bp->lo_f + 8 * h, lo);
  if constexpr (kType == GgmlType::kQ4_1) {
    const __m128i mh = _mm256_cvtps_ph(lo, _MM_FROUND_TO_NEAREST_INT);
    const __m256i m_bits = _mm256_cvtepu16_epi32(mh);
    overflow = _mm256_or_si256(
        overflow, _mm256_cmpgt_epi32(_mm256_and_si256(m_bits, mag16), f16_max));
    _mm256_store_ps(bp->offset + 8 * h, _mm256_cvtph_ps(mh));
    _mm256_store_si256(reinterpret_cast<__m256i*>(bp->m_bits + 8 * h), m_bits);
  }
  return static_cast<uint32_t>(
      _mm256_movemask_ps(_mm256_castsi256_ps(overflow)));
}

struct GgmlVec {
  __m256 id, lo, scale, offset;
};

// ggml's codes of 8 elements as int32 (common.h's GgmlCode*):
//  Q8_0  roundf(x * id): t = trunc(v), plus sign(v) where |v - t| >= 0.5
//        (v - t is exact); 0 where v is not finite (id = Inf), as the low
//        byte of CVTTSS2SI's INT32_MIN is. |t| <= 127: the conversion is
//        exact.
//  Q4_0  clamp(trunc(x * id + 8.5), 0, 15); Q4_1 the same of
//        (x - lo) * id + 0.5. CVTTPS2DQ is the truncation, INT32_MIN for a
//        non-finite value; min then max is GgmlNibble.
template <GgmlType kType>
NIBBLE_AVX2_INLINE __m256i GgmlCodes8(__m256 x, const GgmlVec& vp) {
  if constexpr (kType == GgmlType::kQ8_0) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    const __m256 v = _mm256_mul_ps(x, vp.id);
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    const __m256 away = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    t = _mm256_add_ps(
        t, _mm256_and_ps(away, _mm256_or_ps(_mm256_set1_ps(1.0f),
                                            _mm256_and_ps(v, sign))));
    const __m256 finite = _mm256_cmp_ps(
        _mm256_andnot_ps(sign, v),
        _mm256_set1_ps(std::numeric_limits<float>::max()), _CMP_LE_OQ);
    return _mm256_cvttps_epi32(_mm256_and_ps(t, finite));
  } else {
    const __m256 v =
        kType == GgmlType::kQ4_0
            ? _mm256_add_ps(_mm256_mul_ps(x, vp.id), _mm256_set1_ps(8.5f))
            : _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(x, vp.lo), vp.id),
                            _mm256_set1_ps(0.5f));
    const __m256i t =
        _mm256_min_epi32(_mm256_cvttps_epi32(v), _mm256_set1_epi32(15));
    return _mm256_max_epi32(t, _mm256_setzero_si256());
  }
}

// Quantizes one group (32 elements at p) and writes its 32 (Q8_0) or 16
// (Q4_0, Q4_1) code bytes; metric lanes as in QuantizeStep.
template <DType kIn, GgmlType kType, bool kMetrics>
NIBBLE_AVX2_INLINE void QuantizeGgmlStep(const uint8_t* p, const GgmlVec& vp,
                                         uint8_t* dst, Metrics* mt) {
  constexpr size_t kVecBytes = 8 * InSize<kIn>();
  __m256i c[4];
  for (int k = 0; k < 4; ++k) {
    const __m256 x = Load8<kIn>(p + k * kVecBytes);
    c[k] = GgmlCodes8<kType>(x, vp);
    if constexpr (kMetrics) {
      // ggml's dequantization: q * d, (q - 8) * d, q * d + m.
      const __m256i level = kType == GgmlType::kQ4_0
                                ? _mm256_sub_epi32(c[k], _mm256_set1_epi32(8))
                                : c[k];
      __m256 w = _mm256_mul_ps(_mm256_cvtepi32_ps(level), vp.scale);
      if constexpr (kType == GgmlType::kQ4_1) w = _mm256_add_ps(w, vp.offset);
      const __m256 e = _mm256_sub_ps(w, x);
      const int h = k & 1;
      mt->e2[h] = _mm256_fmadd_ps(e, e, mt->e2[h]);
      mt->x2[h] = _mm256_fmadd_ps(x, x, mt->x2[h]);
      mt->xe[h] = _mm256_fmadd_ps(x, e, mt->xe[h]);
      const __m256 a =
          _mm256_and_ps(e, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
      mt->mx = _mm256_max_ps(a, mt->mx);  // a > max ? a : max
    }
  }
  const __m256i p01 = _mm256_packs_epi32(c[0], c[1]);
  const __m256i p23 = _mm256_packs_epi32(c[2], c[3]);
  if constexpr (kType == GgmlType::kQ8_0) {
    StorePackedCodes<8>(_mm256_packs_epi16(p01, p23), dst);
  } else {
    StorePackedCodes<4>(_mm256_packus_epi16(p01, p23), dst);
  }
}

static_assert(kStep == kGgmlBlock, "a GGML block is one step");

template <DType kIn, GgmlType kType, bool kMetrics>
void QuantizeGgmlRowsT(const QuantizeArgs& a, int64_t row_begin,
                       int64_t row_end, RowOutcome* outcomes) {
  constexpr size_t esize = InSize<kIn>();
  constexpr bool kWide = kIn == DType::kF32;
  constexpr uint32_t kSignBit = kWide ? 0x80000000u : 0x8000u;
  constexpr int kCodeBytes = kType == GgmlType::kQ8_0 ? 32 : 16;
  const int64_t groups = a.cols / kStep;
  const __m256i finite_max =
      _mm256_set1_epi32(static_cast<int32_t>(NonFiniteBits(kIn) - 1));
  const __m256i mag_mask = _mm256_set1_epi32(kWide ? 0x7fffffff : 0x7fff);
  const __m256i key_ones = _mm256_set1_epi32(kWide ? -1 : 0xffff);
  alignas(32) uint8_t tail[kStep * 4];  // unused: groups are whole steps
  __m256i hv[kBatch], nv[kBatch];
  GgmlBatch bp;
  GgmlVec vp{_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(),
             _mm256_setzero_ps()};
  Metrics mt;
  for (int64_t r = row_begin; r < row_end; ++r) {
    RowOutcome& o = outcomes[r - row_begin];
    o = RowOutcome{0.0, 0.0, 0.0, 0.0f, kRowOk, -1};
    const uint8_t* row = static_cast<const uint8_t*>(a.in) +
                         static_cast<size_t>(r) * a.in_stride * esize;
    uint8_t* codes = a.codes + r * a.codes_stride;
    uint16_t* scales = static_cast<uint16_t*>(a.scales) + r * a.scales_stride;
    uint16_t* offsets =
        kType == GgmlType::kQ4_1
            ? static_cast<uint16_t*>(a.offsets) + r * a.offsets_stride
            : nullptr;
    if constexpr (kMetrics) ResetMetrics(&mt);
    for (int64_t g0 = 0; g0 < groups && o.status == kRowOk; g0 += kBatch) {
      int nb = static_cast<int>(groups - g0 < kBatch ? groups - g0 : kBatch);
      const uint8_t* bg = row + static_cast<size_t>(g0 * kStep) * esize;
      for (int k = 0; k < nb; ++k) {
        const uint8_t* gp = bg + static_cast<size_t>(k * kStep) * esize;
        if constexpr (kType == GgmlType::kQ8_0) {
          ScanGroup<kIn, true>(gp, 1, 0, tail, &hv[k], &nv[k]);
        } else {
          ScanKeys<kIn>(gp, &hv[k], &nv[k]);
        }
      }
      const int padded = nb <= 8 ? 8 : 16;
      for (int k = nb; k < padded; ++k) {
        hv[k] = nv[k] = _mm256_setzero_si256();
      }
      uint32_t non_finite = 0, resolve = 0;
      for (int h = 0; h < padded / 8; ++h) {
        __m256i hi, lo = _mm256_setzero_si256(), mag;
        if constexpr (kType == GgmlType::kQ8_0) {
          hi = ReduceGroups8<kIn, true>(hv + 8 * h, nv + 8 * h).hi;
          mag = hi;
        } else {
          // The max (hi) and the min (lo) of each group.
          hi = KeysToBits<kIn>(kWide ? TreeMaxU32(hv + 8 * h)
                                     : TreeMaxU16(hv + 8 * h));
          lo = KeysToBits<kIn>(_mm256_xor_si256(
              kWide ? TreeMaxU32(nv + 8 * h) : TreeMaxU16(nv + 8 * h),
              key_ones));
          const __m256i mh = _mm256_and_si256(hi, mag_mask);
          const __m256i ml = _mm256_and_si256(lo, mag_mask);
          mag = _mm256_max_epu32(mh, ml);
          const __m256i zero = _mm256_setzero_si256();
          __m256i fix;
          if constexpr (kType == GgmlType::kQ4_0) {
            // ggml's max is the element of largest magnitude: the max or
            // the min, whichever is larger in magnitude; +0.0 when all are
            // zero; the first of +a and -a when both occur (`fix`, from
            // the elements below).
            fix = _mm256_andnot_si256(
                _mm256_or_si256(_mm256_cmpeq_epi32(hi, lo),
                                _mm256_cmpeq_epi32(mag, zero)),
                _mm256_cmpeq_epi32(mh, ml));
            hi = _mm256_blendv_epi8(hi, lo, _mm256_cmpgt_epi32(ml, mh));
            hi = _mm256_andnot_si256(_mm256_cmpeq_epi32(mag, zero), hi);
          } else {
            // A -0.0 minimum means no negative element: ggml's minimum is
            // the first zero, which may be +0.0 (`fix`).
            fix = _mm256_cmpeq_epi32(
                lo, _mm256_set1_epi32(static_cast<int32_t>(kSignBit)));
          }
          resolve |= static_cast<uint32_t>(
                         _mm256_movemask_ps(_mm256_castsi256_ps(fix)))
                     << (8 * h);
        }
        // Those groups fail before deriving: keep NaN/Inf out of it (the
        // padding lanes of the keys decode to NaN patterns and end up here).
        const __m256i nf = _mm256_cmpgt_epi32(mag, finite_max);
        _mm256_store_si256(reinterpret_cast<__m256i*>(bp.hi + 8 * h),
                           _mm256_andnot_si256(nf, hi));
        _mm256_store_si256(reinterpret_cast<__m256i*>(bp.lo + 8 * h),
                           _mm256_andnot_si256(nf, lo));
        non_finite |=
            static_cast<uint32_t>(_mm256_movemask_ps(_mm256_castsi256_ps(nf)))
            << (8 * h);
      }
      // Rare: Q4_0 groups holding +a and -a as largest magnitudes, Q4_1
      // groups whose minimum is -0.0.
      for (uint32_t left = resolve & ~non_finite & ((1u << nb) - 1u); left != 0;
           left &= left - 1) {
        const int k = __builtin_ctz(left);
        const uint8_t* gp = bg + static_cast<size_t>(k * kStep) * esize;
        if constexpr (kType == GgmlType::kQ4_0) {
          const uint32_t amax = bp.hi[k] & ~kSignBit;
          bp.hi[k] =
              amax | (FirstSignOfMagnitude<kIn>(gp, amax) ? kSignBit : 0u);
        } else if constexpr (kType == GgmlType::kQ4_1) {
          if (!FirstSignOfMagnitude<kIn>(gp, 0)) bp.lo[k] = 0;
        }
      }
      uint32_t bad = non_finite;
      for (int h = 0; h < padded / 8; ++h) {
        bad |= DeriveGgml8<kIn, kType>(&bp, h) << (8 * h);
      }
      bad &= (1u << nb) - 1u;
      if (bad != 0) {
        const int k = __builtin_ctz(bad);
        const int64_t c0 = (g0 + k) * kStep;
        if ((non_finite >> k) & 1u) {
          o.status = kRowNonFinite;
          o.bad_col = FindNonFinite(row, kIn, c0, c0 + kStep);
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
      // Pass 2.
      for (int k = 0; k < nb; ++k) {
        const int64_t c0 = (g0 + k) * kStep;
        vp.id = _mm256_set1_ps(bp.id[k]);
        vp.lo = _mm256_set1_ps(bp.lo_f[k]);
        if constexpr (kMetrics) {
          vp.scale = _mm256_set1_ps(bp.scale[k]);
          if constexpr (kType == GgmlType::kQ4_1)
            vp.offset = _mm256_set1_ps(bp.offset[k]);
        }
        QuantizeGgmlStep<kIn, kType, kMetrics>(
            bg + static_cast<size_t>(k * kStep) * esize, vp,
            codes + (g0 + k) * kCodeBytes, &mt);
        if constexpr (kMetrics) {
          if (((c0 + kStep) & (kFlushCols - 1)) == 0) FlushMetrics(&mt);
        }
      }
    }
    if (o.status != kRowOk) continue;
    if constexpr (kMetrics) {
      FlushMetrics(&mt);
      o.sum_sq_error = SumLanes(mt.de2);
      o.sum_sq_ref = SumLanes(mt.dx2);
      o.sum_ref_error = SumLanes(mt.dxe);
      o.max_abs_error = HMaxPs(mt.mx);
    }
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

// kAdd (Q4_1): w = level * scale + add, two roundings.
template <DType kOut, int kBits, bool kSym, bool kAdd = false>
NIBBLE_AVX2_INLINE void DequantizeStep(const uint8_t* p, __m256i offset,
                                       __m256 scale, __m256 mf, __m256 neg_mf,
                                       uint8_t* dst,
                                       __m256 add = _mm256_setzero_ps()) {
  __m256i v[4];
  LoadCodes<kBits, kSym>(p, offset, v);
  __m256 w[4];
  for (int k = 0; k < 4; ++k) {
    w[k] = _mm256_mul_ps(_mm256_cvtepi32_ps(v[k]), scale);
    if constexpr (kAdd) w[k] = _mm256_add_ps(w[k], add);
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

// Q4_1: code * d + m (scalar.cc's DequantizeQ4_1RowsT); one step per group.
template <DType kOut>
void DequantizeQ4_1RowsT(const DequantizeArgs& a, int64_t row_begin,
                         int64_t row_end) {
  constexpr size_t osize = kOut == DType::kF32 ? 4 : 2;
  const int64_t groups = a.cols / kStep;
  const __m256 mf = _mm256_set1_ps(MaxFinite(kOut));
  const __m256 neg_mf = _mm256_set1_ps(-MaxFinite(kOut));
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t r = row_begin; r < row_end; ++r) {
    const uint8_t* codes = a.codes + r * a.codes_stride;
    const uint16_t* scales =
        static_cast<const uint16_t*>(a.scales) + r * a.scales_stride;
    const uint16_t* offsets =
        static_cast<const uint16_t*>(a.offsets) + r * a.offsets_stride;
    uint8_t* out = static_cast<uint8_t*>(a.out) +
                   static_cast<size_t>(r) * a.out_stride * osize;
    for (int64_t g = 0; g < groups; ++g) {
      DequantizeStep<kOut, 4, false, true>(
          codes + g * (kStep / 2), zero,
          _mm256_set1_ps(HalfBitsToFloat(scales[g])), mf, neg_mf,
          out + static_cast<size_t>(g * kStep) * osize,
          _mm256_set1_ps(HalfBitsToFloat(offsets[g])));
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

#undef NIBBLE_AVX2_INLINE

constexpr Table kAvx2Table = {Isa::kAvx2, &QuantizeRows, &DequantizeRows};

}  // namespace

// Baseline code again: the exported getter must be safe to call on any CPU.
#pragma GCC pop_options

const Table* Avx2Table() { return &kAvx2Table; }

}  // namespace nibble::kernels
