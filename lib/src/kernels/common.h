// Scalar pieces shared by every ISA path: per-group parameter derivation,
// dtype conversions, metric lane bookkeeping. Everything here has internal
// linkage (static inline), so an ISA file compiled for AVX-512 cannot donate
// its copy of a helper to the scalar path. Include this header BEFORE any
// `#pragma GCC target`, so that these functions are compiled for the baseline
// ISA and give the same results in every file.
#ifndef NIBBLE_KERNELS_COMMON_H_
#define NIBBLE_KERNELS_COMMON_H_

#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "kernels/table.h"
#include "nibble/types.h"

namespace nibble::kernels {

static inline uint32_t FloatBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
static inline float BitsFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

static inline float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t man = h & 0x3ffu;
  if (exp == 0) {
    // Zero or subnormal: man * 2^-24, exact in float.
    const float mag = static_cast<float>(man) * 5.9604644775390625e-8f;
    return sign ? -mag : mag;
  }
  if (exp == 31) return BitsFloat(sign | 0x7f800000u | (man << 13));
  return BitsFloat(sign | ((exp + 112) << 23) | (man << 13));
}

// IEEE binary32 -> binary16, round to nearest even, as VCVTPS2PH imm8=0:
// overflow gives Inf, NaN keeps its top payload bits and is quieted.
static inline uint16_t FloatToHalfBits(float f) {
  const uint32_t x = FloatBits(f);
  const uint16_t sign = static_cast<uint16_t>((x >> 16) & 0x8000u);
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) {
    if (ax == 0x7f800000u) return sign | 0x7c00u;
    return static_cast<uint16_t>(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
  }
  if (ax >= 0x477ff000u) return sign | 0x7c00u;  // rounds to >= 65520
  if (ax >= 0x38800000u) {                       // normal half
    const uint32_t rounded =
        ax + 0xfffu + ((ax >> 13) & 1u) - (112u << 23);
    return static_cast<uint16_t>(sign | (rounded >> 13));
  }
  if (ax < 0x33000000u) return sign;  // below half of the smallest subnormal
  // Subnormal half: value = m * 2^-24 with m = round(ax_value * 2^24).
  const uint32_t e = ax >> 23;             // 102..112
  const uint32_t m = (ax & 0x7fffffu) | 0x800000u;
  const uint32_t shift = 126u - e;         // 14..24
  const uint32_t q = m >> shift;
  const uint32_t rem = m & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1u);
  const uint32_t up = (rem > half || (rem == half && (q & 1u))) ? 1u : 0u;
  return static_cast<uint16_t>(sign | (q + up));
}

static inline float Bf16BitsToFloat(uint16_t b) {
  return BitsFloat(static_cast<uint32_t>(b) << 16);
}

