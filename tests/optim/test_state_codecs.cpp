// State codecs: the portable math they rest on, DRE (COAT) group rules and round trips including the
// guarded edge groups, the bitsandbytes-style dynamic map, and the LR schedules.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <random>
#include <utility>
#include <vector>

#include "optim/dre.h"
#include "optim/dynamic_map.h"
#include "optim/lr_schedule.h"
#include "optim/portable_math.h"
#include "optim/state_codec.h"
#include "precision/error.h"

namespace nibble::optim {
namespace {

float e4m3(uint32_t code) {
  return precision::decode_scalar(code, precision::formats::kE4M3);
}

// Encodes one group with DRE and decodes it again.
std::vector<float> dre_round_trip(const std::vector<float>& x, DreGroup* out_grp = nullptr, bool clamp = false) {
  float max_abs = 0, min_nonzero = FLT_MAX;
  for (float v : x) {
    max_abs = std::max(max_abs, std::fabs(v));
    if (v != 0) min_nonzero = std::min(min_nonzero, std::fabs(v));
  }
  const DreGroup grp = dre_group(max_abs, min_nonzero, clamp);
  if (out_grp) *out_grp = grp;
  std::vector<float> y;
  for (float v : x) y.push_back(dre_decode(e4m3(dre_encode(v, grp)), grp));
  return y;
}

TEST(PortableMath, Log2AndExp2AreAccurateToAFewUlp) {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-120.0f, 120.0f);
  double worst_log = 0, worst_exp = 0;
  for (int i = 0; i < 200000; ++i) {
    const float t = u(rng);
    const float x = std::exp2(t);
    const double exact_log = std::log2(static_cast<double>(x));
    if (exact_log != 0) worst_log = std::max(worst_log, std::fabs(log2_portable(x) - exact_log) / std::fabs(exact_log));
    const double exact_exp = std::exp2(static_cast<double>(t));
    worst_exp = std::max(worst_exp, std::fabs(exp2_portable(t) - exact_exp) / exact_exp);
  }
  EXPECT_LT(worst_log, 3e-7);
  EXPECT_LT(worst_exp, 3e-7);
  // Near 1 the *relative* error of log2 stays small (DRE raises |x|/g ~ 1 to large k).
  for (float x : {1.0f + 1e-6f, 1.0f - 1e-6f, 1.0001f, 0.9999f, 1.1f})
    EXPECT_NEAR(log2_portable(x) / std::log2(static_cast<double>(x)), 1.0, 1e-6) << x;
  EXPECT_EQ(log2_portable(1.0f), 0.0f);
  EXPECT_EQ(exp2_portable(0.0f), 1.0f);
  EXPECT_EQ(exp2_portable(-300.0f), 0.0f);
  EXPECT_NEAR(log2_portable(1e-40f) / std::log2(1e-40), 1.0, 3e-7);    // FP32 subnormal input
  EXPECT_NEAR(exp2_portable(-140.0f) / std::exp2(-140.0), 1.0, 1e-4);  // subnormal output
}

TEST(PortableMath, CosPiMatchesLibm) {
  for (int i = 0; i <= 1000; ++i) {
    const double x = i / 1000.0;
    EXPECT_NEAR(cos_pi_portable(x), std::cos(M_PI * x), 1e-15) << x;
  }
}

TEST(Dre, GroupRuleFollowsNumerics) {
  // max = 1, min = 2^-10: ratio 2^10, k = floor(16 * 16.6147 / 10) / 16 = 26/16, g = 2^-5.
  const DreGroup grp = dre_group(1.0f, std::ldexp(1.0f, -10), false);
  EXPECT_FLOAT_EQ(grp.centre, std::ldexp(1.0f, -5));
  EXPECT_EQ(grp.expansion, std::floor(16 * std::log2(100352.0) / 10) / 16);
  EXPECT_NEAR(grp.scale, std::pow(1024.0, grp.expansion / 2) / 448, 1e-6 * grp.scale);
  // The group maximum encodes to 448 (up to rounding of the expansion).
  EXPECT_NEAR(e4m3(dre_encode(1.0f, grp)), 448.0f, 1e-3f);
  EXPECT_NEAR(e4m3(dre_encode(-1.0f, grp)), -448.0f, 1e-3f);
  // A group wider than R = 448^2/2 is compressed (k < 1) unless clamped.
  EXPECT_LT(dre_group(1.0f, 1e-12f, false).expansion, 1.0f);
  EXPECT_EQ(dre_group(1.0f, 1e-12f, true).expansion, 1.0f);
  // k is always on the 1/16 grid.
  for (float mn : {0.5f, 1e-2f, 1e-5f, 1e-9f, 1e-20f}) {
    const float k = dre_group(1.0f, mn, false).expansion;
    EXPECT_EQ(k * 16, std::floor(k * 16)) << mn;
  }
}

// Relative errors of one group through DRE and through plain absmax FP8: (mean, max).
std::pair<double, double> dre_errors(const std::vector<float>& x) {
  const std::vector<float> y = dre_round_trip(x);
  double mean = 0, worst = 0;
  for (size_t j = 0; j < x.size(); ++j) {
    const double e = std::fabs(y[j] - x[j]) / std::fabs(x[j]);
    mean += e / x.size();
    worst = std::max(worst, e);
  }
  return {mean, worst};
}
std::pair<double, double> plain_errors(const std::vector<float>& x) {
  float max_abs = 0;
  for (float v : x) max_abs = std::max(max_abs, std::fabs(v));
  const float s = plain_fp8_scale(max_abs);
  double mean = 0, worst = 0;
  for (float v : x) {
    const double e = std::fabs(plain_fp8_decode(e4m3(plain_fp8_encode(v, s)), s) - v) / std::fabs(v);
    mean += e / x.size();
    worst = std::max(worst, e);
  }
  return {mean, worst};
}

// A log-uniform group over `decades` decades below 1e-3, alternating signs, both ends present.
std::vector<float> log_uniform_group(double decades, std::mt19937& rng) {
  std::uniform_real_distribution<double> u(-decades, 0.0);
  std::vector<float> x(kDreGroupSize);
  for (size_t j = 0; j < x.size(); ++j) x[j] = static_cast<float>(std::pow(10.0, u(rng)) * (j % 2 ? 1e-3 : -1e-3));
  x[0] = 1e-3f;
  x[1] = static_cast<float>(-1e-3 * std::pow(10.0, -decades));
  return x;
}

TEST(Dre, NarrowGroupsAreExpandedAndDecodeMoreAccurately) {
  // k > 1 divides E4M3's relative error by k over the bulk of the group.
  std::mt19937 rng(3);
  for (double decades : {1.0, 2.0}) {
    const std::vector<float> x = log_uniform_group(decades, rng);
    DreGroup grp;
    dre_round_trip(x, &grp);
    EXPECT_GT(grp.expansion, 2.0f) << decades;
    EXPECT_LT(dre_errors(x).first, 0.7 * plain_errors(x).first) << decades;
  }
}

TEST(Dre, WideGroupsKeepEveryElementWherePlainFp8FlushesToZero) {
  // Past 448 / 2^-10 ~ 4.6e5 plain absmax FP8 rounds the small end to 0 (a v element of 0 turns
  // m / (sqrt(v) + eps) into m / eps); DRE compresses (k < 1) and keeps every element.
  std::mt19937 rng(4);
  for (double decades : {6.0, 8.0, 10.0}) {
    const std::vector<float> x = log_uniform_group(decades, rng);
    DreGroup grp;
    const std::vector<float> y = dre_round_trip(x, &grp);
    EXPECT_LT(grp.expansion, 1.0f) << decades;
    for (size_t j = 0; j < x.size(); ++j) EXPECT_NE(y[j], 0.0f) << decades << " " << j;
    EXPECT_EQ(plain_errors(x).second, 1.0) << decades;  // some element decoded to 0
    EXPECT_LT(dre_errors(x).second, 0.5) << decades;
    EXPECT_LT(dre_errors(x).first, plain_errors(x).first) << decades;
  }
}

TEST(Dre, ConstantZeroAndSingleElementGroupsAreExactEnough) {
  // Constant group: max/min = 1 would give k = Inf; the guard uses k = 1.
  DreGroup grp;
  std::vector<float> constant(kDreGroupSize, 3.25e-7f);
  for (float y : dre_round_trip(constant, &grp)) EXPECT_NEAR(y, 3.25e-7f, 3.25e-7f * 1e-5f);
  EXPECT_EQ(grp.expansion, 1.0f);
  std::vector<float> negative_constant(kDreGroupSize, -2.0f);
  for (float y : dre_round_trip(negative_constant)) EXPECT_NEAR(y, -2.0f, 2e-5f);
  // All zero: every element decodes to exactly 0 and the side data is finite.
  std::vector<float> zeros(kDreGroupSize, 0.0f);
  for (float y : dre_round_trip(zeros, &grp)) EXPECT_EQ(y, 0.0f);
  EXPECT_TRUE(std::isfinite(grp.scale) && std::isfinite(grp.expansion) && std::isfinite(grp.centre));
  // A single element (the tail group of a tensor with numel % 128 == 1).
  EXPECT_NEAR(dre_round_trip({-7.5e-3f})[0], -7.5e-3f, 7.5e-3f * 1e-5f);
  // Zeros mixed with one value, and a constant magnitude with both signs.
  std::vector<float> sparse(kDreGroupSize, 0.0f);
  sparse[17] = 0.125f;
  const std::vector<float> ys = dre_round_trip(sparse);
  for (int j = 0; j < kDreGroupSize; ++j) EXPECT_NEAR(ys[j], sparse[j], 1e-6f);
  std::vector<float> signs(kDreGroupSize);
  for (int j = 0; j < kDreGroupSize; ++j) signs[j] = (j % 3) ? 0.5f : -0.5f;
  const std::vector<float> yss = dre_round_trip(signs);
  for (int j = 0; j < kDreGroupSize; ++j) EXPECT_NEAR(yss[j], signs[j], 1e-5f);
}

TEST(Dre, NearConstantGroupsNeverDecodeANonzeroToZero) {
  // max/min a few ulps above 1: COAT's k would be ~1e8; the k <= 1024 guard keeps every element alive.
  for (int ulps = 1; ulps <= 64; ulps *= 2) {
    std::vector<float> x(kDreGroupSize);
    float v = 1e-3f;
    for (int j = 0; j < kDreGroupSize; ++j) x[j] = j % 2 ? v : std::nextafter(v, 1.0f);
    for (int u = 1; u < ulps; ++u) x[5] = std::nextafter(x[5], 1.0f);
    DreGroup grp;
    const std::vector<float> y = dre_round_trip(x, &grp);
    EXPECT_LE(grp.expansion, kDreMaxK);
    for (int j = 0; j < kDreGroupSize; ++j) EXPECT_NEAR(y[j], x[j], x[j] * 1e-5f) << ulps << " " << j;
  }
}

TEST(Dre, ExtremeRangesStayFinite) {
  std::vector<float> x = {3e38f, 1e-38f, -5e-30f, 1.0f, 0.0f};
  DreGroup grp;
  const std::vector<float> y = dre_round_trip(x, &grp);
  EXPECT_GT(grp.expansion, 0.0f);
  for (size_t j = 0; j < x.size(); ++j) EXPECT_TRUE(std::isfinite(y[j])) << j;
  EXPECT_NEAR(y[0], 3e38f, 3e38f * 0.5f);
  EXPECT_EQ(y[4], 0.0f);
}

TEST(DynamicMap, HasTheDescribedStructure) {
  for (bool is_signed : {true, false}) {
    const DynamicMap& map = dynamic_map(is_signed);
    for (int j = 0; j < 255; ++j) EXPECT_LT(map.value[j], map.value[j + 1]) << j;  // sorted, distinct
    EXPECT_EQ(map.value[255], 1.0f);
    int zeros = 0;
    for (float v : map.value) zeros += v == 0.0f;
    EXPECT_EQ(zeros, 1);
    // Smallest nonzero magnitude: the single (signed) or two (unsigned) bins of the 1e-6 decade.
    const float smallest = is_signed ? 0.55e-6f : (0.1f + 0.225f) * 1e-6f;
    float min_pos = 2;
    for (float v : map.value)
      if (v > 0) min_pos = std::min(min_pos, v);
    EXPECT_FLOAT_EQ(min_pos, smallest);
  }
  const DynamicMap& s = dynamic_map(true);
  EXPECT_FLOAT_EQ(s.value[0], -(1.0f - 0.9f / 128));  // most negative: the top bin of the last decade
  // 64 magnitudes in [0.1, 1) for the signed map, 128 for the unsigned one.
  int top = 0;
  for (float v : s.value) top += v >= 0.1f && v < 1.0f;
  EXPECT_EQ(top, 64);
  top = 0;
  for (float v : dynamic_map(false).value) top += v >= 0.1f && v < 1.0f;
  EXPECT_EQ(top, 128);
}

TEST(DynamicMap, EncodeTakesTheNearestCode) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (bool is_signed : {true, false}) {
    const DynamicMap& map = dynamic_map(is_signed);
    for (int i = 0; i < 100000; ++i) {
      float x = u(rng);
      if (!is_signed) x = std::fabs(x);
      if (i % 3 == 0) x *= 1e-4f;
      const uint32_t code = dynamic_map_encode(x, map.threshold);
      float best = INFINITY;
      for (float v : map.value) best = std::min(best, std::fabs(v - x));
      // Thresholds are FP32 midpoints: a value within an ulp of one may take either neighbour.
      EXPECT_LE(std::fabs(map.value[code] - x), best + 1e-7f * std::fabs(x) + 1e-12f) << x;
    }
    for (int c = 0; c < 256; ++c) EXPECT_EQ(dynamic_map_encode(map.value[c], map.threshold), static_cast<uint32_t>(c));
  }
}

