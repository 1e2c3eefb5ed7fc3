#pragma once
// The ladder of model.precision_policy = "adaptive" (launch/precision_policy.h): a Linear climbs, one rung at a
// time, from its starting recipe through the entries of model.adaptive_ladder that are more precise than it.
//
// "More precise" is a partial order on recipes, taken per GEMM operand copy: no copy gets fewer element bits and
// at least one gets more (a copy the recipe leaves unquantized counts as BF16's 16 bits). So nvfp4 < mxfp8 < bf16,
// while fp8_delayed and mxfp8 (8 bits in every copy) are not ordered and cannot follow each other: a rung that
// is not above the one below it would not raise anything, and one that lowers some copy is not a raise.
// Pure: no torch.
#include <string>
#include <vector>

#include "core/recipe.h"

namespace nibble::core {

// The element bits of each of the six copies (x_row, w_row, dy_row, w_col, dy_col, x_col); 16 when unquantized.
std::vector<int> copy_bits(const Recipe& recipe);
// Whether `upper` is more precise than `lower` in the order above.
bool more_precise(const Recipe& upper, const Recipe& lower);
// The 4-bit question of the policy's summary: every quantized copy's element has at most 4 bits, and some copy is
// quantized.
bool four_bit(const Recipe& recipe);

// model.adaptive_ladder: comma-separated preset names, each more precise than the one before (e.g. "mxfp8, bf16").
// Throws InvalidArgument naming the entry that is unknown, repeated, or not above its predecessor.
std::vector<std::string> parse_precision_ladder(const std::string& text);

// A Linear's rungs: `start` (its configured recipe, overrides included), then each ladder preset more precise
// than `start`, with `reproducible_sums` as the model's. A Linear already at or above the top has one rung.
std::vector<Recipe> linear_ladder(const Recipe& start, const std::vector<std::string>& ladder, bool reproducible_sums);

}  // namespace nibble::core
