#include "launch/quantization_stats_log.h"

#include <map>
#include <span>

#include "core/quantization_stats.h"
#include "parallel/runtime.h"

namespace nibble::launch {
namespace {

// The roles in record order: the forward's copies, then the backward's.
constexpr const char* kRoles[] = {"x_row", "w_row", "x_col", "w_col", "dy_row", "dy_col"};
constexpr int kSums = core::QuantizationErrorSums::kSumFields, kMaxes = core::QuantizationErrorSums::kMaxFields;

using Measured = QuantizationStatsLog::Measured;

// Every rank's `mine` reduced over the world (collective: every rank passes the same names and keys), as one
// JSON object per name of its keys' figures (core::stats_json); a key no rank measured is left out.
std::vector<nlohmann::ordered_json> reduce_figures(const std::vector<std::string>& names,
                                                   const std::vector<const char*>& keys, const Measured& mine) {
  const size_t slots = names.size() * keys.size();
  std::vector<double> sums(slots * kSums, 0.0), maxes(slots * kMaxes, 0.0);
  const core::QuantizationErrorSums none;
  for (size_t n = 0; n < names.size(); ++n) {
    const auto it = mine.find(names[n]);
    for (size_t k = 0; k < keys.size(); ++k) {
      const size_t slot = n * keys.size() + k;
      const core::QuantizationErrorSums* s = &none;
      if (it != mine.end() && it->second.count(keys[k])) s = &it->second.at(keys[k]);
      s->store(&sums[slot * kSums], &maxes[slot * kMaxes]);
    }
  }
  parallel::world().all_reduce<double>(std::span<double>(sums), parallel::ReduceOp::kSum);
  parallel::world().all_reduce<double>(std::span<double>(maxes), parallel::ReduceOp::kMax);
  std::vector<nlohmann::ordered_json> out(names.size(), nlohmann::ordered_json::object());
  for (size_t n = 0; n < names.size(); ++n)
    for (size_t k = 0; k < keys.size(); ++k) {
      const size_t slot = n * keys.size() + k;
      const auto s = core::QuantizationErrorSums::load(&sums[slot * kSums], &maxes[slot * kMaxes]);
      if (s.elements > 0) out[n][keys[k]] = core::stats_json(s);
    }
  return out;
}

}  // namespace

QuantizationStatsLog::QuantizationStatsLog(const TrainConfig& c, bool lead, int64_t resumed_step,
                                           const std::string& resumed_from)
    : every_(c.stats_every) {
  if (every_ == 0) return;
  // Named from the config, not from this rank's model: a pp rank holds some layers only, and every rank must
  // lay out the reduction's buffers the same way.
  const char* linears[] = {"qkv", "out", "gate", "up", "down"};
  for (int64_t i = 0; i < c.model.layers; ++i)
    for (const char* l : linears)
      layers_.push_back({"layers." + std::to_string(i) + "." + l, core::model::layer_recipe_name(c.model, i)});
  layers_.push_back({"lm_head", c.model.lm_head_recipe});
  // (core/model/gpt.cpp's names; a tied LM head is embedding.weight)
  parameters_.push_back("embedding.weight");
  const char* weights[] = {"attn_norm", "qkv", "out", "mlp_norm", "gate", "up", "down"};
  for (int64_t i = 0; i < c.model.layers; ++i)
    for (const char* w : weights) parameters_.push_back("layers." + std::to_string(i) + "." + w + ".weight");
  parameters_.push_back("final_norm.weight");
  if (!c.model.tie_embeddings) parameters_.push_back("lm_head.weight");
  state_codec_ = c.state;
  if (lead) records_ = std::make_unique<RunRecords>(c.out_dir + "/stats.jsonl", resumed_step, resumed_from);
}

void QuantizationStatsLog::begin(core::model::Gpt& model) const {
  for (const auto& s : model.linear_states()) s->collect_stats = true;
}

std::map<std::string, nlohmann::ordered_json> QuantizationStatsLog::finish(core::model::Gpt& model,
                                                                          int64_t step_number) {
  Measured mine;
  for (const auto& s : model.linear_states()) {
    s->collect_stats = false;
    mine[s->name] = std::move(s->stats);
    s->stats.clear();
  }
  std::vector<std::string> names;
  for (const Layer& l : layers_) names.push_back(l.name);
  const std::vector<nlohmann::ordered_json> figures =
      reduce_figures(names, std::vector<const char*>(std::begin(kRoles), std::end(kRoles)), mine);
  std::map<std::string, nlohmann::ordered_json> measured;
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (figures[l].empty()) continue;  // a layer whose recipe quantizes nothing (bf16)
    measured[layers_[l].name] = figures[l];
    if (records_)
      records_->write({{"step", step_number}, {"layer", layers_[l].name}, {"recipe", layers_[l].recipe},
                       {"operands", figures[l]}});
  }
  return measured;
}

void QuantizationStatsLog::set_recipe(const std::string& linear, const std::string& recipe) {
  for (Layer& l : layers_)
    if (l.name == linear) l.recipe = recipe;
}

void QuantizationStatsLog::finish_states(const Measured& states, int64_t step_number) {
  const std::vector<nlohmann::ordered_json> figures = reduce_figures(parameters_, {"exp_avg", "exp_avg_sq"}, states);
  if (!records_) return;
  for (size_t p = 0; p < parameters_.size(); ++p) {
    if (figures[p].empty()) continue;  // fp32 states, or a small int8 tensor kept in FP32
    nlohmann::ordered_json record = {{"step", step_number}, {"optimizer_state", parameters_[p]},
                                     {"codec", state_codec_}};
    record.update(figures[p]);
    records_->write(record);
  }
}

}  // namespace nibble::launch