TEST(StateLayout, BytesPerParameter) {
  const int64_t n = 128 * 1000;
  EXPECT_EQ(moment_layout(StateCodec::kFP32, n).bytes(), 4 * n);
  EXPECT_EQ(moment_layout(StateCodec::kBF16, n).bytes(), 2 * n);
  EXPECT_EQ(moment_layout(StateCodec::kFP8, n).bytes(), n + 12 * (n / 128));  // 1.09375 B/element
  EXPECT_EQ(moment_layout(StateCodec::kFP8Plain, n).bytes(), n + 4 * (n / 128));
  EXPECT_EQ(moment_layout(StateCodec::kInt8, n).bytes(), n + 4 * ((n + 255) / 256));
  EXPECT_EQ(moment_layout(StateCodec::kInt8, 4095).codec, StateCodec::kFP32);  // small tensors stay FP32
  EXPECT_EQ(moment_layout(StateCodec::kInt8, 4096).codec, StateCodec::kInt8);
  EXPECT_EQ(moment_layout(StateCodec::kFP8, 129).groups, 2);
  EXPECT_THROW(parse_state_codec("fp4"), InvalidArgument);
  for (const char* name : {"fp32", "bf16", "fp8", "fp8_plain", "int8"})
    EXPECT_EQ(state_codec_name(parse_state_codec(name)), name);
}

