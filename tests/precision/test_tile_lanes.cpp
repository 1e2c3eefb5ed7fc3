// The Highway kernels of the CPU tile pass (precision/cpu/*_lanes.cpp) against their scalar definitions, on
// every compiled target this CPU runs (forced one at a time through Highway's target selection), bit for bit:
// block amaxes and abs max (NaN ignored, NaN reported), the block multiplies, the float32 transpose, the RHT16 columns of NVFP4's columnwise copy, MXFP4
// QuEST's Hadamard-32 groups (scaled values, scale codes, input stats). The quantizer tests (tests/python/test_quantize*.py)
// check the whole pass against ml_dtypes and torchao on the dispatched target only; these cover the others.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

#include "precision/cpu/quantize_quest_lanes.h"
#include "precision/cpu/quantize_rht_lanes.h"
#include "precision/cpu/tile_block_scales.h"
#include "precision/hadamard.h"
#include "precision/scaling.h"

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
#include "precision/cpu/block_amax_lanes.h"
#include "precision/cpu/simd_targets.h"
#include "precision/cpu/transpose_lanes.h"
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
// Exponents in [-spread, spread]: 8 keeps most butterfly groups within the exactness bound (2^24 between a
// group's largest and smallest nonzero magnitude), 30 sends most to the reference.
std::vector<float> mixed_values(size_t n, uint32_t seed, double special_rate, int spread = 30) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  std::uniform_int_distribution<int> expo(-spread, spread);
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

// NVFP4's block scales from the encode lanes (tile_block_scales.h nvfp4_block_scales) against block_scale_of's
// scalar rule: amaxes over the whole range with 0, subnormals, Inf and NaN, under global encode scales that
// put the products below E4M3's subnormals, in its range and past 448 (and an infinite one).
TEST(TileLanes, Nvfp4BlockScalesEqualBlockScaleOnEveryTarget) {
  on_every_target([] {
    std::vector<float> amax = mixed_values(1000, 11, 0.02, 40);
    for (float& a : amax) a = std::fabs(a);
    for (const float global_enc : {1.0f, 2688.0f / 3.0f, 1.7e-3f, 6.0e5f, 3.0e38f,
                                   std::numeric_limits<float>::infinity()}) {
      const BlockScaleConstants c{448.0f, 8, 0.0f, false, 448.0f, MxScaleRule::kFloor, global_enc, 1.0f / global_enc};
      for (const int64_t n : {int64_t{1}, int64_t{17}, int64_t{1000}}) {
        std::vector<float> mult(n), scale_inv(n, -1.0f);
        std::vector<uint8_t> code(n);
        cpu::nvfp4_block_scales(c, amax.data(), n, mult.data(), code.data(), scale_inv.data());
        for (int64_t k = 0; k < n; ++k) {
          const BlockScale want = block_scale_of<Scheme::kNVFP4>(c, amax[k]);
          ASSERT_EQ(code[k], want.code) << "amax " << amax[k] << " enc " << global_enc;
          ASSERT_EQ(bits_of(mult[k]), bits_of(want.multiplier)) << "amax " << amax[k] << " enc " << global_enc;
          ASSERT_EQ(bits_of(scale_inv[k]), bits_of(want.scale_inv));
        }
      }
    }
  });
}

// y = x times its block's multiplier, rows at a stride, full and partial blocks (n not a multiple of the
// width, nor of any target's lane count), NaN/Inf/-0/subnormal values and multipliers (subnormal products
// included), against the scalar product; the padding past n is left alone.
TEST(TileLanes, MultiplyBlocksEqualScalarOnEveryTarget) {
  on_every_target([] {
    constexpr int64_t kRows = 5, kLdx = 131;
    for (const int64_t width : {16, 32, 128})
      for (const int64_t n : {int64_t{128}, int64_t{100}, int64_t{37}, int64_t{7}}) {
        const int64_t blocks = (n + width - 1) / width;
        const std::vector<float> x = mixed_values(kRows * kLdx, static_cast<uint32_t>(width + n), 0.05);
        std::vector<float> mult = mixed_values(kRows * blocks, static_cast<uint32_t>(width * n), 0.2, 126);
        mult[0] = 0x1p-127f;  // a subnormal multiplier (E8M0's smallest)
        std::vector<float> y(kRows * (n + 1), 7.0f);
        multiply_blocks_rows_lanes(x.data(), kLdx, kRows, n, width, mult.data(), y.data(), n + 1);
        for (int64_t i = 0; i < kRows; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            const float want = x[i * kLdx + j] * mult[i * blocks + j / width], got = y[i * (n + 1) + j];
            if (std::isnan(want))
              EXPECT_TRUE(std::isnan(got)) << "width " << width << " n " << n << " row " << i << " col " << j;
            else
              EXPECT_EQ(bits_of(got), bits_of(want)) << "width " << width << " n " << n << " row " << i << " col " << j;
          }
          EXPECT_EQ(y[i * (n + 1) + n], 7.0f) << "width " << width << " n " << n << " row " << i;
        }
      }
  });
}

