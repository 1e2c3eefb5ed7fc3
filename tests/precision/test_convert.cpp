// Bulk CPU conversion: equals the scalar rule element by element, packs FP4 low nibble first, gives the
// same stochastic codes for any thread count and any split of the tensor, and reports bad input clearly.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "precision/convert.h"
#include "precision/error.h"
#include "precision/stochastic.h"

namespace nibble::precision {
namespace {

std::vector<float> random_values(size_t n, float spread, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> log_mag(-spread, spread);
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = std::exp2(log_mag(rng)) * ((rng() & 1) ? 1.0f : -1.0f);
  return x;
}

uint32_t code_at(const std::vector<uint8_t>& codes, const Format& fmt, size_t i) {
  if (fmt.bits() <= 4) return (codes[i / 2] >> ((i % 2) * 4)) & 0xFu;
  if (fmt.bits() <= 8) return codes[i];
  return codes[2 * i] | (static_cast<uint32_t>(codes[2 * i + 1]) << 8);
}

class BulkEncode : public ::testing::TestWithParam<Format> {};

TEST_P(BulkEncode, MatchesTheScalarRuleForEveryRounding) {
  const Format fmt = GetParam();
  const size_t n = 100003;  // several chunks and an odd tail
  const std::vector<float> x = random_values(n, 20.0f, 7);
  for (Rounding rounding : {Rounding::kNearestEven, Rounding::kStochastic, Rounding::kTowardZero}) {
    EncodeOptions opt;
    opt.rounding = rounding;
    opt.seed = 1234;
    opt.offset = 5;
    opt.scale = 0.75f;
    std::vector<uint8_t> codes(encoded_bytes(fmt, n));
    encode_f32(x.data(), n, fmt, opt, codes.data());
    const int r = default_random_bit_count(fmt);
    for (size_t i = 0; i < n; ++i) {
      const RandomBits bits{stochastic_bits(opt.seed, opt.offset, i, r), r};
      ASSERT_EQ(code_at(codes, fmt, i), encode_scalar(x[i] * opt.scale, fmt, rounding, bits)) << "element " << i;
    }
    std::vector<float> back(n);
    decode_to_f32(codes.data(), n, fmt, back.data());
    for (size_t i = 0; i < n; i += 97) ASSERT_EQ(back[i], decode_scalar(code_at(codes, fmt, i), fmt));
  }
}

TEST_P(BulkEncode, Bf16InputEqualsItsFloat32Value) {
  const Format fmt = GetParam();
  const size_t n = 20000;
  const std::vector<float> x = random_values(n, 30.0f, 3);
  std::vector<uint16_t> xb(n);
  std::vector<float> xf(n);
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, &x[i], 4);
    xb[i] = static_cast<uint16_t>(u >> 16);
    u = static_cast<uint32_t>(xb[i]) << 16;
    std::memcpy(&xf[i], &u, 4);
  }
  EncodeOptions opt;
  opt.rounding = Rounding::kStochastic;
  std::vector<uint8_t> a(encoded_bytes(fmt, n)), b(encoded_bytes(fmt, n));
  encode_bf16(xb.data(), n, fmt, opt, a.data());
  encode_f32(xf.data(), n, fmt, opt, b.data());
  EXPECT_EQ(a, b);
}

INSTANTIATE_TEST_SUITE_P(Formats, BulkEncode,
                         ::testing::Values(formats::kE4M3, formats::kE5M2, formats::kE2M1, formats::kE3M2,
                                           formats::kE2M3, formats::kBF16, make_exmy(5, 6), make_exmy(1, 2)));

TEST(BulkEncodeStochastic, SameCodesForAnyThreadCountAndAnySplit) {
  const size_t n = 1 << 18;
  const std::vector<float> x = random_values(n, 4.0f, 11);
  EncodeOptions opt;
  opt.rounding = Rounding::kStochastic;
  opt.seed = 99;
  for (const Format fmt : {formats::kE2M1, formats::kE4M3, formats::kBF16}) {
    std::vector<uint8_t> one(encoded_bytes(fmt, n)), two(encoded_bytes(fmt, n)), split(encoded_bytes(fmt, n));
    set_num_threads(1);
    encode_f32(x.data(), n, fmt, opt, one.data());
    set_num_threads(2);
    encode_f32(x.data(), n, fmt, opt, two.data());
    EXPECT_EQ(one, two);
    // Converting [0, cut) and [cut, n) separately, passing index_base, reproduces the whole (cut even, so
    // FP4 bytes do not straddle the halves; cut is deliberately not a multiple of the Philox group).
    const size_t cut = 12346;
    const size_t cut_bytes = encoded_bytes(fmt, cut);
    encode_f32(x.data(), cut, fmt, opt, split.data(), 0);
    encode_f32(x.data() + cut, n - cut, fmt, opt, split.data() + cut_bytes, cut);
    EXPECT_EQ(one, split);
  }
  set_num_threads(0);
}

