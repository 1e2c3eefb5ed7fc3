// core/precision_ladder.h and core/adaptive_precision.h: the ladder is checked for order, each Linear's rungs are
// the entries above its own recipe, decisions follow hand-made figures (threshold, patience, reset, top rung,
// non-finite gradients nearest the loss), the state round-trips; LinearState::set_recipe makes a Linear compute
// exactly what a fresh Linear of the new recipe computes. The loss probe's decisions (units, the block that gains
// most, threshold, patience, ties, top rungs) on hand-made gains, and LinearState::Snapshot putting a layer back
// exactly after a probe's forwards under another recipe.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>

#include "core/adaptive_precision.h"
#include "core/linear.h"
#include "core/precision_ladder.h"
#include "precision/error.h"

namespace {

using nibble::core::AdaptivePrecision;
using nibble::core::linear_ladder;
using nibble::core::parse_precision_ladder;
using nibble::core::PrecisionSwitch;
using nibble::core::Recipe;
using nibble::core::recipe_preset;

std::string refusal(const std::string& ladder) {
  try {
    parse_precision_ladder(ladder);
  } catch (const nibble::InvalidArgument& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> names(const std::vector<Recipe>& rungs) {
  std::vector<std::string> out;
  for (const Recipe& r : rungs) out.push_back(r.name);
  return out;
}

// Three nvfp4 Linears "a", "b", "c" on the ladder mxfp8 -> bf16; 15 dB, patience 2.
AdaptivePrecision three_linears() {
  const Recipe nv = recipe_preset("nvfp4");
  return AdaptivePrecision({{"a", nv}, {"b", nv}, {"c", nv}}, parse_precision_ladder("mxfp8, bf16"), 15.0, 2, false);
}

}  // namespace

TEST(PrecisionLadder, OrderedPresetsAreAccepted) {
  EXPECT_EQ(parse_precision_ladder(" mxfp8 , bf16"), (std::vector<std::string>{"mxfp8", "bf16"}));
  EXPECT_EQ(parse_precision_ladder("nvfp4,fp8_current,bf16"),
            (std::vector<std::string>{"nvfp4", "fp8_current", "bf16"}));
}

TEST(PrecisionLadder, UnknownEmptyAndUnorderedAreRefused) {
  EXPECT_NE(refusal("mxfp8, fp7").find("entry 1: 'fp7'"), std::string::npos) << refusal("mxfp8, fp7");
  EXPECT_NE(refusal("").find("the ladder is empty"), std::string::npos);
  EXPECT_NE(refusal("bf16, mxfp8").find("entry 1: 'mxfp8' is not more precise than 'bf16'"), std::string::npos)
      << refusal("bf16, mxfp8");
  // Same bits in every copy (E4M3 / E5M2 vs E4M3): not a raise.
  EXPECT_NE(refusal("fp8_delayed, mxfp8").find("'mxfp8' is not more precise than 'fp8_delayed'"), std::string::npos);
  EXPECT_NE(refusal("mxfp8, mxfp8").find("is not more precise"), std::string::npos);
}

TEST(PrecisionLadder, EachLinearClimbsOnlyTheRungsAboveItsRecipe) {
  const std::vector<std::string> ladder = {"mxfp8", "bf16"};
  EXPECT_EQ(names(linear_ladder(recipe_preset("nvfp4"), ladder, false)),
            (std::vector<std::string>{"nvfp4", "mxfp8", "bf16"}));
  EXPECT_EQ(names(linear_ladder(recipe_preset("mxfp8"), ladder, false)), (std::vector<std::string>{"mxfp8", "bf16"}));
  EXPECT_EQ(names(linear_ladder(recipe_preset("fp8_delayed"), ladder, false)),
            (std::vector<std::string>{"fp8_delayed", "bf16"}));
  EXPECT_EQ(names(linear_ladder(recipe_preset("bf16"), ladder, false)), (std::vector<std::string>{"bf16"}));
  // The rungs carry the model's reproducible_sums (tp runs then round as one rank).
  const auto rungs = linear_ladder(recipe_preset("nvfp4"), ladder, true);
  EXPECT_TRUE(rungs[1].reproducible_sums && rungs[2].reproducible_sums);
}

TEST(PrecisionLadder, FourBitRecipes) {
  EXPECT_TRUE(nibble::core::four_bit(recipe_preset("nvfp4")));
  EXPECT_TRUE(nibble::core::four_bit(recipe_preset("mxfp4_quartet")));
  EXPECT_FALSE(nibble::core::four_bit(recipe_preset("mxfp8")));
  EXPECT_FALSE(nibble::core::four_bit(recipe_preset("bf16")));
}

TEST(AdaptivePrecision, RaisesAfterPatienceMeasurementsBelowTheThreshold) {
  AdaptivePrecision p = three_linears();
  EXPECT_TRUE(p.measured({{"a", 14.0}, {"b", 16.0}, {"c", 15.0}}).empty());  // 15.0 is not below 15
  EXPECT_EQ(p.linears()[0].below, 1);
  EXPECT_EQ(p.linears()[2].below, 0);
  const std::vector<PrecisionSwitch> s = p.measured({{"a", 14.5}, {"b", 14.0}, {"c", 20.0}});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].linear, "a");
  EXPECT_EQ(s[0].from, "nvfp4");
  EXPECT_EQ(s[0].to, "mxfp8");
  EXPECT_NE(s[0].reason.find("worst SNR < 15.00 dB in 2 measurement(s) in a row, latest 14.50 dB"), std::string::npos)
      << s[0].reason;
  EXPECT_EQ(p.linears()[0].recipe().name, "mxfp8");
  EXPECT_EQ(p.linears()[0].below, 0);  // the new rung is judged by its own figures
  EXPECT_EQ(p.linears()[1].below, 1);
  // A measurement at or above the threshold resets the count; a Linear not measured keeps it.
  EXPECT_TRUE(p.measured({{"a", 14.0}, {"b", 30.0}}).empty());
  EXPECT_EQ(p.linears()[1].below, 0);
  EXPECT_TRUE(p.measured({{"b", 1.0}}).empty());
  EXPECT_EQ(p.linears()[0].below, 1);
  const auto up = p.measured({{"a", 14.0}});
  ASSERT_EQ(up.size(), 1u);
  EXPECT_EQ(up[0].from + "->" + up[0].to, "mxfp8->bf16");
  // On the top rung nothing moves any more.
  EXPECT_TRUE(p.measured({{"a", 0.0}}).empty());
  EXPECT_TRUE(p.measured({{"a", 0.0}}).empty());
  EXPECT_EQ(p.linears()[0].recipe().name, "bf16");
  EXPECT_EQ(p.four_bit_count(), 2);
}