// The transpose moves bits: every element (NaN payloads, -0, subnormals included) lands where the scalar loop
// puts it, for whole blocks and ragged edges of every target's block size, and nothing else is written.
TEST(TileLanes, TransposeFloatsEqualsScalarOnEveryTarget) {
  on_every_target([] {
    constexpr int64_t kLdx = 133, kLdt = 131;
    std::vector<float> x = mixed_values(kLdx * 130, 11, 0.05, 126);
    uint32_t payload = 0x7FC01234u;  // a NaN with a payload
    std::memcpy(&x[5], &payload, sizeof payload);
    for (const auto& [rows, cols] : {std::pair{int64_t{128}, int64_t{128}}, std::pair{int64_t{8}, int64_t{8}},
                                     std::pair{int64_t{4}, int64_t{12}}, std::pair{int64_t{37}, int64_t{101}},
                                     std::pair{int64_t{3}, int64_t{130}}, std::pair{int64_t{130}, int64_t{1}}}) {
      std::vector<float> t(kLdt * 131, 7.0f);
      transpose_floats_lanes(x.data(), kLdx, rows, cols, t.data(), kLdt);
      for (int64_t j = 0; j < 131; ++j)
        for (int64_t i = 0; i < kLdt; ++i) {
          const float want = (j < cols && i < rows) ? x[i * kLdx + j] : 7.0f;
          ASSERT_EQ(bits_of(t[j * kLdt + i]), bits_of(want)) << rows << "x" << cols << " at " << i << ", " << j;
        }
    }
  });
}

// Checks y (16 rows, stride ld) against rht16 of each of x's first `cols` columns, bit for bit (NaN for NaN), and
// returns what rht16_rows_amax must report for them: the input and transformed maxima, and whether no NaN occurred.
struct Rht16Want {
  float in_amax = 0.0f, out_amax = 0.0f;
  bool clean = true;
};
Rht16Want check_rht16_columns(const std::vector<float>& x, int64_t ld, int64_t cols, uint32_t sign_mask,
                              const std::vector<float>& y) {
  Rht16Want w;
  for (int64_t c = 0; c < cols; ++c) {
    float g[16], r[16];
    for (int i = 0; i < 16; ++i) {
      g[i] = x[i * ld + c];
      w.clean = w.clean && !std::isnan(g[i]);
      w.in_amax = std::max(w.in_amax, std::fabs(g[i]));
    }
    rht16(g, sign_mask, r);
    for (int j = 0; j < 16; ++j) {
      if (std::isnan(r[j]))  // (a NaN's payload and sign are not part of the definition; it fails the quantizer)
        EXPECT_TRUE(std::isnan(y[j * ld + c])) << "column " << c << " row " << j;
      else
        EXPECT_EQ(bits_of(y[j * ld + c]), bits_of(r[j])) << "column " << c << " row " << j;
      w.clean = w.clean && !std::isnan(r[j]);
      w.out_amax = std::max(w.out_amax, std::fabs(r[j]));
    }
  }
  return w;
}

