// core/quantization_stats.h against values computed by hand from the format definitions (NUMERICS.md): zeros,
// a tensor with a known error (so a known SNR) and a flushed element, a delayed scale that saturates, MXFP8 block
// scales of known exponents, stochastic rounding's bias against round-to-nearest's, an RHT'd NVFP4 copy measured
// against an independently built transform, and a Linear that records every operand's copies under its role.
#include <gtest/gtest.h>

#include <cmath>

#include "core/linear.h"
#include "core/quantization_stats.h"
#include "core/recipe.h"
#include "precision/quantize.h"

namespace {

using nibble::core::measure_copy;
using nibble::core::QuantizationErrorSums;
using nibble::core::stats_json;
using nibble::precision::QuantizeOptions;
using nibble::precision::Rounding;
using nibble::precision::Scheme;

QuantizationErrorSums rowwise_stats(const torch::Tensor& x, const QuantizeOptions& o) {
  const auto q = nibble::core::quantize(x, o, "x");
  return measure_copy(x, *q.rowwise, q.options, false);
}

}  // namespace

TEST(QuantizationStats, ZerosAreExactWithNoScaleRange) {
  const auto s = rowwise_stats(torch::zeros({2, 32}), nibble::precision::default_options(Scheme::kFP8Tensor));
  EXPECT_EQ(s.elements, 64);
  EXPECT_EQ(s.nonzero, 0);
  const auto j = stats_json(s);
  EXPECT_EQ(j["amax"].get<double>(), 0.0);
  EXPECT_TRUE(j["snr_db"].is_null());
  EXPECT_TRUE(j["scale_log2"].is_null());
  EXPECT_EQ(j["flushed"].get<double>(), 0.0);
  EXPECT_EQ(j["clamped"].get<double>(), 0.0);
  EXPECT_FALSE(j.contains("bias"));  // round-to-nearest
}

TEST(QuantizationStats, KnownErrorAndAFlushedElementInFp8) {
  // amax 448 gives scale 1. E4M3 has 3 mantissa bits: 1.0625 is halfway between 1.0 and 1.125 and rounds to the
  // even 1.0; 0.0009 is below half the smallest subnormal (2^-9 / 2) and flushes to zero.
  const auto x = torch::tensor({448.0f, 1.0625f, 0.0009f, 0.0f}).reshape({1, 4});
  const auto s = rowwise_stats(x, nibble::precision::default_options(Scheme::kFP8Tensor));
  const double e1 = 0.0625, e2 = double(0.0009f);
  const double signal = 448.0 * 448.0 + 1.0625 * 1.0625 + e2 * e2, noise = e1 * e1 + e2 * e2;
  EXPECT_EQ(s.nonzero, 3);
  EXPECT_EQ(s.flushed, 1);
  EXPECT_EQ(s.clamped, 0);
  EXPECT_DOUBLE_EQ(s.signal, signal);
  EXPECT_DOUBLE_EQ(s.noise, noise);
  const auto j = stats_json(s);
  EXPECT_DOUBLE_EQ(j["amax"].get<double>(), 448.0);
  EXPECT_NEAR(j["snr_db"].get<double>(), 10.0 * std::log10(signal / noise), 1e-9);
  EXPECT_DOUBLE_EQ(j["flushed"].get<double>(), 1.0 / 3.0);
  EXPECT_EQ(j["scale_log2"][0].get<double>(), 0.0);  // decode scale 1 = 2^0
  EXPECT_EQ(j["scale_log2"][1].get<double>(), 0.0);
}

TEST(QuantizationStats, ADelayedScaleSaturates) {
  // A delayed (fixed) scale of 1: 500 is beyond E4M3's 448 and clamps; 100 rounds to 96 (step 8 in [64, 128),
  // halfway, to the even mantissa) and is not clamped.
  QuantizeOptions o = nibble::precision::default_options(Scheme::kFP8Tensor);
  o.use_fixed_scale = true;
  o.fixed_scale = 1.0f;
  const auto s = rowwise_stats(torch::tensor({500.0f, 100.0f}).reshape({1, 2}), o);
  EXPECT_EQ(s.clamped, 1);
  EXPECT_DOUBLE_EQ(s.noise, 52.0 * 52.0 + 4.0 * 4.0);
  EXPECT_DOUBLE_EQ(stats_json(s)["clamped"].get<double>(), 0.5);
}

TEST(QuantizationStats, MxBlockScaleRange) {
  // MXFP8 E4M3, e = ceil(log2(amax / 448)): a block of ones has e = -8, a block of 256s e = 0. Both exact.
  auto x = torch::cat({torch::ones({1, 32}), torch::full({1, 32}, 256.0f)}, 1);
  const auto j = stats_json(rowwise_stats(x, nibble::precision::default_options(Scheme::kMXFP8)));
  EXPECT_EQ(j["scale_log2"][0].get<double>(), -8.0);
  EXPECT_EQ(j["scale_log2"][1].get<double>(), 0.0);
  EXPECT_TRUE(j["snr_db"].is_null());
  EXPECT_EQ(j["clamped"].get<double>(), 0.0);
}

