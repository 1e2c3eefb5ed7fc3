#include "core/precision_ladder.h"

#include <algorithm>

#include "core/recipe_overrides.h"
#include "precision/error.h"

namespace nibble::core {

std::vector<int> copy_bits(const Recipe& r) {
  std::vector<int> bits;
  for (const OperandSpec* s : {&r.x_row, &r.w_row, &r.dy_row, &r.w_col, &r.dy_col, &r.x_col})
    bits.push_back(s->quantized ? s->options.element.bits() : 16);
  return bits;
}

bool more_precise(const Recipe& upper, const Recipe& lower) {
  const std::vector<int> u = copy_bits(upper), l = copy_bits(lower);
  bool raised = false;
  for (size_t i = 0; i < u.size(); ++i) {
    if (u[i] < l[i]) return false;
    raised = raised || u[i] > l[i];
  }
  return raised;
}

bool four_bit(const Recipe& r) {
  const std::vector<int> bits = copy_bits(r);
  return *std::min_element(bits.begin(), bits.end()) < 16 &&
         std::all_of(bits.begin(), bits.end(), [](int b) { return b <= 4 || b == 16; });
}

std::vector<std::string> parse_precision_ladder(const std::string& text) {
  const std::vector<std::string> names = parse_recipe_names(text, "entry");
  if (names.empty()) throw InvalidArgument("the ladder is empty; list the presets to climb, e.g. \"mxfp8, bf16\"");
  for (size_t i = 1; i < names.size(); ++i)
    if (!more_precise(recipe_preset(names[i]), recipe_preset(names[i - 1])))
      throw InvalidArgument("entry " + std::to_string(i) + ": '" + names[i] + "' is not more precise than '" +
                            names[i - 1] +
                            "' before it (every operand copy at least as many element bits, some "
                            "more); order the presets from least to most precise");
  return names;
}

std::vector<Recipe> linear_ladder(const Recipe& start, const std::vector<std::string>& ladder, bool reproducible_sums) {
  std::vector<Recipe> rungs = {start};
  for (const std::string& name : ladder) {
    Recipe r = recipe_preset(name);
    if (!more_precise(r, rungs.back())) continue;
    r.reproducible_sums = reproducible_sums;
    rungs.push_back(std::move(r));
  }
  return rungs;
}

}  // namespace nibble::core