// Checks quest_rows' codes and scaled values for x's first `cols` columns (32 rows) against the definition
// (hadamard32_normalised, index-order float64 sums, quest_code_from_sums), and returns what it must report:
// a NaN after the transform, a NaN in the input, and the input amax starting from `in_amax`.
struct QuestWant {
  bool nan = false, in_nan = false;
  float in_amax = 0.0f;
};
QuestWant check_quest_columns(const std::vector<float>& x, int64_t ldx, int64_t cols, const std::vector<float>& scaled,
                              int64_t lds, const std::vector<uint8_t>& codes, float in_amax) {
  QuestWant w;
  w.in_amax = in_amax;
  for (int64_t c = 0; c < cols; ++c) {
    float g[32], h[32];
    for (int i = 0; i < 32; ++i) {
      g[i] = x[i * ldx + c];
      w.in_nan = w.in_nan || std::isnan(g[i]);
      w.in_amax = std::max(w.in_amax, std::fabs(g[i]));
    }
    hadamard32_normalised(g, h);
    double sum = 0.0, sum_sq = 0.0;
    for (int i = 0; i < 32; ++i) {
      w.nan = w.nan || std::isnan(h[i]);
      sum += h[i];
      sum_sq += static_cast<double>(h[i]) * h[i];
    }
    const uint32_t e = quest_code_from_sums(sum, sum_sq);
    EXPECT_EQ(codes[c], e) << "column " << c;
    const float m = e8m0_encode_multiplier(e);
    for (int i = 0; i < 32; ++i) {
      const float want = h[i] * m, got = scaled[i * lds + c];
      if (std::isnan(want))  // (a NaN's payload is not part of the definition)
        EXPECT_TRUE(std::isnan(got)) << "column " << c << " row " << i;
      else
        EXPECT_EQ(bits_of(got), bits_of(want)) << "column " << c << " row " << i;
    }
  }
  return w;
}

// Groups of 16 rows, 37 columns (vector passes and a scalar tail on every target), with values whose
// exponents span more than the butterfly's exactness bound in some columns (those take the reference).
TEST(TileLanes, Rht16RowsEqualReferenceOnEveryTarget) {
  on_every_target([] {
    constexpr int64_t kCols = 37, kLd = 40;
    for (const uint32_t sign_mask : {0u, 0xA5C3u, 0xFFFFu})
      for (const auto& [rate, spread] : {std::pair{0.0, 8}, std::pair{0.003, 8}, std::pair{0.03, 8}, std::pair{0.0, 30}}) {
        const std::vector<float> x =
            mixed_values(16 * kLd, sign_mask + static_cast<uint32_t>(rate * 1e4) + spread, rate, spread);
        std::vector<float> y(16 * kLd, 7.0f);
        rht16_rows(x.data(), kLd, kCols, sign_mask, y.data(), kLd);
        const auto [in_want, out_want, clean_want] = check_rht16_columns(x, kLd, kCols, sign_mask, y);
        float in_m = 0.0f, out_m = 0.0f;
        const bool clean = rht16_rows_amax(x.data(), kLd, kCols, sign_mask, &in_m, &out_m);
        EXPECT_EQ(clean, clean_want) << "rate " << rate;
        if (clean_want) {  // (on a NaN the caller discards both maxima and takes the storing path)
          EXPECT_EQ(bits_of(in_m), bits_of(in_want)) << "rate " << rate;
          EXPECT_EQ(bits_of(out_m), bits_of(out_want)) << "rate " << rate;
        }
      }
  });
}
// Groups of 32 rows, 37 columns (vector passes and a scalar tail on every target), against the definition
// (hadamard32_normalised, index-order float64 sums, quest_code_from_sums), with and without the input stats.
// Values whose exponents span more than the butterfly's exactness bound send columns to the reference.
TEST(TileLanes, QuestRowsEqualReferenceOnEveryTarget) {
  on_every_target([] {
    constexpr int64_t kCols = 37, kLdx = 40, kLds = 44;
    for (const auto& [rate, spread] :
         {std::pair{0.0, 8}, std::pair{0.002, 8}, std::pair{0.03, 8}, std::pair{0.0, 30}, std::pair{0.01, 126}})
      for (const bool stats : {false, true}) {
        SCOPED_TRACE(testing::Message() << "rate " << rate << " spread " << spread << " stats " << stats);
        const std::vector<float> x = mixed_values(32 * kLdx, static_cast<uint32_t>(rate * 1e4) + spread, rate, spread);
        std::vector<float> scaled(32 * kLds, 7.0f);
        std::vector<uint8_t> codes(kCols + 3, 0xEE);
        QuestInputStats input;
        input.amax = 0.5f;
        const bool nan = quest_rows(x.data(), kLdx, kCols, scaled.data(), kLds, codes.data(), stats ? &input : nullptr);
        const auto [nan_want, in_nan_want, in_want] = check_quest_columns(x, kLdx, kCols, scaled, kLds, codes, 0.5f);
        for (int64_t c = kCols; c < kCols + 3; ++c) EXPECT_EQ(codes[c], 0xEE) << "column " << c;
        for (int i = 0; i < 32; ++i)
          for (int64_t c = kCols; c < kLds; ++c) EXPECT_EQ(scaled[i * kLds + c], 7.0f) << "row " << i;
        EXPECT_EQ(nan, nan_want);
        if (stats) {
          EXPECT_EQ(bits_of(input.amax), bits_of(in_want));
          EXPECT_EQ(input.nan, in_nan_want);
        } else {
          EXPECT_EQ(input.amax, 0.5f);
        }
      }
  });
}

