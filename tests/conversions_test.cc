// Scalar dtype conversions (nibble/types.h) against the hardware and against
// independent references: FloatToHalf vs F16C's VCVTPS2PH (imm8 = 0),
// HalfToFloat over all 65536 patterns, FloatToBf16 round-to-nearest-even.
#include <gtest/gtest.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define NIBBLE_TEST_X86 1
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "nibble/nibble.h"
#include "test_util.h"

namespace nibble::test {
namespace {

uint32_t Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float FromBits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%08x", v);
  return buf;
}

bool HasF16c() {
#ifdef NIBBLE_TEST_X86
  __builtin_cpu_init();
  return __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

#ifdef NIBBLE_TEST_X86
// The hardware conversions, compiled for F16C only here and called only when
// the CPU has it.
__attribute__((target("f16c"))) void HwFloatToHalf(const float* in,
                                                   uint16_t* out, size_t n) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m128i h = _mm_cvtps_ph(_mm_loadu_ps(in + i), 0);  // imm8 0: RNE
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + i), h);
  }
  for (; i < n; ++i) {
    const __m128i h = _mm_cvtps_ph(_mm_set_ss(in[i]), 0);
    out[i] = static_cast<uint16_t>(_mm_extract_epi16(h, 0));
  }
}

__attribute__((target("f16c"))) float HwHalfToFloat(uint16_t h) {
  return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h)));
}
#endif

// Compares FloatToHalf with the hardware on `inputs`; reports the first few
// mismatches.
void ExpectMatchesF16c(const std::vector<float>& inputs) {
#ifdef NIBBLE_TEST_X86
  std::vector<uint16_t> hw(inputs.size());
  HwFloatToHalf(inputs.data(), hw.data(), inputs.size());
  int reported = 0;
  for (size_t i = 0; i < inputs.size() && reported < 5; ++i) {
    const uint16_t mine = FloatToHalf(inputs[i]);
    if (mine != hw[i]) {
      ADD_FAILURE() << "FloatToHalf(" << Hex(Bits(inputs[i])) << " = "
                    << inputs[i] << ") = " << Hex(mine) << ", F16C gives "
                    << Hex(hw[i]);
      ++reported;
    }
  }
#else
  (void)inputs;
#endif
}

TEST(FloatToHalfTest, MatchesF16cOnRandomBitPatterns) {
  if (!HasF16c()) GTEST_SKIP() << "this CPU has no F16C";
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  std::vector<float> in(1 << 22);
  for (auto& f : in) f = FromBits(static_cast<uint32_t>(rng()));
  ExpectMatchesF16c(in);
  // Random values in the half range, where most of the rounding happens.
  std::uniform_int_distribution<uint32_t> near(0x33000000u, 0x47800000u);
  for (auto& f : in) f = FromBits(near(rng) | (rng() & 1 ? 0x80000000u : 0u));
  ExpectMatchesF16c(in);
}

