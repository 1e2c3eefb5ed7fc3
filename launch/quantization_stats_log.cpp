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
  parallel::world().all_reduce<double>(std::span<double>(sums), parallel::ReduceOp::kSum);
  parallel::world().all_reduce<double>(std::span<double>(maxes), parallel::ReduceOp::kMax);
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

}  // namespace nibble::launch