TEST(BulkEncodeStochastic, SeedAndOffsetChangeTheDraws) {
  const size_t n = 4096;
  std::vector<float> x(n, 1.25f);  // halfway between two E2M1 codes: each draw is a fair coin
  EncodeOptions opt;
  opt.rounding = Rounding::kStochastic;
  std::vector<uint8_t> a(n / 2), b(n / 2), c(n / 2);
  encode_f32(x.data(), n, formats::kE2M1, opt, a.data());
  opt.seed = 1;
  encode_f32(x.data(), n, formats::kE2M1, opt, b.data());
  opt.seed = 0;
  opt.offset = 1;
  encode_f32(x.data(), n, formats::kE2M1, opt, c.data());
  EXPECT_NE(a, b);
  EXPECT_NE(a, c);
  size_t ups = 0;
  for (size_t i = 0; i < n; ++i) ups += code_at(a, formats::kE2M1, i) == 3;
  // Binomial(4096, 1/2): 4 sigma = 128.
  EXPECT_NEAR(static_cast<double>(ups), n / 2.0, 128.0);
}

TEST(BulkEncode, PacksFp4LowNibbleFirstAndZeroesAnOddTail) {
  const std::vector<float> x = {0.5f, -6.0f, 3.0f};
  std::vector<uint8_t> codes(2, 0xAA);
  encode_f32(x.data(), x.size(), formats::kE2M1, EncodeOptions{}, codes.data());
  EXPECT_EQ(codes[0], 0xF1);
  EXPECT_EQ(codes[1], 0x05);
}

TEST(BulkEncode, NanIsAnErrorNamingTheElementUnlessPropagated) {
  std::vector<float> x(50000, 1.0f);
  x[31337] = NAN;
  std::vector<uint8_t> codes(x.size());
  try {
    encode_f32(x.data(), x.size(), formats::kE4M3, EncodeOptions{}, codes.data());
    FAIL() << "NaN accepted";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find("element 31337"), std::string::npos) << e.what();
  }
  EncodeOptions propagate;
  propagate.nan = NanPolicy::kPropagate;
  encode_f32(x.data(), x.size(), formats::kE4M3, propagate, codes.data());
  EXPECT_EQ(codes[31337], 0x7F);
  EXPECT_THROW(encode_f32(x.data(), x.size(), formats::kE2M1, propagate, codes.data()), InvalidArgument);
}

TEST(BulkEncode, NegativeInputToAnUnsignedFormatIsAnError) {
  const std::vector<float> x = {1.0f, 2.0f, -3.0f, -0.0f};
  std::vector<uint8_t> codes(x.size());
  EXPECT_THROW(encode_f32(x.data(), x.size(), formats::kUE4M3, EncodeOptions{}, codes.data()), InvalidArgument);
  EXPECT_THROW(encode_f32(x.data(), x.size(), formats::kE8M0, EncodeOptions{}, codes.data()), InvalidArgument);
  const std::vector<float> ok = {1.0f, -0.0f};
  EXPECT_NO_THROW(encode_f32(ok.data(), ok.size(), formats::kUE4M3, EncodeOptions{}, codes.data()));
}

TEST(BulkEncode, RejectsBadScaleAndRandomBitCount) {
  const std::vector<float> x = {1.0f, 2.0f};
  std::vector<uint8_t> codes(2);
  EncodeOptions opt;
  opt.scale = 0.0f;
  EXPECT_THROW(encode_f32(x.data(), 2, formats::kE4M3, opt, codes.data()), InvalidArgument);
  opt.scale = INFINITY;
  EXPECT_THROW(encode_f32(x.data(), 2, formats::kE4M3, opt, codes.data()), InvalidArgument);
  opt = EncodeOptions{};
  opt.rounding = Rounding::kStochastic;
  opt.random_bits = 17;
  EXPECT_THROW(encode_f32(x.data(), 2, formats::kE4M3, opt, codes.data()), InvalidArgument);
}

}  // namespace
}  // namespace nibble::precision