TEST(FloatToHalfTest, MatchesF16cOnBoundaryClasses) {
  if (!HasF16c()) GTEST_SKIP() << "this CPU has no F16C";
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  std::vector<float> in;
  // Every exponent, both signs, mantissas around every rounding position:
  // 2^p - 1, 2^p, 2^p + 1 and the same with the bit above set (the kept bit
  // odd), which covers the normal (13 dropped bits) and every subnormal
  // (14..24 dropped bits) tie, plus random mantissas.
  for (uint32_t sign : {0u, 0x80000000u}) {
    for (uint32_t e = 0; e < 256; ++e) {
      std::vector<uint32_t> mant = {0,        0x7fffff, 0x400000,
                                    0x000fff, 0x001000, 0x001001,
                                    0x002fff, 0x003000, 0x003001};
      for (int p = 0; p < 23; ++p) {
        const uint32_t b = 1u << p;
        for (uint32_t m : {b - 1, b, b + 1, (b << 1) | b, ((b << 1) | b) - 1,
                           ((b << 1) | b) + 1})
          mant.push_back(m & 0x7fffffu);
      }
      for (int k = 0; k < 64; ++k)
        mant.push_back(static_cast<uint32_t>(rng()) & 0x7fffffu);
      for (uint32_t m : mant) in.push_back(FromBits(sign | (e << 23) | m));
    }
  }
  // Named edges.
  for (uint32_t bits : {
           0x477fe000u,  // 65504, the largest half
           0x477fefffu,  // just below the 65504/65520 midpoint: 65504
           0x477ff000u,  // 65520, the midpoint: rounds to Inf (even)
           0x477ff001u,  // above: Inf
           0x47800000u,  // 65536
           0x33800000u,  // 2^-24, the smallest subnormal
           0x33000000u,  // 2^-25: tie between 0 and 2^-24 -> 0
           0x33000001u,  // just above: 2^-24
           0x33c00000u,  // 1.5 * 2^-24: tie between 1 and 2 -> 2
           0x34200000u,  // 2.5 * 2^-24: tie between 2 and 3 -> 2
           0x38800000u,  // 2^-14, the smallest normal half
           0x387fc000u,  // 2^-14 - 2^-25: tie between largest subnormal and
                         // 2^-14
           0x387fe000u,  // rounds up into the normal range
           0x3f801000u,  // 1 + 2^-11: tie -> 1
           0x3f803000u,  // 1 + 3 * 2^-11: tie -> 1 + 2^-9 (even)
           0x7f800000u,  // +Inf
           0xff800000u,  // -Inf
           0x7fc00000u,  // quiet NaN
           0x7f800001u,  // signalling NaN, lowest payload
           0x7fa00000u,  // signalling NaN, payload in the kept bits
           0x7fbfffffu,  // signalling NaN, all payload bits
           0xffc00001u,  // negative quiet NaN
           0x7fffffffu,
       })
    in.push_back(FromBits(bits));
  ExpectMatchesF16c(in);
  // Spot checks that do not depend on the hardware.
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(FromBits(0x477ff000u)), 0x7c00);
  EXPECT_EQ(FloatToHalf(FromBits(0x477fefffu)), 0x7bff);
  EXPECT_EQ(FloatToHalf(FromBits(0x33000000u)), 0x0000);
  EXPECT_EQ(FloatToHalf(FromBits(0x33c00000u)), 0x0002);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
}

TEST(HalfToFloatTest, AllPatterns) {
  const bool hw = HasF16c();
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    const float f = HalfToFloat(b);
    const uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    const bool nan = exp == 31 && man != 0;
    SCOPED_TRACE(Hex(h));
    if (nan) {
      ASSERT_TRUE(std::isnan(f));
      ASSERT_EQ(Bits(f) >> 31, h >> 15) << "NaN sign";
      // Round trip quiets a signalling NaN and keeps the payload.
      ASSERT_EQ(FloatToHalf(f), b | 0x0200);
    } else {
      // Independent value: man * 2^-24 (subnormal) or (1024 + man) * 2^(e-25).
      double want = exp == 0 ? std::ldexp(static_cast<double>(man), -24)
                    : exp == 31
                        ? HUGE_VAL
                        : std::ldexp(1024.0 + man, static_cast<int>(exp) - 25);
      if (h >> 15) want = -want;
      ASSERT_EQ(static_cast<double>(f), want);
      ASSERT_EQ(Bits(f) >> 31, h >> 15) << "sign (incl. -0)";
      ASSERT_EQ(FloatToHalf(f), b) << "round trip";
    }
#ifdef NIBBLE_TEST_X86
    if (hw) {
      const float g = HwHalfToFloat(b);
      if (nan) {
        ASSERT_TRUE(std::isnan(g));
      } else {
        ASSERT_EQ(Bits(f), Bits(g)) << "differs from F16C VCVTPH2PS";
      }
    }
#endif
  }
}

