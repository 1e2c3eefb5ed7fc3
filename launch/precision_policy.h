#pragma once
// model.precision_policy = "adaptive" in nibble-train: core/adaptive_precision.h's decisions, made on every rank
// from figures every rank holds the same, applied to the model at a step boundary, and carried by checkpoints.
//
//   - Statistics (train.stats_every, required > 0): the figures QuantizationStatsLog::finish reduced over the
//     world; a Linear's measure is the worst snr_db of its quantized copies (x, w, dy; rowwise and columnwise).
//   - Or, with model.adaptive_measure = "loss_probe", a loss probe after the update on those steps (the statistics
//     are then only logged): the mean loss of model.adaptive_probe_batches fixed training batches, evaluated as
//     the model is and with each block's Linears one rung up (collective; the same on every rank). Every
//     LinearState is saved before and put back after each evaluation (LinearState::Snapshot), so the run goes
//     on exactly as if no probe had run; metrics.jsonl gets each probe's loss and gains.
//   - Non-finite gradients: on a step the trainer skips, each rank flags the Linears whose local weight gradient
//     is non-finite and one world all-reduce (max) gives every rank the same flags.
//   - At the end of a step on which any of these came in, every rank takes world rank 0's (rung, count) of every
//     Linear (a broadcast: equal inputs give equal decisions already, but no reduction order can then make
//     two ranks disagree), points the LinearStates it holds at their rungs' recipes (LinearState::set_recipe:
//     the FP32 master weights and optimizer states are untouched; delayed-scaling history starts anew) and
//     rank 0 prints one line per switch. The next step's forwards use the new recipes on every rank.
//   - Checkpoints: every rank's shard holds "precision_policy.<linear>.rung" (int64), ".below" (int64, the
//     count) and ".recipe" (the rung's recipe name as uint8), every Linear's on every rank (the state is
//     replicated), so a resharded load finds them too. They are restored before the Linear states, whose
//     delayed-scaling entries belong to the restored recipe. A checkpoint without them (a fixed-policy run)
//     starts every Linear at its configured recipe.
#include <torch/torch.h>

#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/adaptive_precision.h"
#include "core/model/gpt.h"
#include "launch/quantization_stats_log.h"

namespace nibble::launch {

// The worst snr_db over a Linear's measured copies ({role -> stats_json}); +inf when every copy equals its source.
double worst_snr_db(const nlohmann::ordered_json& operands);

class PrecisionPolicy {
 public:
  // Every Linear of the whole model (transformer layers' in order, then lm_head), from the config alone, so
  // every rank of every layout holds the same list: the model's config (Gpt::config, with the run's
  // reproducible_sums, which the rungs take too). `lead` prints.
  PrecisionPolicy(const core::model::GptConfig& config, bool lead);
  bool adaptive() const { return static_cast<bool>(decisions_); }

  // A statistics step's reduced figures (QuantizationStatsLog::finish).
  void measured(const std::map<std::string, nlohmann::ordered_json>& figures);
  // A step the trainer skips for non-finite gradients (collective over the world: every rank calls it).
  void nonfinite(const core::model::Gpt& model);
  // model.adaptive_measure = "loss_probe": whether to probe, and the probe at the end of step `step` (collective:
  // `loss` evaluates the probe batches on every rank); returns its metrics record.
  bool probes() const { return decisions_ && probe_gain_pct_.has_value(); }
  nlohmann::ordered_json probe(core::model::Gpt& model, int64_t step, const std::function<double()>& loss);
  // After the step's update (collective over the world on the steps measured/nonfinite ran, which every rank
  // knows alike): agree, apply to `model`, relabel `stats`; returns one metrics record per switch.
  std::vector<nlohmann::ordered_json> end_step(core::model::Gpt& model, QuantizationStatsLog& stats, int64_t step);

  // Checkpoint entries, and their restoring (into the model's Linears, before their states are restored).
  void append(std::vector<std::pair<std::string, torch::Tensor>>& out) const;
  void restore(const std::map<std::string, torch::Tensor>& tensors, const std::string& source, core::model::Gpt& model);
  // The stats log's recipe names from the current rungs (after a resume).
  void label(QuantizationStatsLog& stats) const;
  // The end-of-run line (Linears and weights in 4 bits, the raised ones) and its metrics record.
  std::string summary() const;
  nlohmann::ordered_json summary_record(int64_t step) const;

 private:
  void apply(core::model::Gpt& model);
  double four_bit_weight_share() const;  // of the Linears' weight elements, in Linears on a 4-bit recipe
  std::vector<int64_t> weights_;         // each Linear's weight elements (the share of GEMM work it carries)
  std::map<std::string, size_t> index_;  // a Linear's name -> its place in decisions_->linears()
  std::unique_ptr<core::AdaptivePrecision> decisions_;
  std::vector<size_t> applied_;                 // the rung each Linear's recipe is at in the model
  std::vector<core::PrecisionSwitch> pending_;  // this step's own decisions, for their reasons
  bool observed_ = false;
  std::optional<double> probe_gain_pct_;  // set: model.adaptive_measure = "loss_probe", its threshold
  bool lead_;
};

}  // namespace nibble::launch