TEST(QuantizationStats, StochasticRoundingIsUnbiasedWhereNearestIsNot) {
  // 4095 values halfway between two E4M3 neighbours (1.0625 between 1.0 and 1.125) and 448 for scale 1.
  // Round-to-nearest sends all of them down: bias -0.0625 * 4095 / sum|x|. Stochastic rounding sends each up
  // with probability 1/2: the sum of errors has standard deviation 0.0625 * sqrt(4095) = 4.0; allow 5 of them.
  auto x = torch::full({1, 4096}, 1.0625f);
  x[0][0] = 448.0f;
  const double magnitude = 448.0 + 4095 * 1.0625;
  QuantizeOptions o = nibble::precision::default_options(Scheme::kFP8Tensor);
  const auto nearest = rowwise_stats(x, o);
  EXPECT_DOUBLE_EQ(nearest.error / nearest.magnitude, -0.0625 * 4095 / magnitude);
  EXPECT_FALSE(stats_json(nearest).contains("bias"));
  o.rounding = Rounding::kStochastic;
  o.seed = 7;
  const auto sr = rowwise_stats(x, o);
  const double bias = stats_json(sr)["bias"].get<double>();
  EXPECT_LT(std::abs(bias), 5 * 4.0 / magnitude);
  EXPECT_NE(bias, 0.0);  // some rounding happened in both directions, not none
}

TEST(QuantizationStats, RhtCopyIsMeasuredInTheTransformedDomain) {
  // The NVFP4 columnwise copy with RHT encodes (x^T) @ (diag(sign) H16 / 4) along the tokens. Build that transform
  // here from its definition (Sylvester H16 by Kronecker products, TE's sign vector) and check the noise against it.
  torch::manual_seed(3);
  const auto x = torch::randn({32, 16});
  QuantizeOptions o = nibble::precision::default_options(Scheme::kNVFP4);
  o.rowwise = false;
  o.columnwise = true;
  o.rht = true;
  const auto q = nibble::core::quantize(x, o, "x");
  const auto s = measure_copy(x, *q.columnwise, q.options, true);
  auto h2 = torch::tensor({1.0, 1.0, 1.0, -1.0}, torch::kFloat64).reshape({2, 2});
  auto h16 = torch::kron(torch::kron(h2, h2), torch::kron(h2, h2));
  const auto sign = torch::tensor({1, 1, 1, -1, 1, -1, -1, -1, -1, -1, -1, 1, -1, 1, -1, -1}, torch::kFloat64);
  const auto transform = torch::diag(sign).matmul(h16) / 4.0;
  const auto reference = x.t().to(torch::kFloat64).reshape({16, 2, 16}).matmul(transform).reshape({16, 32});
  const auto decoded = nibble::core::dequantize(*q.columnwise, q.options).to(torch::kFloat64);
  const double noise = (decoded - reference).pow(2).sum().item<double>();
  // (the host pass rounds the transformed tensor to float32: a relative 6e-8 per element)
  EXPECT_NEAR(s.noise, noise, 1e-5 * noise);
  EXPECT_NEAR(s.signal, x.to(torch::kFloat64).pow(2).sum().item<double>(), 1e-6 * s.signal);  // orthogonal
  EXPECT_GT(10 * std::log10(s.signal / s.noise), 10.0);  // 4-bit: some noise, far from none or all
}