static inline uint16_t FloatToBf16Bits(float f) {
  const uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Largest finite value of an output dtype (dequantize saturates to it).
static inline float MaxFinite(DType dt) {
  switch (dt) {
    case DType::kF16: return 65504.0f;
    case DType::kBF16: return BitsFloat(0x7f7f0000u);
    case DType::kF32: break;
  }
  return BitsFloat(0x7f7fffffu);
}

// Magnitude bits of the first element that is not finite, scanning
// [begin, end) of one row; -1 when all are finite. Used only on error paths.
static inline int64_t FindNonFinite(const void* row, DType dt, int64_t begin,
                                    int64_t end) {
  for (int64_t j = begin; j < end; ++j) {
    bool bad;
    if (dt == DType::kF32) {
      bad = (static_cast<const uint32_t*>(row)[j] & 0x7fffffffu) >= 0x7f800000u;
    } else {
      const uint16_t v = static_cast<const uint16_t*>(row)[j] & 0x7fffu;
      bad = v >= (dt == DType::kF16 ? 0x7c00u : 0x7f80u);
    }
    if (bad) return j;
  }
  return -1;
}

// Magnitude bits at or above this are NaN/Inf, per input dtype.
static inline uint32_t NonFiniteBits(DType dt) {
  switch (dt) {
    case DType::kF16: return 0x7c00u;
    case DType::kBF16: return 0x7f80u;
    case DType::kF32: break;
  }
  return 0x7f800000u;
}

// Float value of magnitude bits of an input dtype.
static inline float MagnitudeToFloat(uint32_t bits, DType dt) {
  switch (dt) {
    case DType::kF16: return HalfBitsToFloat(static_cast<uint16_t>(bits));
    case DType::kBF16: return Bf16BitsToFloat(static_cast<uint16_t>(bits));
    case DType::kF32: break;
  }
  return BitsFloat(bits);
}

// Per-group parameters, derived once per group by this scalar code on every
// path.
struct GroupParams {
  float scale;  // the stored scale, as float (exact)
  float inv;    // 1 / scale in float; 0 when scale is 0
  float zp;     // zero point (asymmetric), an integer value in float
  uint32_t scale_bits;  // stored representation (16 or 32 bits used)
};

// Smallest value of `dt` that is >= v (v > 0, finite). Returns false on
// overflow. Positive results are at least 2^-24 (F16) or 2^-126 (BF16, F32).
static inline bool RoundScaleUp(double v, DType dt, float* value,
                                uint32_t* bits) {
  float f = static_cast<float>(v);
  if (std::isinf(f)) return false;
  if (static_cast<double>(f) < v) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  if (dt == DType::kF32) {
    if (f < 1.17549435e-38f) f = 1.17549435e-38f;
    if (std::isinf(f)) return false;
    *value = f;
    *bits = FloatBits(f);
    return true;
  }
  if (dt == DType::kF16) {
    uint16_t h = FloatToHalfBits(f);
    if (static_cast<double>(HalfBitsToFloat(h)) < v) ++h;  // h is positive
    if (h == 0) h = 1;
    if ((h & 0x7fffu) >= 0x7c00u) return false;
    *value = HalfBitsToFloat(h);
    *bits = h;
    return true;
  }
  uint16_t b = FloatToBf16Bits(f);
  if (static_cast<double>(Bf16BitsToFloat(b)) < v) ++b;
  if (b < 0x0080u) b = 0x0080u;
  if ((b & 0x7fffu) >= 0x7f80u) return false;
  *value = Bf16BitsToFloat(b);
  *bits = b;
  return true;
}

// ---------------------------------------------------------------------------
// The scale cap: every code decodes to a finite value in the scale dtype.
//
// compressed-tensors (and vLLM, which loads its checkpoints) dequantize as
// (q - zp) * scale IN THE SCALE'S DTYPE: q - zp is cast to that dtype
// (exact: |q - zp| <= 255) and the product is rounded to it. A scale rounded
// up from absmax / qmax can make that product overflow for the largest code:
// absmax 65504 (F16's largest) gives 65504 / 127 -> 516 in F16, and
// 127 * 516 = 65532 rounds to +Inf in F16 (INT4: 65504 / 7 -> 9360,
// 7 * 9360 = 65520 -> +Inf). The rule for nibble's INT8 / INT4 schemes (the
// GGML family below follows ggml instead and is not affected):
//
//  1. The scale is rounded up as always: s = the smallest value of the dtype
//     >= absmax / qmax (symmetric) or range / qmax (asymmetric); the zero
//     point is round(-min(lo, 0) / s) clamped to [0, qmax]. A scale that
//     rounds up to Inf is a scale overflow (kScaleOverflow), as before.
//  2. Let m be the largest |q - zp| any code q of the format gives: qmax
//     when symmetric, max(zp, qmax - zp) when asymmetric. Nothing changes
//     while m * s <= MaxFinite, the dtype's largest finite value (the
//     product is exact in double: s has <= 24 significant bits, m <= 255).
//     Otherwise the group is capped:
//     - symmetric: s becomes the largest value of the dtype with
//       qmax * s <= MaxFinite (LargestScaleWithin);
//     - asymmetric: every zero point z in [0, qmax] is tried with the largest
//       scale that fits it, min(s, LargestScaleWithin(max(z, qmax - z))),
//       and the pair whose two extremes (min(lo, 0) and max(hi, 0), taken at
//       most +-MaxFinite) decode closest, as the kernels compute them, wins
//       (the smallest z on ties). Keeping the nearest zero point of the
//       smaller scale instead can cost the far end a whole extra step; a
//       neighbouring zero point (with its own m and scale) avoids it.
//  3. A capped group is a scale overflow when a magnitude exceeds
//     MaxFinite + s (beyond the dtype by more than a step), or, asymmetric,
//     when its best extremes still decode more than one step away. Nothing
//     is clipped by more than a step beyond what the dtype can hold.
//
// After this every code the format can hold -- not only those the group
// uses -- has |(q - zp) * s| <= MaxFinite exactly, so the product is finite
// in the scale dtype under any rounding, in F32 and in F16 / BF16 arithmetic.
// The kernels' clamp of the codes to [-qmax, qmax] / [0, qmax] takes the
// elements that land just beyond the last code (x * inv up to about
// qmax * (1 + 2^-7) for BF16 scales, 2^-10 for F16).
//
// What it costs. Step 2 changes a group only when m * s > MaxFinite, which
// needs a range of about MaxFinite or more: ordinary data keeps the exact
// bytes of the plain round-up. A capped symmetric group loses less than qmax
// ulps of s at a magnitude MaxFinite (MaxFinite - qmax * s < qmax * ulp(s)):
// at most 1/8 step with F16 scales, 1/2 with BF16, so every element, taken at
// most +-MaxFinite, stays within half a step. A capped asymmetric group keeps
// its elements within one step of themselves (taken at most +-MaxFinite),
// the bound an asymmetric group has anyway from rounding its zero point
// (checked on millions of random (lo, hi) pairs per dtype and qmax and on
// every pair from F16's and BF16's top binades: none refused within
// +-MaxFinite, the worst extreme exactly one step away). A value beyond
// +-MaxFinite (only from F32 input, or BF16 input with F16 scales: BF16
// rounds 65504 to 65536) adds its excess, at most a step; step 3 refuses the
// rest (with F16 scales: above 65504 + s, about 65760 to 74856 depending on
// the scheme), which would decode to +-Inf in that dtype without the cap.
//
// Why step the scale down rather than keep the rounded-up scale and clamp
// the codes to those that stay finite: for a one-signed group ([0, 65504]
// in F16, the common case) the clamp loses a whole step at the top, whereas
// the smaller scale moves the top level by m * (s_up - s), m ulps of s (1/8
// step for F16 INT8); groups spanning +-MaxFinite cost about one step at one
// end either way. Stepping down also keeps the guarantee for every code the
// format holds, and keeps the kernels' code clamp a constant, so the SIMD
// paths change only in which groups they hand to these functions (see
// CapScaleBits).

static inline float ScaleBitsToFloat(uint32_t bits, DType dt) {
  switch (dt) {
    case DType::kF16:
      return HalfBitsToFloat(static_cast<uint16_t>(bits));
    case DType::kBF16:
      return Bf16BitsToFloat(static_cast<uint16_t>(bits));
    case DType::kF32:
      break;
  }
  return BitsFloat(bits);
}

// The largest value s of dt with m * s <= MaxFinite(dt), for 1 <= m <= 255.
// RoundScaleUp of the double quotient is at most one step above it (no
// double lies strictly between MaxFinite / m and its nearest double), and
// m * s is exact in double.
static inline void LargestScaleWithin(int m, DType dt, float* value,
                                      uint32_t* bits) {
  const double limit = static_cast<double>(MaxFinite(dt));
  float v = 0.0f;
  uint32_t b = 0;
  RoundScaleUp(limit / m, dt, &v, &b);  // finite: limit / m <= limit
  while (static_cast<double>(v) * m > limit) {
    --b;  // the next smaller positive value
    v = ScaleBitsToFloat(b, dt);
  }
  *value = v;
  *bits = b;
}

// Scale bits above which a group may be capped or refused by steps 2-3 (the
// bits of LargestScaleWithin(qmax): m <= qmax). The SIMD paths derive every
// group with their vector code (the plain round-up of step 1) and hand the
// lanes with larger bits, or an overflow, to DeriveSymmetric /
// DeriveAsymmetric, so that the cap is this scalar code alone; all other
// lanes are byte-identical to it by construction.
static inline uint32_t CapScaleBits(int qmax, DType dt) {
  float v;
  uint32_t b;
  LargestScaleWithin(qmax, dt, &v, &b);
  return b;
}

// Steps 2-3 for a symmetric group whose rounded-up scale breaks the cap
// (p holds it). Out of line and cold, like CapAsymmetric: ordinary groups
// never get here, and the kernels' per-group code stays small.
static inline __attribute__((noinline, cold)) bool CapSymmetric(
    float absmax, int qmax, DType scale_dtype, GroupParams* p) {
  LargestScaleWithin(qmax, scale_dtype, &p->scale, &p->scale_bits);
  // Step 3. A magnitude up to MaxFinite is always reached to within half a
  // step (see above); beyond it, by at most one more.
  if (static_cast<double>(absmax) >
      static_cast<double>(MaxFinite(scale_dtype)) +
          static_cast<double>(p->scale))
    return false;
  p->inv = 1.0f / p->scale;
  return true;
}

// Symmetric: scale = absmax / qmax rounded up, capped as above. False on
// scale overflow.
static inline bool DeriveSymmetric(float absmax, int qmax, DType scale_dtype,
                                   GroupParams* p) {
  p->zp = 0.0f;
  if (absmax == 0.0f) {
    p->scale = 0.0f;
    p->inv = 0.0f;
    p->scale_bits = 0;
    return true;
  }
  if (!RoundScaleUp(static_cast<double>(absmax) / qmax, scale_dtype, &p->scale,
                    &p->scale_bits))
    return false;
  if (static_cast<double>(p->scale) * qmax >
      static_cast<double>(MaxFinite(scale_dtype)))
    return CapSymmetric(absmax, qmax, scale_dtype, p);
  p->inv = 1.0f / p->scale;
  return true;
}

// |dequantized - x| of an asymmetric group's element x, with the kernels'
// float operations (round x * inv to nearest even, add zp, clamp to
// [0, qmax]); the dequantized value (q - zp) * s is exact in double.
static inline double AsymmetricError(float x, float zp, float s, float inv,
                                     int qmax) {
  float q = std::nearbyint(x * inv) + zp;
  q = q < 0.0f ? 0.0f : q;
  q = q > static_cast<float>(qmax) ? static_cast<float>(qmax) : q;
  return std::fabs(static_cast<double>(q - zp) * s - static_cast<double>(x));
}

// Steps 2-3 for an asymmetric group over [l, h] (l <= 0 <= h) whose
// rounded-up scale (in p) breaks the cap with its nearest zero point. Every
// zero point z is tried with the largest scale that fits it (the rounded-up
// one, or LargestScaleWithin(max(z, qmax - z))), and the one whose two
// extremes decode closest wins (the first on ties): the nearest zero point
// of the capped scale can cost the other end a whole step, which a
// neighbouring zero point (and its m) avoids. At most 256 tries, for groups
// whose range is about MaxFinite or more only.
static inline __attribute__((noinline, cold)) bool CapAsymmetric(
    double l, double h, int qmax, DType scale_dtype, GroupParams* p) {
  const double limit = static_cast<double>(MaxFinite(scale_dtype));
  const float up = p->scale;
  const uint32_t up_bits = p->scale_bits;
  // The extremes as the dtype can hold them at best (step 3).
  const float lo_x = static_cast<float>(l < -limit ? -limit : l);
  const float hi_x = static_cast<float>(h > limit ? limit : h);
  double best = std::numeric_limits<double>::infinity();
  for (int z = 0; z <= qmax; ++z) {
    const int mz = z > qmax - z ? z : qmax - z;
    float sz = up;
    uint32_t bz = up_bits;
    if (static_cast<double>(up) * mz > limit)
      LargestScaleWithin(mz, scale_dtype, &sz, &bz);
    const float inv = 1.0f / sz;
    const float zf = static_cast<float>(z);
    const double e0 = AsymmetricError(lo_x, zf, sz, inv, qmax);
    const double e1 = AsymmetricError(hi_x, zf, sz, inv, qmax);
    const double e = e0 > e1 ? e0 : e1;
    if (e < best) {
      best = e;
      p->scale = sz;
      p->scale_bits = bz;
      p->inv = inv;
      p->zp = zf;
    }
  }
  const double reach = limit + static_cast<double>(p->scale);
  return best <= static_cast<double>(p->scale) && -l <= reach && h <= reach;
}

// Asymmetric over [min(lo, 0), max(hi, 0)], capped as above. False on scale
// overflow.
static inline bool DeriveAsymmetric(float lo, float hi, int qmax,
                                    DType scale_dtype, GroupParams* p) {
  const double l = lo < 0.0f ? static_cast<double>(lo) : 0.0;
  const double h = hi > 0.0f ? static_cast<double>(hi) : 0.0;
  const double range = h - l;  // exact: two floats of opposite sign
  if (range == 0.0) {
    p->scale = 0.0f;
    p->inv = 0.0f;
    p->zp = 0.0f;
    p->scale_bits = 0;
    return true;
  }
  if (!RoundScaleUp(range / qmax, scale_dtype, &p->scale, &p->scale_bits))
    return false;
  p->inv = 1.0f / p->scale;
  float zp = std::nearbyint(static_cast<float>(-l) * p->inv);
  if (zp < 0.0f) zp = 0.0f;
  if (zp > static_cast<float>(qmax)) zp = static_cast<float>(qmax);
  // The largest |code - zp| is max(zp, qmax - zp).
  const float m = zp > qmax - zp ? zp : qmax - zp;
  if (static_cast<double>(p->scale) * m >
      static_cast<double>(MaxFinite(scale_dtype)))
    return CapAsymmetric(l, h, qmax, scale_dtype, p);
  p->zp = zp;
  return true;
}

static inline void StoreScale(void* scales, int64_t index, DType dt,
                              uint32_t bits) {
  if (dt == DType::kF32) {
    static_cast<uint32_t*>(scales)[index] = bits;
  } else {
    static_cast<uint16_t*>(scales)[index] = static_cast<uint16_t>(bits);
  }
}

static inline float LoadScale(const void* scales, int64_t index, DType dt) {
  switch (dt) {
    case DType::kF16:
      return HalfBitsToFloat(static_cast<const uint16_t*>(scales)[index]);
    case DType::kBF16:
      return Bf16BitsToFloat(static_cast<const uint16_t*>(scales)[index]);
    case DType::kF32: break;
  }
  return static_cast<const float*>(scales)[index];
}

// Metric lanes: column j of a row accumulates into float lane j % 16; every
// kFlushCols columns (and at the row's end) the float lanes are added into
// double lanes lane by lane and reset; at the row's end the double lanes are
// reduced by SumLanes. Every path must follow exactly this shape.
constexpr int kLanes = 16;
constexpr int64_t kFlushCols = 256;

static inline double SumLanes(const double* lanes) {
  double t[8];
  for (int i = 0; i < 8; ++i) t[i] = lanes[i] + lanes[i + 8];
  for (int i = 0; i < 4; ++i) t[i] = t[i] + t[i + 4];
  for (int i = 0; i < 2; ++i) t[i] = t[i] + t[i + 2];
  return t[0] + t[1];
}

static inline int QMax(int bits, bool symmetric) {
  if (bits == 8) return symmetric ? 127 : 255;
  return symmetric ? 7 : 15;
}

// ---------------------------------------------------------------------------
// GGML schemes (Q8_0, Q4_0, Q4_1; see nibble/scheme.h): ggml's reference
// quantizers, operation for operation, in float32. The scalar path calls
// these per group and per element; the SIMD paths derive 8 or 16 groups per
// vector with the same correctly rounded IEEE operations (division, 1/d,
// F16 conversion by nearest even) and compute the codes with the instruction
// sequences documented next to them, which give these functions' results.

constexpr int64_t kGgmlBlock = 32;

struct GgmlParams {
  float id;         // 1 / d in float, 0 when d is 0: multiplies x (x - lo)
  float lo;         // Q4_1: the block minimum, unrounded (0 otherwise)
  float scale;      // FP16(d) as float: what dequantization multiplies by
  float offset;     // Q4_1: FP16(lo) as float, what dequantization adds
  uint16_t d_bits;  // stored scale
  uint16_t m_bits;  // stored offset (Q4_1; 0 otherwise)
};

// From ggml's float d (and Q4_1's lo). False when FP16(d) or FP16(lo) is
// +-Inf (ggml would store it; nibble reports kScaleOverflow).
static inline bool FinishGgmlParams(float d, float lo, bool has_offset,
                                    GgmlParams* p) {
  p->id = d != 0.0f ? 1.0f / d : 0.0f;  // ggml: `d ? 1.0f/d : 0.0f`
  p->lo = lo;
  p->d_bits = FloatToHalfBits(d);
  p->m_bits = has_offset ? FloatToHalfBits(lo) : 0;
  p->scale = HalfBitsToFloat(p->d_bits);
  p->offset = HalfBitsToFloat(p->m_bits);
  return (p->d_bits & 0x7fffu) < 0x7c00u && (p->m_bits & 0x7fffu) < 0x7c00u;
}

// Q8_0: amax = max |x| over the block; ggml's `amax / ((1 << 7) - 1)`.
static inline bool DeriveGgmlQ8_0(float amax, GgmlParams* p) {
  return FinishGgmlParams(amax / 127.0f, 0.0f, false, p);
}
// Q4_0: max = the element of largest |x| (first on ties, +0.0 if all are
// zero); ggml's `max / -8`.
static inline bool DeriveGgmlQ4_0(float max, GgmlParams* p) {
  return FinishGgmlParams(max / -8.0f, 0.0f, false, p);
}
// Q4_1: lo, hi = min and max of the block; ggml's
// `(max - min) / ((1 << 4) - 1)` (hi - lo may overflow to Inf: F32 input
// only, and then FP16(d) overflows too).
static inline bool DeriveGgmlQ4_1(float lo, float hi, GgmlParams* p) {
  return FinishGgmlParams((hi - lo) / 15.0f, lo, true, p);
}

// CVTTSS2SI / CVTTPS2DQ: truncation toward zero; NaN and values outside the
// int32 range give INT32_MIN (the "integer indefinite"). ggml's
// `(int8_t)(float)` compiles to this and keeps the low byte.
static inline int32_t TruncToInt32(float v) {
  if (!(v >= -2147483648.0f && v < 2147483648.0f)) return INT32_MIN;
  return static_cast<int32_t>(v);
}

// ggml's `MIN(15, (int8_t)v)` for the values Q4_0 / Q4_1 produce: v is in
// [0.5, 16.5] (|x * id| <= 8 up to a few ulps; (x - lo) * id in [0, 15]) or
// not finite (id = Inf, from a d below 2^-128), whose low byte is 0. Written
// as clamp(trunc(v), 0, 15), which is that on this domain and exactly what
// the SIMD paths compute (min then max on CVTTPS2DQ's int32).
static inline int GgmlNibble(float v) {
  int32_t t = TruncToInt32(v);
  t = t < 15 ? t : 15;
  return t > 0 ? t : 0;
}

// Q8_0 code: roundf(x * id) (half away from zero), as an int8 value. x * id
// is within 127 * (1 + 2^-20) in magnitude, or not finite when id = Inf
// (code 0, the low byte of INT32_MIN).
static inline int GgmlCodeQ8_0(float x, float id) {
  const float v = x * id;
  if (!(std::fabs(v) <= std::numeric_limits<float>::max())) return 0;
  return static_cast<int>(std::roundf(v));
}

// Q4_0 code (nibble 0..15, level code - 8): x * id + 8.5f, two roundings
// (lib/ is built with -ffp-contract=off, and gguf-py's numpy never fuses).
static inline int GgmlCodeQ4_0(float x, float id) {
  return GgmlNibble(x * id + 8.5f);
}

// Q4_1 code (nibble 0..15): (x - lo) * id + 0.5f.
static inline int GgmlCodeQ4_1(float x, float lo, float id) {
  return GgmlNibble((x - lo) * id + 0.5f);
}

}  // namespace nibble::kernels

#endif  // NIBBLE_KERNELS_COMMON_H_