TEST(LrSchedule, WarmupCosineLinearConstant) {
  const LrSchedule cos = make_lr_schedule("cosine", 10, 110, 0.1);
  EXPECT_DOUBLE_EQ(lr_factor(cos, 0), 0.1);
  EXPECT_DOUBLE_EQ(lr_factor(cos, 9), 1.0);
  EXPECT_DOUBLE_EQ(lr_factor(cos, 10), 1.0);
  EXPECT_NEAR(lr_factor(cos, 60), 0.55, 1e-15);
  EXPECT_NEAR(lr_factor(cos, 110), 0.1, 1e-15);
  EXPECT_NEAR(lr_factor(cos, 500), 0.1, 1e-15);
  const LrSchedule lin = make_lr_schedule("linear", 0, 100, 0.0);
  EXPECT_DOUBLE_EQ(lr_factor(lin, 25), 0.75);
  const LrSchedule con = make_lr_schedule("constant", 4, 0, 0.0);
  EXPECT_DOUBLE_EQ(lr_factor(con, 1), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(con, 1000), 1.0);
  EXPECT_THROW(make_lr_schedule("step", 0, 10, 0.0), InvalidArgument);
  EXPECT_THROW(make_lr_schedule("cosine", 20, 10, 0.0), InvalidArgument);
  EXPECT_THROW(make_lr_schedule("cosine", 0, 10, 1.5), InvalidArgument);
}

}  // namespace
}  // namespace nibble::optim