TEST(AdaptivePrecision, NonFiniteGradientsRaiseTheFlaggedLinearNearestTheLoss) {
  AdaptivePrecision p = three_linears();
  const auto s = p.nonfinite({true, true, false});
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s[0].linear, "b");
  EXPECT_EQ(s[0].reason, "non-finite weight gradient");
  EXPECT_EQ(p.linears()[0].rung, 0u);
  EXPECT_EQ(p.linears()[1].recipe().name, "mxfp8");
  EXPECT_TRUE(p.nonfinite({false, false, false}).empty());
  p.nonfinite({false, true, false});
  EXPECT_EQ(p.linears()[1].recipe().name, "bf16");
  EXPECT_TRUE(p.nonfinite({false, true, false}).empty());  // already on top: only the step skip remains
  EXPECT_THROW(p.nonfinite({true}), nibble::InvalidArgument);
}

TEST(AdaptivePrecision, StateRoundTripsAndContinuesTheSameWay) {
  AdaptivePrecision a = three_linears(), b = three_linears();
  a.measured({{"a", 10.0}, {"b", 10.0}});
  a.measured({{"a", 10.0}, {"c", 10.0}});
  b.set_state(a.state());
  EXPECT_EQ(b.state(), a.state());
  EXPECT_EQ(b.linears()[0].recipe().name, "mxfp8");
  const std::map<std::string, double> next = {{"a", 1.0}, {"b", 1.0}, {"c", 1.0}};
  const auto sa = a.measured(next), sb = b.measured(next);
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) EXPECT_EQ(sa[i].linear + sa[i].to, sb[i].linear + sb[i].to);
  EXPECT_EQ(b.state(), a.state());
  EXPECT_THROW(b.set_state({0, 0}), nibble::InvalidArgument);
  EXPECT_THROW(b.set_state({3, 0, 0, 0, 0, 0}), nibble::InvalidArgument);  // nvfp4's ladder has 3 rungs: 0..2
}