// Columns built to sit on the kernels' edges rather than drawn at random: all zeros of either sign (whose
// transform must be +0, as the reference's "+ 0.0" makes it), one nonzero among zeros (the min-nonzero
// rule), equal or opposite values (exact cancellations to zero), the exactness bound itself (largest
// magnitude exactly 2^24 times the smallest nonzero fails it, just under passes, also at the subnormal end
// and where min * 2^24 overflows to +Inf), NaN and Inf alone among zeros, and ordinary values. Rows r of
// column c: edge_column(c % kPatterns, r). kCols spans several vector passes, a half pass and a scalar tail
// on every target.
float edge_value(int pattern, int r, int rows) {
  const float tiny = 1.40129846e-45f;  // 2^-149
  switch (pattern) {
    case 0: return 0.0f;
    case 1: return -0.0f;
    case 2: return (r % 3 == 0) ? -0.0f : 0.0f;
    case 3: return r == 5 ? -2.5f : ((r & 1) ? -0.0f : 0.0f);
    case 4: return 0.75f;
    case 5: return (r & 1) ? -1.5f : 1.5f;
    case 6: return r == 0 ? 1.0f : (r == 1 ? 0x1p-24f : 0.5f);                // max == min * 2^24: fails
    case 7: return r == 0 ? 0x1.fffffep-1f : (r == 1 ? 0x1p-24f : 0.5f);     // just under: passes
    case 8: return r == 0 ? 0x1p-125f : (r == 1 ? tiny : -0.0f);              // subnormal min, fails
    case 9: return r == 0 ? 0x1p-126f : (r == 1 ? -tiny : 0.0f);              // subnormal min, passes
    case 10: return r == 0 ? 3.0e38f : (r == 1 ? 0x1p110f : -0x1p120f);       // min * 2^24 = +Inf
    case 11: return r == 7 ? std::numeric_limits<float>::quiet_NaN() : 0.0f;
    case 12: return r == 2 ? -std::numeric_limits<float>::infinity() : 0.0f;
    case 13: return r == rows - 1 ? 1e-40f : 0.0f;
    default: return std::ldexp(static_cast<float>((r * 37 + pattern * 11) % 17) - 8.0f, (r * pattern) % 9 - 4);
  }
}