TEST(QuantizationStats, FusedHostPassEqualsTheTorchReference) {
  // Every scheme, both orientations, RHT and QuEST transforms, a bfloat16 input, stochastic rounding, outliers that
  // clamp under a delayed scale: the one-pass host measurement against the torch-operations reference.
  torch::manual_seed(5);
  auto x = torch::randn({64, 256}) * torch::exp(torch::randn({64, 1}));
  x.index_put_({torch::indexing::Slice(), 7}, 0.0);
  x[3][5] = 1e-9f;  // flushes in every format
  struct Case {
    Scheme scheme;
    bool rht = false, stochastic = false, bf16 = false, delayed = false;
  };
  const Case cases[] = {{Scheme::kFP8Tensor},          {Scheme::kFP8Tensor, false, true, true},
                        {Scheme::kFP8Tensor, false, false, false, true},
                        {Scheme::kFP8Block128},        {Scheme::kFP8Block128x128},
                        {Scheme::kMXFP8},              {Scheme::kNVFP4},
                        {Scheme::kNVFP4, true, true},  {Scheme::kNVFP4_2D},
                        {Scheme::kMXFP4, false, true}, {Scheme::kMXFP4Quest}};
  for (const Case& c : cases) {
    QuantizeOptions o = nibble::precision::default_options(c.scheme);
    o.rowwise = o.columnwise = true;
    o.rht = c.rht;
    if (c.stochastic) o.rounding = Rounding::kStochastic, o.seed = 11;
    if (c.delayed) o.use_fixed_scale = true, o.fixed_scale = 200.0f;  // x * 200 passes 448 for |x| > 2.24
    const auto input = c.bf16 ? x.to(torch::kBFloat16) : x;
    const auto q = nibble::core::quantize(input, o, "x");
    for (bool columnwise : {false, true}) {
      const auto& copy = columnwise ? *q.columnwise : *q.rowwise;
      const auto fused = measure_copy(input, copy, q.options, columnwise);
      const auto ref = nibble::core::measure_copy_reference(input, copy, q.options, columnwise);
      const std::string what = nibble::precision::scheme_name(c.scheme) + (columnwise ? " col" : " row") +
                               (c.rht ? " rht" : "") + (c.stochastic ? " sr" : "") + (c.bf16 ? " bf16" : "") +
                               (c.delayed ? " delayed" : "");
      EXPECT_EQ(fused.elements, ref.elements) << what;
      EXPECT_EQ(fused.nonzero, ref.nonzero) << what;
      EXPECT_EQ(fused.flushed, ref.flushed) << what;
      EXPECT_GT(fused.flushed, 0) << what;
      EXPECT_EQ(fused.clamped, ref.clamped) << what;
      EXPECT_EQ(fused.stochastic, ref.stochastic) << what;
      EXPECT_NEAR(fused.signal, ref.signal, 1e-6 * ref.signal) << what;  // float32 vs float64 transforms
      EXPECT_NEAR(fused.noise, ref.noise, 1e-6 * ref.noise) << what;
      EXPECT_NEAR(fused.error, ref.error, 1e-6 * ref.magnitude) << what;
      EXPECT_NEAR(fused.magnitude, ref.magnitude, 1e-6 * ref.magnitude) << what;
      EXPECT_NEAR(fused.amax, ref.amax, 1e-6 * ref.amax) << what;
      EXPECT_NEAR(fused.log2_scale_max, ref.log2_scale_max, 1e-6) << what;
      EXPECT_NEAR(fused.neg_log2_scale_min, ref.neg_log2_scale_min, 1e-6) << what;
    }
  }
}

TEST(QuantizationStats, SumsAddAndRoundTripThroughFlatArrays) {
  const auto a = rowwise_stats(torch::tensor({448.0f, 1.0625f}).reshape({1, 2}),
                               nibble::precision::default_options(Scheme::kFP8Tensor));
  QuantizationErrorSums none, total = a;
  total.add(none);  // a rank without the operand adds nothing
  EXPECT_EQ(total.elements, a.elements);
  EXPECT_EQ(total.log2_scale_max, a.log2_scale_max);
  total.add(a);
  double sums[QuantizationErrorSums::kSumFields], maxes[QuantizationErrorSums::kMaxFields];
  total.store(sums, maxes);
  const auto back = QuantizationErrorSums::load(sums, maxes);
  EXPECT_EQ(back.elements, 2 * a.elements);
  EXPECT_EQ(back.noise, 2 * a.noise);
  EXPECT_EQ(back.amax, a.amax);
  EXPECT_EQ(stats_json(back)["snr_db"], stats_json(a)["snr_db"]);  // a replicated copy changes no ratio
}

TEST(QuantizationStats, LinearRecordsEveryQuantizedOperandOnlyWhenAsked) {
  torch::manual_seed(0);
  auto state = std::make_shared<nibble::core::LinearState>(nibble::core::recipe_preset("nvfp4"), "proj", 1);
  const auto x = torch::randn({32, 64}, torch::requires_grad());
  const auto w = torch::randn({48, 64}, torch::requires_grad());
  nibble::core::linear_forward(x, w, std::nullopt, state).sum().backward();
  EXPECT_TRUE(state->stats.empty());
  state->collect_stats = true;
  w.mutable_grad() = torch::Tensor();
  {
    torch::NoGradGuard g;
    w.add_(0.0);  // a new version: the weight is quantized again, and measured
  }
  const auto dy = torch::randn({32, 48});  // (the gradient of a plain sum, all ones, would quantize exactly)
  (nibble::core::linear_forward(x, w, std::nullopt, state) * dy).sum().backward();
  for (const char* role : {"x_row", "x_col", "w_row", "w_col", "dy_row", "dy_col"}) {
    ASSERT_TRUE(state->stats.count(role)) << role;
    const auto j = stats_json(state->stats.at(role));
    ASSERT_TRUE(j["snr_db"].is_number()) << role << ": " << j.dump();
    EXPECT_GT(j["snr_db"].get<double>(), 5.0) << role;
    EXPECT_LT(j["snr_db"].get<double>(), 40.0) << role;  // 4-bit elements
  }
  EXPECT_EQ(state->stats.at("x_row").elements, 32 * 64);
  EXPECT_EQ(state->stats.at("w_col").elements, 48 * 64);
  EXPECT_TRUE(state->stats.at("dy_col").stochastic);  // the NVFP4 recipe rounds gradients stochastically
  EXPECT_FALSE(state->stats.at("x_row").stochastic);
}