// Independent BF16 reference: the two neighbouring BF16 values of |f|,
// distances compared in double (exact), ties to the even pattern.
uint16_t ReferenceBf16(float f) {
  const uint32_t x = Bits(f);
  if (std::isnan(f)) return static_cast<uint16_t>((x >> 16) | 0x40);
  const uint32_t sign = x & 0x80000000u;
  const uint32_t mag = x & 0x7fffffffu;
  const uint32_t t = mag >> 16;  // truncated toward zero
  const double a = FromBits(mag);
  const double lo = FromBits(t << 16);
  // The value above the largest finite BF16 (0x7f7f) rounds like 2^128.
  const double hi =
      t + 1 >= 0x7f80u ? std::ldexp(1.0, 128) : FromBits((t + 1) << 16);
  uint32_t r;
  if (mag >= 0x7f800000u) {
    r = t;  // Inf
  } else if (a - lo < hi - a) {
    r = t;
  } else if (a - lo > hi - a) {
    r = t + 1;
  } else {
    r = (t & 1) ? t + 1 : t;
  }
  return static_cast<uint16_t>((sign >> 16) | r);
}

TEST(FloatToBf16Test, RoundsToNearestEven) {
  struct Case {
    uint32_t in;
    uint16_t out;
  };
  const Case cases[] = {
      {0x3f808000u, 0x3f80},  // tie, kept bit even: down
      {0x3f818000u, 0x3f82},  // tie, kept bit odd: up
      {0x3f808001u, 0x3f81},  // above the tie
      {0x3f807fffu, 0x3f80},  // below the tie
      {0xbf818000u, 0xbf82},  // negative tie, odd: away from zero
      {0xbf808000u, 0xbf80},  // negative tie, even
      {0x7f7f8000u, 0x7f80},  // tie at the top, odd: overflows to Inf
      {0x7f7f7fffu, 0x7f7f},  // largest that stays finite
      {0x00008000u, 0x0000},  // subnormal tie to even zero
      {0x00018000u, 0x0002},  // subnormal tie, odd: up
      {0x007f8000u, 0x0080},  // largest subnormal tie rounds into the normals
      {0x7f800000u, 0x7f80},  // +Inf
      {0xff800000u, 0xff80},  // -Inf
      {0x80000000u, 0x8000},  // -0
      {0x7fc00000u, 0x7fc0},  // quiet NaN
      {0x7f800001u, 0x7fc0},  // signalling NaN: quieted
      {0xff812345u,
       0xffc1},  // negative signalling NaN: quieted, top payload kept
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FloatToBf16(FromBits(c.in)), c.out) << Hex(c.in);
    EXPECT_EQ(ReferenceBf16(FromBits(c.in)), c.out)
        << "reference " << Hex(c.in);
  }
  for (uint32_t b = 0; b < 0x10000u; ++b)
    ASSERT_EQ(Bits(Bf16ToFloat(static_cast<uint16_t>(b))), b << 16);
}

TEST(FloatToBf16Test, MatchesReferenceOnRandomAndTiePatterns) {
  NIBBLE_TRACE_SEED();
  Rng rng = MakeRng();
  int failures = 0;
  for (int i = 0; i < (1 << 21) && failures < 5; ++i) {
    uint32_t x = static_cast<uint32_t>(rng());
    // Every other value: force the dropped half to an exact tie or +-1.
    if (i & 1)
      x = (x & 0xffff0000u) | (0x8000u + static_cast<uint32_t>(i % 3) - 1u);
    const float f = FromBits(x);
    const uint16_t got = FloatToBf16(f), want = ReferenceBf16(f);
    if (got != want) {
      ADD_FAILURE() << "FloatToBf16(" << Hex(x) << ") = " << Hex(got)
                    << ", reference " << Hex(want);
      ++failures;
    }
  }
}

}  // namespace
}  // namespace nibble::test
