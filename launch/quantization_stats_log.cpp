#include "launch/quantization_stats_log.h"

#include <limits>
#include <map>
#include <span>

#include "core/quantization_stats.h"
#include "parallel/runtime.h"

namespace nibble::launch {
namespace {

// The roles in record order: the forward's copies, then the backward's.
constexpr const char* kRoles[] = {"x_row", "w_row", "x_col", "w_col", "dy_row", "dy_col"};
constexpr size_t kRoleCount = sizeof(kRoles) / sizeof(kRoles[0]);
constexpr int kSums = core::QuantizationErrorSums::kSumFields, kMaxes = core::QuantizationErrorSums::kMaxFields;

// Reduces per-slot sums over the world (sum and max), in place.
void reduce_over_world(std::vector<double>& sums, std::vector<double>& maxes) {
  parallel::world().all_reduce<double>(std::span<double>(sums), parallel::ReduceOp::kSum);
  parallel::world().all_reduce<double>(std::span<double>(maxes), parallel::ReduceOp::kMax);
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

void QuantizationStatsLog::finish(core::model::Gpt& model, int64_t step_number) {
  std::map<std::string, core::LinearState*> mine;
  for (const auto& s : model.linear_states()) {
    s->collect_stats = false;
    mine[s->name] = s.get();
  }
  const size_t slots = layers_.size() * kRoleCount;
  std::vector<double> sums(slots * kSums, 0.0);
  std::vector<double> maxes(slots * kMaxes, 0.0);
  const core::QuantizationErrorSums none;
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto it = mine.find(layers_[l].name);
    for (size_t r = 0; r < kRoleCount; ++r) {
      const size_t slot = l * kRoleCount + r;
      const core::QuantizationErrorSums* s = &none;
      if (it != mine.end()) {
        const auto found = it->second->stats.find(kRoles[r]);
        if (found != it->second->stats.end()) s = &found->second;
      }
      s->store(&sums[slot * kSums], &maxes[slot * kMaxes]);
    }
  }
  for (auto& [name, state] : mine) state->stats.clear();
  reduce_over_world(sums, maxes);
  if (!records_) return;
  for (size_t l = 0; l < layers_.size(); ++l) {
    nlohmann::ordered_json operands = nlohmann::ordered_json::object();
    for (size_t r = 0; r < kRoleCount; ++r) {
      const size_t slot = l * kRoleCount + r;
      const auto s = core::QuantizationErrorSums::load(&sums[slot * kSums], &maxes[slot * kMaxes]);
      if (s.elements > 0) operands[kRoles[r]] = core::stats_json(s);
    }
    if (operands.empty()) continue;  // a layer whose recipe quantizes nothing (bf16)
    records_->write({{"step", step_number}, {"layer", layers_[l].name}, {"recipe", layers_[l].recipe},
                     {"operands", operands}});
  }
}

void QuantizationStatsLog::finish_states(
    const std::map<std::string, std::map<std::string, core::QuantizationErrorSums>>& states, int64_t step_number) {
  const char* moments[] = {"exp_avg", "exp_avg_sq"};
  const size_t slots = parameters_.size() * 2;
  std::vector<double> sums(slots * kSums, 0.0), maxes(slots * kMaxes, 0.0);
  const core::QuantizationErrorSums none;
  for (size_t p = 0; p < parameters_.size(); ++p) {
    const auto it = states.find(parameters_[p]);
    for (size_t m = 0; m < 2; ++m) {
      const size_t slot = p * 2 + m;
      const core::QuantizationErrorSums* s = &none;
      if (it != states.end() && it->second.count(moments[m])) s = &it->second.at(moments[m]);
      s->store(&sums[slot * kSums], &maxes[slot * kMaxes]);
    }
  }
  reduce_over_world(sums, maxes);
  if (!records_) return;
  for (size_t p = 0; p < parameters_.size(); ++p) {
    nlohmann::ordered_json record = {{"step", step_number}, {"optimizer_state", parameters_[p]},
                                     {"codec", state_codec_}};
    bool any = false;
    for (size_t m = 0; m < 2; ++m) {
      const size_t slot = p * 2 + m;
      const auto s = core::QuantizationErrorSums::load(&sums[slot * kSums], &maxes[slot * kMaxes]);
      if (s.elements == 0) continue;
      record[moments[m]] = core::stats_json(s);
      any = true;
    }
    if (any) records_->write(record);
  }
}

}  // namespace nibble::launch
