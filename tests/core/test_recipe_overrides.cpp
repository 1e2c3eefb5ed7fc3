// core/recipe_overrides.h: per-operand overrides change exactly the fields they name, on exactly the copies they
// name; every mistake is refused naming the item; the per-layer list is checked against model.layers.
#include <gtest/gtest.h>

#include "core/recipe_overrides.h"
#include "precision/error.h"

namespace {

using nibble::core::apply_recipe_overrides;
using nibble::core::parse_layer_recipes;
using nibble::core::parse_recipe_overrides;
using nibble::core::Recipe;
using nibble::core::recipe_preset;
using nibble::precision::Rounding;
using nibble::precision::Scheme;

std::string refusal(const std::string& recipe, const std::string& overrides) {
  try {
    apply_recipe_overrides(recipe_preset(recipe), parse_recipe_overrides(overrides));
  } catch (const nibble::InvalidArgument& e) {
    return e.what();
  }
  return "";
}

void expect_refused(const std::string& recipe, const std::string& overrides, const std::string& part) {
  const std::string msg = refusal(recipe, overrides);
  EXPECT_NE(msg.find(part), std::string::npos) << "expected '" << part << "' in: '" << msg << "'";
}

}  // namespace

TEST(RecipeOverrides, EmptyTextChangesNothing) {
  EXPECT_TRUE(parse_recipe_overrides("").empty());
  EXPECT_TRUE(parse_recipe_overrides("  ").empty());
  const Recipe r = apply_recipe_overrides(recipe_preset("nvfp4"), {});
  EXPECT_EQ(r.name, "nvfp4");
}

TEST(RecipeOverrides, RoundingOnBothCopiesOfAnOperand) {
  const Recipe base = recipe_preset("nvfp4");
  ASSERT_EQ(base.dy_row.options.rounding, Rounding::kStochastic);
  const Recipe r = apply_recipe_overrides(base, parse_recipe_overrides("dy.rounding=nearest"));
  EXPECT_EQ(r.name, "nvfp4+overrides");
  EXPECT_EQ(r.dy_row.options.rounding, Rounding::kNearestEven);
  EXPECT_EQ(r.dy_col.options.rounding, Rounding::kNearestEven);
  EXPECT_TRUE(r.dy_col.options.rht);  // untouched
  EXPECT_EQ(r.x_col.options.rounding, base.x_col.options.rounding);
  EXPECT_EQ(r.w_row.options.scheme, Scheme::kNVFP4_2D);
}

TEST(RecipeOverrides, OneCopyAndTheNvfp4Ablations) {
  const Recipe r = apply_recipe_overrides(
      recipe_preset("nvfp4"), parse_recipe_overrides(" x_col.rht = false, dy_col.rht=false ,w.scaling_2d=false"));
  EXPECT_FALSE(r.x_col.options.rht);
  EXPECT_FALSE(r.dy_col.options.rht);
  EXPECT_EQ(r.w_row.options.scheme, Scheme::kNVFP4);
  EXPECT_EQ(r.w_col.options.scheme, Scheme::kNVFP4);
  const Recipe one = apply_recipe_overrides(recipe_preset("nvfp4"), parse_recipe_overrides("w_col.scaling_2d=false"));
  EXPECT_EQ(one.w_row.options.scheme, Scheme::kNVFP4_2D);
  EXPECT_EQ(one.w_col.options.scheme, Scheme::kNVFP4);
  const Recipe sr = apply_recipe_overrides(recipe_preset("mxfp8"), parse_recipe_overrides("dy_row.rounding=stochastic"));
  EXPECT_EQ(sr.dy_row.options.rounding, Rounding::kStochastic);
  EXPECT_EQ(sr.dy_col.options.rounding, Rounding::kNearestEven);
}

TEST(RecipeOverrides, ABf16WgradOperandWithAnUnrotatedPartner) {
  const Recipe r =
      apply_recipe_overrides(recipe_preset("nvfp4"), parse_recipe_overrides("x.quantized=false,dy_col.rht=false"));
  EXPECT_FALSE(r.x_col.quantized);
  EXPECT_TRUE(r.dy_col.quantized);
  EXPECT_FALSE(r.dy_col.options.rht);
}

TEST(RecipeOverrides, QuantizedFalseKeepsAnOperandInBf16) {
  const Recipe r = apply_recipe_overrides(recipe_preset("fp8_current"), parse_recipe_overrides("dy.quantized=false"));
  EXPECT_FALSE(r.dy_row.quantized);
  EXPECT_FALSE(r.dy_col.quantized);
  EXPECT_TRUE(r.x_row.quantized);
  EXPECT_TRUE(r.w_col.quantized);
}

TEST(RecipeOverrides, RefusesEachMistakeNamingTheItem) {
  expect_refused("nvfp4", "dy.rounding", "'dy.rounding' is not <operand>.<field>=<value>");
  expect_refused("nvfp4", "z.rounding=nearest", "unknown operand 'z'; valid: x, w, dy, x_row");
  expect_refused("nvfp4", "dy.colour=red", "unknown field 'colour'; valid: quantized, rounding, rht, scaling_2d");
  expect_refused("nvfp4", "dy.rounding=up", "rounding takes nearest or stochastic, not 'up'");
  expect_refused("nvfp4", "x_col.rht=maybe", "rht takes true or false, not 'maybe'");
  expect_refused("mxfp8", "w.scaling_2d=true", "w_row of recipe 'mxfp8' is mxfp8; scaling_2d applies to NVFP4");
  expect_refused("nvfp4", "x_row.rht=true", "applies to NVFP4 1x16 columnwise copies only");
  expect_refused("nvfp4", "x_col.scaling_2d=true", "has the random Hadamard transform, which takes 1x16 blocks");
  expect_refused("nvfp4", "x_col.rht=false", "the RHT must be on both wgrad operands");  // Recipe::validate
  expect_refused("nvfp4", "x_col.rht=false", "dy_col has it and x_col has not: set dy_col.rht=false too");
  // A BF16 wgrad operand is not rotated: its quantized partner must drop the RHT as well.
  expect_refused("nvfp4", "x.quantized=false", "dy_col has it and x_col is BF16 (never rotated): set dy_col.rht=false");
  expect_refused("nvfp4", "dy.quantized=false", "x_col has it and dy_col is BF16 (never rotated): set x_col.rht=false");
  expect_refused("fp8_current", "dy.quantized=false,dy.rounding=stochastic", "dy_row of recipe 'fp8_current' is BF16");
  expect_refused("fp8_current", "dy.quantized=false,dy.quantized=true", "quantized = true cannot choose a format");
}

TEST(LayerRecipes, OnePresetPerLayer) {
  EXPECT_TRUE(parse_layer_recipes("", 4).empty());
  EXPECT_EQ(parse_layer_recipes("bf16, nvfp4,nvfp4 ,bf16", 4),
            (std::vector<std::string>{"bf16", "nvfp4", "nvfp4", "bf16"}));
  auto refused = [](const std::string& text, int64_t layers) {
    try {
      parse_layer_recipes(text, layers);
    } catch (const nibble::InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(refused("bf16,nvfp4", 3).find("lists 2 recipes for model.layers = 3"), std::string::npos);
  EXPECT_NE(refused("bf16,nvfp5", 2).find("layer 1: 'nvfp5'"), std::string::npos);
}