TEST(LinearStateSetRecipe, ComputesWhatAFreshLinearOfTheNewRecipeComputes) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({32, 64}), w = torch::randn({48, 64}) * 0.1;
  for (const char* to : {"mxfp8", "bf16", "fp8_delayed"}) {
    auto switched = std::make_shared<nibble::core::LinearState>(recipe_preset("nvfp4"), "l", 7);
    (void)nibble::core::linear_forward(x, w, std::nullopt, switched);  // fills the nvfp4 weight cache
    switched->set_recipe(recipe_preset(to));
    auto fresh = std::make_shared<nibble::core::LinearState>(recipe_preset(to), "l", 7);
    fresh->sr_counter = switched->sr_counter;  // (the counter goes on; the stream is the layer's own)
    EXPECT_EQ(switched->ds_x != nullptr, fresh->ds_x != nullptr) << to;
    const torch::Tensor a = nibble::core::linear_forward(x, w, std::nullopt, switched);
    const torch::Tensor b = nibble::core::linear_forward(x, w, std::nullopt, fresh);
    EXPECT_TRUE(torch::equal(a, b)) << "nvfp4 -> " << to;
    EXPECT_EQ(switched->recipe.name, to);
  }
}

namespace {

// Two blocks of two nvfp4 Linears and a bf16 LM head (on its top rung already); ladder mxfp8 -> bf16, patience 2.
AdaptivePrecision two_blocks() {
  const Recipe nv = recipe_preset("nvfp4");
  return AdaptivePrecision({{"layers.0.qkv", nv},
                            {"layers.0.out", nv},
                            {"layers.1.qkv", nv},
                            {"layers.1.out", nv},
                            {"lm_head", recipe_preset("bf16")}},
                           parse_precision_ladder("mxfp8, bf16"), 15.0, 2, false);
}

constexpr double kNotProbed = std::numeric_limits<double>::quiet_NaN();

}  // namespace

TEST(AdaptivePrecisionProbe, UnitsAreTheBlocksAndTheHead) {
  const AdaptivePrecision p = two_blocks();
  EXPECT_EQ(p.units(), (std::vector<std::vector<size_t>>{{0, 1}, {2, 3}, {4}}));
  EXPECT_TRUE(p.climbable(p.units()[0]));
  EXPECT_FALSE(p.climbable(p.units()[2]));  // a bf16 head has one rung
  EXPECT_EQ(nibble::core::probe_unit("layers.12.down"), "layers.12");
  EXPECT_EQ(nibble::core::probe_unit("lm_head"), "lm_head");
}

