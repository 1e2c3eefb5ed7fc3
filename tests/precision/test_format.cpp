// Scalar encode/decode of every format: exhaustive code round trips and ties-to-even at every midpoint.
// (The independent oracle, ml_dtypes, is checked from Python in tests/python/test_formats.py.)
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "precision/format.h"
#include "precision/format_names.h"

namespace nibble::precision {
namespace {

std::vector<Format> all_formats() {
  std::vector<Format> out = {formats::kE4M3, formats::kE5M2, formats::kE2M1, formats::kE3M2, formats::kE2M3,
                             formats::kE8M0, formats::kUE4M3, formats::kBF16, formats::kFP16};
  for (int e = 1; e <= 5; ++e)
    for (int m = 2; m <= 6; ++m) out.push_back(make_exmy(e, m));
  return out;
}

// Positive finite codes in increasing value order (codes are monotone in magnitude).
std::vector<uint32_t> positive_codes(const Format& fmt) {
  std::vector<uint32_t> codes;
  for (uint32_t c = 0; c <= fmt.max_finite_code(); ++c) codes.push_back(c);
  return codes;
}

TEST(Format, NamedFormatsHaveTheDocumentedRange) {
  EXPECT_EQ(max_finite(formats::kE4M3), 448.0f);
  EXPECT_EQ(max_finite(formats::kE5M2), 57344.0f);
  EXPECT_EQ(max_finite(formats::kE2M1), 6.0f);
  EXPECT_EQ(max_finite(formats::kE3M2), 28.0f);
  EXPECT_EQ(max_finite(formats::kE2M3), 7.5f);
  EXPECT_EQ(max_finite(formats::kE8M0), std::ldexp(1.0f, 127));
  EXPECT_EQ(max_finite(formats::kUE4M3), 448.0f);
  EXPECT_EQ(decode_scalar(1, formats::kE4M3), std::ldexp(1.0f, -9));
  EXPECT_EQ(decode_scalar(1, formats::kE5M2), std::ldexp(1.0f, -16));
  EXPECT_EQ(decode_scalar(1, formats::kE2M1), 0.5f);
  EXPECT_EQ(decode_scalar(1, formats::kE3M2), 0.0625f);
  EXPECT_EQ(decode_scalar(1, formats::kE2M3), 0.125f);
  EXPECT_EQ(decode_scalar(0, formats::kE8M0), std::ldexp(1.0f, -127));
  EXPECT_TRUE(std::isnan(decode_scalar(0xFF, formats::kE8M0)));
  EXPECT_TRUE(std::isnan(decode_scalar(0x7F, formats::kE4M3)));
  EXPECT_TRUE(std::isinf(decode_scalar(0x7C, formats::kE5M2)));
  EXPECT_EQ(decode_scalar(8, formats::kE2M1), -0.0f);
  EXPECT_TRUE(std::signbit(decode_scalar(8, formats::kE2M1)));
  const float fp4[8] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6};
  for (uint32_t c = 0; c < 8; ++c) {
    EXPECT_EQ(decode_scalar(c, formats::kE2M1), fp4[c]);
    EXPECT_EQ(decode_scalar(c | 8u, formats::kE2M1), -fp4[c]);
  }
}

TEST(Format, EveryCodeRoundTripsUnderEveryRounding) {
  for (const Format& fmt : all_formats()) {
    const uint32_t total = 1u << fmt.bits();
    for (uint32_t code = 0; code < total; ++code) {
      if (fmt.is_nan_code(code) || fmt.is_inf_code(code)) continue;
      const float v = decode_scalar(code, fmt);
      for (Rounding r : {Rounding::kNearestEven, Rounding::kTowardZero, Rounding::kStochastic}) {
        for (uint32_t bits : {0u, 0x55u, 0xFFu}) {
          ASSERT_EQ(encode_scalar(v, fmt, r, RandomBits{bits, 8}), code)
              << format_name(fmt) << " code " << code << " value " << v;
        }
      }
    }
  }
}

TEST(Format, MidpointsTieToEvenAndNeighboursRoundToNearest) {
  for (const Format& fmt : all_formats()) {
    const std::vector<uint32_t> codes = positive_codes(fmt);
    for (size_t i = 0; i + 1 < codes.size(); ++i) {
      const double lo = decode_scalar(codes[i], fmt), hi = decode_scalar(codes[i + 1], fmt);
      const double mid = 0.5 * (lo + hi);
      const float midf = static_cast<float>(mid);
      if (static_cast<double>(midf) != mid) continue;  // not representable in FP32 (never for these formats)
      const uint32_t even = (codes[i] % 2 == 0) ? codes[i] : codes[i + 1];
      ASSERT_EQ(encode_scalar(midf, fmt, Rounding::kNearestEven), even) << format_name(fmt) << " mid " << mid;
      if (fmt.is_signed) {
        ASSERT_EQ(encode_scalar(-midf, fmt, Rounding::kNearestEven), even | fmt.sign_bit()) << format_name(fmt);
      }
      const float below = std::nextafter(midf, 0.0f), above = std::nextafter(midf, INFINITY);
      ASSERT_EQ(encode_scalar(below, fmt, Rounding::kNearestEven), codes[i]) << format_name(fmt) << " " << below;
      ASSERT_EQ(encode_scalar(above, fmt, Rounding::kNearestEven), codes[i + 1]) << format_name(fmt) << " " << above;
      ASSERT_EQ(encode_scalar(above, fmt, Rounding::kTowardZero), codes[i]) << format_name(fmt);
    }
  }
}

TEST(Format, SatfiniteClampsOverflowAndInfinity) {
  for (const Format& fmt : all_formats()) {
    const float big = max_finite(fmt) * 1.75f;
    EXPECT_EQ(encode_scalar(big, fmt, Rounding::kNearestEven), fmt.max_finite_code()) << format_name(fmt);
    EXPECT_EQ(encode_scalar(INFINITY, fmt, Rounding::kNearestEven), fmt.max_finite_code()) << format_name(fmt);
    EXPECT_EQ(encode_scalar(INFINITY, fmt, Rounding::kStochastic, {0xFF, 8}), fmt.max_finite_code());
    if (fmt.is_signed) {
      EXPECT_EQ(encode_scalar(-INFINITY, fmt, Rounding::kNearestEven), fmt.max_finite_code() | fmt.sign_bit());
    }
  }
}

TEST(Format, NanAndSignedZero) {
  EXPECT_EQ(encode_scalar(NAN, formats::kE4M3, Rounding::kNearestEven), 0x7Fu);
  EXPECT_EQ(encode_scalar(NAN, formats::kE5M2, Rounding::kNearestEven), 0x7Eu);
  EXPECT_EQ(encode_scalar(NAN, formats::kE8M0, Rounding::kNearestEven), 0xFFu);
  EXPECT_EQ(encode_scalar(-0.0f, formats::kE2M1, Rounding::kNearestEven), 8u);
  EXPECT_EQ(encode_scalar(-0.0f, formats::kE4M3, Rounding::kNearestEven), 0x80u);
  EXPECT_EQ(encode_scalar(-1.0f, formats::kUE4M3, Rounding::kNearestEven), 0x7Fu);  // unsigned: NaN
}

TEST(Format, StochasticRoundingUsesTheRandomBitsBelowTheKeptMantissa) {
  // 1.25 lies halfway between E2M1's 1.0 (code 2) and 1.5 (code 3): with 8 random bits it rounds up for
  // bits >= 128, i.e. exactly half of the 256 outcomes.
  int ups = 0;
  for (uint32_t b = 0; b < 256; ++b) ups += encode_scalar(1.25f, formats::kE2M1, Rounding::kStochastic, {b, 8}) == 3;
  EXPECT_EQ(ups, 128);
  // 1.125 is a quarter of the way: 64 of 256.
  ups = 0;
  for (uint32_t b = 0; b < 256; ++b) ups += encode_scalar(1.125f, formats::kE2M1, Rounding::kStochastic, {b, 8}) == 3;
  EXPECT_EQ(ups, 64);
  // Subnormal E4M3: 1.5 * 2^-9 between 2^-9 (code 1) and 2^-8 (code 2).
  ups = 0;
  for (uint32_t b = 0; b < 256; ++b)
    ups += encode_scalar(std::ldexp(1.5f, -9), formats::kE4M3, Rounding::kStochastic, {b, 8}) == 2;
  EXPECT_EQ(ups, 128);
}

TEST(FormatNames, ParsesNamedAndResearchFormats) {
  EXPECT_EQ(parse_format("e4m3"), formats::kE4M3);
  EXPECT_EQ(parse_format("E5M2"), formats::kE5M2);
  EXPECT_EQ(parse_format("e2m1"), formats::kE2M1);
  EXPECT_EQ(parse_format("ue4m3"), formats::kUE4M3);
  EXPECT_EQ(parse_format("e3m4_ieee").special, Special::kIEEE);
  const Format e5m6 = parse_format("e5m6");
  EXPECT_EQ(e5m6.bits(), 12);
  EXPECT_EQ(e5m6.bias, 15);
  EXPECT_EQ(format_name(parse_format("e1m2")), "e1m2");
  for (const char* bad : {"", "e9m1", "e4", "fp7", "e4m3x", "e5m11", "e1m0_ieee"})
    EXPECT_THROW(parse_format(bad), std::exception) << bad;
}

}  // namespace
}  // namespace nibble::precision
