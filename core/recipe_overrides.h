#pragma once
// Recipes from the config, on top of the presets (core/recipe.h): per-operand overrides and a per-layer list.
//
// model.recipe_overrides: comma-separated "<operand>.<field>=<value>" items, applied in order to every
// quantized transformer layer's recipe (bf16 layers and the LM head keep their own), e.g.
//   "dy.rounding=nearest, x_col.rht=false, w.scaling_2d=false"   (the NVFP4 paper's ablations)
//   operand  x, w, dy (both of that tensor's copies) or one copy: x_row, x_col, w_row, w_col, dy_row, dy_col
//   field    quantized  false keeps the operand in BF16 (true cannot invent a format: use a preset)
//            rounding   nearest | stochastic
//            rht        true | false: the random Hadamard transform of an NVFP4 columnwise copy (x_col, dy_col)
//            scaling_2d true | false: an NVFP4 copy's scales per 16x16 tile (true) or per 1x16 block (false)
// model.layer_recipes: comma-separated preset names, one per transformer layer ("" = model.recipe for all,
// then bf16_first / bf16_last).
// Every mistake is an InvalidArgument naming the item and what is valid. Pure: no torch.
#include <cstdint>
#include <string>
#include <vector>

#include "core/recipe.h"

namespace nibble::core {

struct RecipeOverride {
  std::string operand;  // as written: "dy", "x_col", ...
  std::string field;    // "quantized", "rounding", "rht", "scaling_2d"
  std::string value;
  std::string text;     // the item as written, for messages
};

std::vector<RecipeOverride> parse_recipe_overrides(const std::string& text);

// `recipe` with the overrides applied (name "<preset>+overrides"), validated. Throws InvalidArgument naming
// the item that cannot apply to this recipe (e.g. scaling_2d on an MXFP8 copy).
Recipe apply_recipe_overrides(Recipe recipe, const std::vector<RecipeOverride>& overrides);

// Comma-separated preset names (spaces around each ignored; "" = none), each checked with recipe_preset. Throws
// InvalidArgument "<entry> <index>: '<name>': <why>".
std::vector<std::string> parse_recipe_names(const std::string& text, const std::string& entry);

// The per-layer list: `layers` preset names (each checked with recipe_preset), or empty for "".
std::vector<std::string> parse_layer_recipes(const std::string& text, int64_t layers);

}  // namespace nibble::core
