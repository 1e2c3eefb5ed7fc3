// The Highway kernels of the CPU tile pass (precision/cpu/*_lanes.cpp) against their scalar definitions, on
// every compiled target this CPU runs (forced one at a time through Highway's target selection), bit for bit:
// block amaxes and abs max (NaN ignored, NaN reported). The quantizer tests (tests/python/test_quantize*.py)
// check the whole pass against ml_dtypes and torchao on the dispatched target only; these cover the others.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "precision/cpu/tile_block_scales.h"

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
#include "precision/cpu/block_amax_lanes.h"
#include "precision/cpu/simd_targets.h"
#endif

namespace nibble::precision {
namespace {

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

// Values over a wide exponent range with the odd ones sprinkled in (NaN, Inf, -0, subnormals), so that the
// kernels' exactness checks and fallbacks are taken as well as their fast paths.
std::vector<float> mixed_values(size_t n, uint32_t seed, double special_rate) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  std::uniform_int_distribution<int> expo(-30, 30);
  std::uniform_real_distribution<double> coin(0.0, 1.0);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), -0.0f, 0.0f, 1e-40f, -3e-42f, 3.0e38f};
  std::vector<float> x(n);
  for (auto& v : x)
    v = coin(gen) < special_rate ? specials[gen() % 8] : std::ldexp(mant(gen), expo(gen));
  return x;
}

template <class Body>
void on_every_target(const Body& body) {
  const std::vector<int64_t> targets = simd::runnable_targets();
  for (const int64_t target : targets) {
    simd::force_target(target);
    ASSERT_EQ(simd::current_target(), target);
    SCOPED_TRACE(simd::target_name(target));
    body();
  }
  simd::force_target(0);
  EXPECT_GE(targets.size(), 2u);
}

TEST(TileLanes, AbsMaxEqualsScalarOnEveryTarget) {
  on_every_target([] {
    for (const double rate : {0.0, 0.001, 0.05})
      for (const size_t n : {size_t{0}, size_t{1}, size_t{15}, size_t{16}, size_t{17}, size_t{128}, size_t{1000}}) {
        const std::vector<float> x = mixed_values(n, static_cast<uint32_t>(n * 7 + 1), rate);
        float want = 0.0f;
        bool want_nan = false;
        for (const float v : x) {
          want_nan = want_nan || std::isnan(v);
          want = std::max(want, std::fabs(v));
        }
        bool nan = false;
        const float got = abs_max_lanes(x.data(), n, &nan);
        EXPECT_EQ(bits_of(got), bits_of(want)) << "n " << n << " rate " << rate;
        EXPECT_EQ(nan, want_nan) << "n " << n << " rate " << rate;
      }
  });
}

TEST(TileLanes, BlockAmaxesEqualScalarOnEveryTarget) {
  on_every_target([] {
    constexpr int64_t kRows = 9, kLd = 136;  // rows not 64-byte aligned to one another
    for (const double rate : {0.0, 0.01})
      for (const int64_t width : {16, 32, 128}) {
        const std::vector<float> x = mixed_values(kRows * kLd, static_cast<uint32_t>(width), rate);
        const int64_t blocks = 128 / width;
        std::vector<float> want(kRows * blocks), got(kRows * blocks, -1.0f);
        bool want_nan = false, nan = false;
        for (int64_t i = 0; i < kRows; ++i)
          cpu::span_block_amaxes(x.data() + i * kLd, 128, width, want.data() + i * blocks, &want_nan);
        span128_block_amaxes_lanes(x.data(), kLd, kRows, width, got.data(), &nan);
        for (int64_t k = 0; k < kRows * blocks; ++k)
          EXPECT_EQ(bits_of(got[k]), bits_of(want[k])) << "width " << width << " block " << k;
        EXPECT_EQ(nan, want_nan) << "width " << width;
      }
  });
}
#else
TEST(TileLanes, NoHighwayInThisBuild) { GTEST_SKIP() << "built without Highway: the scalar loops are the kernels"; }
#endif

}  // namespace
}  // namespace nibble::precision
