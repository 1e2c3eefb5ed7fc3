#include "core/recipe_overrides.h"

#include <array>
#include <utility>

#include "precision/error.h"

namespace nibble::core {
namespace {

std::string trim(const std::string& s) {
  const size_t a = s.find_first_not_of(" \t");
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(" \t") - a + 1);
}

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  for (;;) {
    const size_t comma = text.find(',', start);
    out.push_back(trim(text.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

bool parse_bool(const RecipeOverride& o) {
  if (o.value == "true") return true;
  if (o.value == "false") return false;
  throw InvalidArgument("'" + o.text + "': " + o.field + " takes true or false, not '" + o.value + "'");
}

// The copies an operand name stands for.
std::vector<std::pair<const char*, OperandSpec Recipe::*>> copies_of(const std::string& operand) {
  static const std::array<std::pair<const char*, OperandSpec Recipe::*>, 6> all = {{{"x_row", &Recipe::x_row},
                                                                                    {"x_col", &Recipe::x_col},
                                                                                    {"w_row", &Recipe::w_row},
                                                                                    {"w_col", &Recipe::w_col},
                                                                                    {"dy_row", &Recipe::dy_row},
                                                                                    {"dy_col", &Recipe::dy_col}}};
  std::vector<std::pair<const char*, OperandSpec Recipe::*>> out;
  for (const auto& c : all) {
    const std::string name = c.first;
    if (name == operand || name.substr(0, name.find('_')) == operand) out.push_back(c);
  }
  return out;
}

void apply_one(Recipe& r, const RecipeOverride& o) {
  for (const auto& [copy, member] : copies_of(o.operand)) {
    OperandSpec& spec = r.*member;
    const std::string where = "'" + o.text + "': " + copy + " of recipe '" + r.name + "'";
    if (o.field == "quantized") {
      if (parse_bool(o)) {
        if (!spec.quantized)
          throw InvalidArgument(where + " is BF16; quantized = true cannot choose a format (use another preset)");
      } else {
        spec = OperandSpec{};  // high precision: rounded to BF16
      }
      continue;
    }
    if (!spec.quantized) throw InvalidArgument(where + " is BF16, so " + o.field + " does not apply");
    precision::QuantizeOptions& q = spec.options;
    if (o.field == "rounding") {
      if (o.value == "nearest")
        q.rounding = precision::Rounding::kNearestEven;
      else if (o.value == "stochastic")
        q.rounding = precision::Rounding::kStochastic;
      else
        throw InvalidArgument("'" + o.text + "': rounding takes nearest or stochastic, not '" + o.value + "'");
    } else if (o.field == "rht") {
      const bool on = parse_bool(o);
      const bool columnwise = std::string(copy).ends_with("_col");
      if (on && (q.scheme != precision::Scheme::kNVFP4 || !columnwise))
        throw InvalidArgument(where + " is " + precision::scheme_name(q.scheme) + (columnwise ? "" : " (rowwise)") +
                              "; rht = true applies to NVFP4 1x16 columnwise copies only (x_col, dy_col)");
      q.rht = on;
    } else if (o.field == "scaling_2d") {
      const bool on = parse_bool(o);
      if (q.scheme != precision::Scheme::kNVFP4 && q.scheme != precision::Scheme::kNVFP4_2D)
        throw InvalidArgument(where + " is " + precision::scheme_name(q.scheme) +
                              "; scaling_2d applies to NVFP4 copies only");
      if (on && q.rht)
        throw InvalidArgument(where + " has the random Hadamard transform, which takes 1x16 blocks: set " +
                              std::string(copy) + ".rht=false first");
      q.scheme = on ? precision::Scheme::kNVFP4_2D : precision::Scheme::kNVFP4;
    } else {
      throw InvalidArgument("'" + o.text + "': unknown field '" + o.field +
                            "'; valid: quantized, rounding, rht, scaling_2d");
    }
  }
}

}  // namespace

std::vector<RecipeOverride> parse_recipe_overrides(const std::string& text) {
  std::vector<RecipeOverride> out;
  if (trim(text).empty()) return out;
  for (const std::string& item : split_commas(text)) {
    const size_t dot = item.find('.'), eq = item.find('=');
    if (item.empty() || dot == std::string::npos || eq == std::string::npos || dot > eq)
      throw InvalidArgument("'" + item + "' is not <operand>.<field>=<value> (e.g. dy.rounding=nearest)");
    RecipeOverride o{trim(item.substr(0, dot)), trim(item.substr(dot + 1, eq - dot - 1)), trim(item.substr(eq + 1)),
                     item};
    if (copies_of(o.operand).empty())
      throw InvalidArgument("'" + item + "': unknown operand '" + o.operand +
                            "'; valid: x, w, dy, x_row, x_col, w_row, w_col, dy_row, dy_col");
    if (o.field != "quantized" && o.field != "rounding" && o.field != "rht" && o.field != "scaling_2d")
      throw InvalidArgument("'" + item + "': unknown field '" + o.field +
                            "'; valid: quantized, rounding, rht, scaling_2d");
    // Values are checked here too, so a mistake is found even where no layer would apply it.
    if (o.field == "rounding" && o.value != "nearest" && o.value != "stochastic")
      throw InvalidArgument("'" + item + "': rounding takes nearest or stochastic, not '" + o.value + "'");
    if (o.field != "rounding") (void)parse_bool(o);
    out.push_back(std::move(o));
  }
  return out;
}

Recipe apply_recipe_overrides(Recipe recipe, const std::vector<RecipeOverride>& overrides) {
  if (overrides.empty()) return recipe;
  for (const RecipeOverride& o : overrides) apply_one(recipe, o);
  recipe.name += "+overrides";
  recipe.validate();
  return recipe;
}

std::vector<std::string> parse_recipe_names(const std::string& text, const std::string& entry) {
  if (trim(text).empty()) return {};
  std::vector<std::string> names = split_commas(text);
  for (size_t i = 0; i < names.size(); ++i) {
    try {
      recipe_preset(names[i]).validate();
    } catch (const std::exception& e) {
      throw InvalidArgument(entry + " " + std::to_string(i) + ": '" + names[i] + "': " + e.what());
    }
  }
  return names;
}

std::vector<std::string> parse_layer_recipes(const std::string& text, int64_t layers) {
  if (trim(text).empty()) return {};
  if (const size_t n = split_commas(text).size(); static_cast<int64_t>(n) != layers)
    throw InvalidArgument("lists " + std::to_string(n) + " recipes for model.layers = " + std::to_string(layers) +
                          "; give one per layer (or none)");
  return parse_recipe_names(text, "layer");
}

}  // namespace nibble::core