TEST(AdaptivePrecisionProbe, RaisesTheBlockThatGainsMostForPatienceProbes) {
  AdaptivePrecision p = two_blocks();
  // Block 1 gains most but under the threshold: nothing counts.
  EXPECT_TRUE(p.probed({0.01, 0.04, kNotProbed}, 0.05).empty());
  for (const auto& l : p.linears()) EXPECT_EQ(l.below, 0) << l.name;
  // Block 0 leads above the threshold: its count (both Linears) goes up, block 1's stays 0.
  EXPECT_TRUE(p.probed({0.2, 0.1, kNotProbed}, 0.05).empty());
  EXPECT_EQ(p.linears()[0].below, 1);
  EXPECT_EQ(p.linears()[1].below, 1);
  EXPECT_EQ(p.linears()[2].below, 0);
  // Block 1 leads now: block 0's count restarts.
  EXPECT_TRUE(p.probed({0.2, 0.3, kNotProbed}, 0.05).empty());
  EXPECT_EQ(p.linears()[0].below, 0);
  EXPECT_EQ(p.linears()[2].below, 1);
  // Block 1 again: both its Linears go up one rung, nothing else moves.
  const auto s = p.probed({0.2, 0.25, kNotProbed}, 0.05);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].linear, "layers.1.qkv");
  EXPECT_EQ(s[1].linear, "layers.1.out");
  EXPECT_EQ(s[0].from + "->" + s[0].to, "nvfp4->mxfp8");
  EXPECT_NE(s[0].reason.find("loss probe: raising layers.1 lowered the loss the most, by >= 0.050% in 2 probe(s) "
                             "in a row, latest 0.250%"),
            std::string::npos)
      << s[0].reason;
  EXPECT_EQ(p.linears()[0].recipe().name, "nvfp4");
  EXPECT_EQ(p.linears()[2].below, 0);  // the new rung is judged by new probes
  EXPECT_EQ(p.four_bit_count(), 2);
  // A tie goes to the first unit; a NaN gain (not probed) never leads; a negative threshold raises the best
  // unit even at a loss.
  EXPECT_TRUE(p.probed({0.1, 0.1, kNotProbed}, 0.05).empty());
  EXPECT_EQ(p.linears()[0].below, 1);
  EXPECT_EQ(p.linears()[2].below, 0);
  const auto forced = p.probed({-0.3, kNotProbed, kNotProbed}, -1.0);
  ASSERT_EQ(forced.size(), 2u);
  EXPECT_EQ(forced[0].linear, "layers.0.qkv");
  EXPECT_THROW(p.probed({0.1, 0.1}, 0.05), nibble::InvalidArgument);
}

TEST(AdaptivePrecisionProbe, ABlockOnItsTopRungIsNotAmongTheCandidates) {
  AdaptivePrecision p = two_blocks();
  for (int i = 0; i < 4; ++i) p.probed({1.0, 0.0, kNotProbed}, 0.05);  // block 0: nvfp4 -> mxfp8 -> bf16
  EXPECT_EQ(p.linears()[0].recipe().name, "bf16");
  EXPECT_FALSE(p.climbable(p.units()[0]));
  // Even a gain reported for it (a caller's mistake) does not make it lead: block 1 counts.
  EXPECT_TRUE(p.probed({5.0, 0.1, kNotProbed}, 0.05).empty());
  EXPECT_EQ(p.linears()[2].below, 1);
}

TEST(LinearStateSnapshot, RestoresEverythingAForwardAndASetRecipeChange) {
  torch::manual_seed(4);
  const torch::Tensor x = torch::randn({32, 64}, torch::requires_grad()), w = torch::randn({48, 64}) * 0.1;
  const torch::Tensor wp = w.clone().requires_grad_(true);
  // fp8_delayed: a forward records amaxes into the delayed-scaling history; SR gradients draw counters.
  auto probed = std::make_shared<nibble::core::LinearState>(recipe_preset("fp8_delayed"), "l", 7);
  auto untouched = std::make_shared<nibble::core::LinearState>(recipe_preset("fp8_delayed"), "l", 7);
  for (auto& s : {probed, untouched}) {
    nibble::core::linear_forward(x, wp, std::nullopt, s).sum().backward();
    s->end_step();
  }
  const auto saved = probed->snapshot();
  {
    torch::NoGradGuard no_grad;
    (void)nibble::core::linear_forward(x * 3, w, std::nullopt, probed);  // other amaxes into the history
    probed->set_recipe(recipe_preset("mxfp8"));
    (void)nibble::core::linear_forward(x, w, std::nullopt, probed);
  }
  probed->restore(saved);
  EXPECT_EQ(probed->recipe.name, "fp8_delayed");
  ASSERT_TRUE(probed->ds_x && untouched->ds_x);
  EXPECT_EQ(probed->ds_x->history(), untouched->ds_x->history());
  EXPECT_EQ(probed->sr_counter, untouched->sr_counter);
  // The next training step computes exactly what the layer that never saw the probe computes.
  for (int step = 0; step < 2; ++step) {
    torch::Tensor ya = nibble::core::linear_forward(x, wp, std::nullopt, probed);
    torch::Tensor yb = nibble::core::linear_forward(x, wp, std::nullopt, untouched);
    EXPECT_TRUE(torch::equal(ya, yb)) << "step " << step;
    probed->end_step();
    untouched->end_step();
  }
  EXPECT_EQ(probed->ds_w->scale(), untouched->ds_w->scale());
}
