#include "core/model/gpt_config.h"

#include <cmath>

#include "core/precision_ladder.h"
#include "core/recipe.h"
#include "core/recipe_overrides.h"
#include "precision/error.h"

namespace nibble::core::model {
namespace {

void require(bool ok, const std::string& key, const std::string& value, const std::string& valid) {
  if (!ok) throw InvalidArgument("model." + key + " = " + value + " is invalid: " + valid);
}

}  // namespace

void GptConfig::validate() const {
  require(vocab >= 2 && vocab <= 65536, "vocab", std::to_string(vocab),
          "must be in [2, 65536] (tokens are stored as uint16)");
  require(hidden >= 1, "hidden", std::to_string(hidden), "must be >= 1");
  require(layers >= 1, "layers", std::to_string(layers), "must be >= 1");
  require(heads >= 1 && hidden % heads == 0, "heads", std::to_string(heads),
          "must be >= 1 and divide model.hidden = " + std::to_string(hidden));
  require(head_dim() % 2 == 0, "heads", std::to_string(heads),
          "hidden / heads = " + std::to_string(head_dim()) + " must be even (RoPE rotates pairs)");
  require(ffn_hidden >= 0, "ffn_hidden", std::to_string(ffn_hidden), "must be >= 0 (0 = 8/3 * hidden)");
  require(seq_len >= 2, "seq_len", std::to_string(seq_len), "must be >= 2");
  require(rope_theta > 0, "rope_theta", std::to_string(rope_theta), "must be > 0");
  require(norm_eps > 0, "norm_eps", std::to_string(norm_eps), "must be > 0");
  require(init_std > 0, "init_std", std::to_string(init_std), "must be > 0");
  require(bf16_first >= 0 && bf16_first <= layers, "bf16_first", std::to_string(bf16_first),
          "must be in [0, model.layers = " + std::to_string(layers) + "]");
  require(bf16_last >= 0 && bf16_last <= layers, "bf16_last", std::to_string(bf16_last),
          "must be in [0, model.layers = " + std::to_string(layers) + "]");
  require(compress_activations == "auto" || compress_activations == "true" || compress_activations == "false",
          "compress_activations", "\"" + compress_activations + "\"",
          "valid: \"auto\" (as each layer's recipe says), \"true\", \"false\"");
  require(recompute == "none" || recompute == "selective" || recompute == "full", "recompute",
          "\"" + recompute + "\"",
          "valid: \"none\", \"selective\" (the attention core), \"full\" (every transformer layer)");
  require(attention_precision == "fp32" || attention_precision == "bf16", "attention_precision",
          "\"" + attention_precision + "\"", "valid: \"fp32\", \"bf16\" (the attention core's inputs and arithmetic)");
  std::vector<std::string> per_layer;
  try {
    per_layer = parse_layer_recipes(layer_recipes, layers);
  } catch (const std::exception& e) {
    throw InvalidArgument("model.layer_recipes = \"" + layer_recipes + "\" is invalid: " + e.what());
  }
  require(per_layer.empty() || (bf16_first == 0 && bf16_last == 0), "layer_recipes", "\"" + layer_recipes + "\"",
          "a per-layer list replaces model.bf16_first / bf16_last (set them to 0, or write bf16 in the list)");
  try {
    const std::vector<RecipeOverride> overrides = parse_recipe_overrides(recipe_overrides);
    bool applied = false;
    for (int64_t i = 0; i < layers && !overrides.empty(); ++i)
      applied = layer_recipe(*this, i).name.ends_with("+overrides") || applied;
    if (!overrides.empty() && !applied)
      throw InvalidArgument("no transformer layer has a quantized recipe to apply them to (model.recipe = \"" +
                            recipe + "\"" + (per_layer.empty() ? "" : ", model.layer_recipes") + ")");
  } catch (const std::exception& e) {
    throw InvalidArgument("model.recipe_overrides = \"" + recipe_overrides + "\" is invalid: " + e.what());
  }
  require(precision_policy == "fixed" || precision_policy == "adaptive", "precision_policy",
          "\"" + precision_policy + "\"",
          "valid: \"fixed\", \"adaptive\" (raise a Linear's precision from its statistics)");
  try {
    parse_precision_ladder(adaptive_ladder);
  } catch (const std::exception& e) {
    throw InvalidArgument("model.adaptive_ladder = \"" + adaptive_ladder + "\" is invalid: " + e.what());
  }
  require(std::isfinite(adaptive_snr_db), "adaptive_snr_db", std::to_string(adaptive_snr_db), "must be finite (dB)");
  require(adaptive_patience >= 1, "adaptive_patience", std::to_string(adaptive_patience),
          "must be >= 1 (measurements in a row below model.adaptive_snr_db, or probes in a row)");
  require(adaptive_measure == "snr" || adaptive_measure == "loss_probe", "adaptive_measure",
          "\"" + adaptive_measure + "\"",
          "valid: \"snr\" (a Linear's worst copy against model.adaptive_snr_db), \"loss_probe\" (the block whose "
          "raise lowers a probe loss the most)");
  // Negative thresholds are allowed: the best block then climbs even when raising it costs loss (tests use it).
  require(std::isfinite(adaptive_probe_gain), "adaptive_probe_gain", std::to_string(adaptive_probe_gain),
          "must be finite (% of the probe loss)");
  require(adaptive_probe_batches >= 1, "adaptive_probe_batches", std::to_string(adaptive_probe_batches),
          "must be >= 1 (training batches of train.global_batch sequences per probe)");
  for (const auto& [key, name] : {std::pair{"recipe", recipe}, std::pair{"lm_head_recipe", lm_head_recipe}}) {
    try {
      recipe_preset(name).validate();
    } catch (const std::exception& e) {
      throw InvalidArgument(std::string("model.") + key + " = \"" + name + "\" is invalid: " + e.what());
    }
  }
}

std::string layer_recipe_name(const GptConfig& config, int64_t index) {
  const std::vector<std::string> per_layer = parse_layer_recipes(config.layer_recipes, config.layers);
  if (!per_layer.empty()) return per_layer.at(static_cast<size_t>(index));
  if (index < config.bf16_first || index >= config.layers - config.bf16_last) return "bf16";
  return config.recipe;
}

Recipe layer_recipe(const GptConfig& config, int64_t index) {
  Recipe r = recipe_preset(layer_recipe_name(config, index));
  const bool quantized = r.x_row.quantized || r.w_row.quantized || r.dy_row.quantized || r.w_col.quantized ||
                         r.dy_col.quantized || r.x_col.quantized;
  if (quantized) r = apply_recipe_overrides(std::move(r), parse_recipe_overrides(config.recipe_overrides));
  r.reproducible_sums = config.reproducible_sums;
  return r;
}

}  // namespace nibble::core::model