TEST(TileLanes, RhtAndQuestEdgeColumnsEqualReferenceOnEveryTarget) {
  constexpr int kPatterns = 16;
  constexpr int64_t kCols = 2 * kPatterns + 13, kLd = 48;
  on_every_target([] {
    for (const uint32_t sign_mask : {0u, 0xA5C3u, 0xFFFFu}) {
      std::vector<float> x(16 * kLd, 0.0f);
      for (int r = 0; r < 16; ++r)
        for (int64_t c = 0; c < kCols; ++c) x[r * kLd + c] = edge_value(static_cast<int>(c % kPatterns), r, 16);
      std::vector<float> y(16 * kLd, 7.0f);
      rht16_rows(x.data(), kLd, kCols, sign_mask, y.data(), kLd);
      SCOPED_TRACE(testing::Message() << "signs " << sign_mask);
      auto [in_want, out_want, clean_want] = check_rht16_columns(x, kLd, kCols, sign_mask, y);
      float in_m = 0.0f, out_m = 0.0f;
      EXPECT_EQ(rht16_rows_amax(x.data(), kLd, kCols, sign_mask, &in_m, &out_m), clean_want);
      // Without the NaN columns, so that both maxima are defined.
      for (int r = 0; r < 16; ++r)
        for (int64_t c = 0; c < kCols; ++c)
          if (std::isnan(x[r * kLd + c])) x[r * kLd + c] = 0.0f;
      in_want = out_want = 0.0f;
      for (int64_t c = 0; c < kCols; ++c) {
        float g[16], r[16];
        for (int i = 0; i < 16; ++i) in_want = std::max(in_want, std::fabs(g[i] = x[i * kLd + c]));
        rht16(g, sign_mask, r);
        for (int j = 0; j < 16; ++j) out_want = std::max(out_want, std::fabs(r[j]));
      }
      in_m = out_m = 0.0f;
      EXPECT_TRUE(rht16_rows_amax(x.data(), kLd, kCols, sign_mask, &in_m, &out_m));
      EXPECT_EQ(bits_of(in_m), bits_of(in_want)) << "signs " << sign_mask;
      EXPECT_EQ(bits_of(out_m), bits_of(out_want)) << "signs " << sign_mask;
    }
    std::vector<float> x(32 * kLd, 0.0f), scaled(32 * kLd, 7.0f);
    for (int r = 0; r < 32; ++r)
      for (int64_t c = 0; c < kCols; ++c) x[r * kLd + c] = edge_value(static_cast<int>(c % kPatterns), r, 32);
    std::vector<uint8_t> codes(kCols, 0xEE);
    QuestInputStats input;
    const bool nan = quest_rows(x.data(), kLd, kCols, scaled.data(), kLd, codes.data(), &input);
    const auto [nan_want, in_nan_want, in_want] = check_quest_columns(x, kLd, kCols, scaled, kLd, codes, 0.0f);
    EXPECT_EQ(nan, nan_want);
    EXPECT_EQ(bits_of(input.amax), bits_of(in_want));
    EXPECT_EQ(input.nan, in_nan_want);
  });
}
#else
TEST(TileLanes, NoHighwayInThisBuild) { GTEST_SKIP() << "built without Highway: the scalar loops are the kernels"; }
#endif

// The fallback of every Hadamard kernel (quantize_hadamard.h's hadamard_index_order, for the groups whose exponents
// span more than the butterfly's bound) against the definitions rht16 and hadamard32_normalised: the same bits
// for every group (a NaN for a NaN: its payload is not part of the definition), groups mostly outside the bound.
TEST(TileLanes, HadamardIndexOrderEqualsTheDefinition) {
  std::mt19937 gen(41);
  std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
  std::uniform_int_distribution<int> expo(-60, 60);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), -0.0f, 0.0f, 1e-40f, -3e-42f, 3.0e38f};
  auto same = [](float got, float want) {
    if (std::isnan(want)) return std::isnan(got);
    uint32_t a, b;
    std::memcpy(&a, &got, sizeof a);
    std::memcpy(&b, &want, sizeof b);
    return a == b;
  };
  for (int group = 0; group < 20000; ++group) {
    float g[32], got[32], want[32];
    for (auto& v : g) v = gen() % 50 == 0 ? specials[gen() % 8] : std::ldexp(mant(gen), expo(gen));
    const uint32_t sign_mask = group % 3 == 0 ? 0u : static_cast<uint32_t>(gen()) & 0xFFFFu;
    hadamard_index_order<16>(g, sign_mask, kRht16Scale, got);
    rht16(g, sign_mask, want);
    for (int j = 0; j < 16; ++j) ASSERT_TRUE(same(got[j], want[j])) << "rht16 group " << group << " output " << j;
    hadamard_index_order<32>(g, 0u, kHadamard32Scale, got);
    hadamard32_normalised(g, want);
    for (int j = 0; j < 32; ++j) ASSERT_TRUE(same(got[j], want[j])) << "H32 group " << group << " output " << j;
  }
}

}  // namespace
}  // namespace nibble::precision
