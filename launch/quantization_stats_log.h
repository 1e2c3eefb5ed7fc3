#pragma once
// <out_dir>/stats.jsonl: every train.stats_every steps, one record per quantized Linear of the model with the
// quantization statistics of each of its GEMM operands' copies (core/quantization_stats.h; docs/STATS.md):
//   {"step": 50, "layer": "layers.0.qkv", "recipe": "nvfp4",
//    "operands": {"x_row": {"amax": .., "scale_log2": [lo, hi], "flushed": .., "clamped": .., "snr_db": ..}, ...}}
// and, with compressed AdamW states, one record per parameter with its moments' error in that step's update
// (launch/optimizer_state_stats.h):
//   {"step": 50, "optimizer_state": "layers.0.qkv.weight", "codec": "fp8",
//    "exp_avg": {"amax": .., "flushed": .., "snr_db": ..}, "exp_avg_sq": {...}}
// The figures of every rank (tp/sp shards, cp and dp token slices, pp stages, all micro-batches of the step) are
// reduced over the world before the lead rank writes, so a record describes the whole tensor of the whole step
// whatever the layout.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/model/gpt.h"
#include "launch/run_records.h"
#include "launch/train_config.h"

namespace nibble::launch {

class QuantizationStatsLog {
 public:
  // The figures one rank measured per (name, key): a Linear's roles, a parameter's moments.
  using Measured = std::map<std::string, std::map<std::string, core::QuantizationErrorSums>>;

  // Collective over the world only in finish(). `lead` writes the file (RunRecords: a resumed run keeps the
  // records up to its checkpoint's step).
  QuantizationStatsLog(const TrainConfig& c, bool lead, int64_t resumed_step, const std::string& resumed_from);

  // Whether the update with 0-based index `step` collects statistics: the steps whose 1-based number is a
  // multiple of train.stats_every.
  bool due(int64_t step) const { return every_ > 0 && (step + 1) % every_ == 0; }
  // Before the step's forwards: every Linear this rank holds measures its quantized copies.
  void begin(core::model::Gpt& model) const;
  // After the step's backwards (collective over the world: every rank calls it on the same steps): stops the
  // measuring, reduces, writes the records of step `step_number` (1-based) and clears the layers' sums. Returns
  // the reduced figures, on every rank: Linear name -> {role -> core::stats_json}, for each Linear measured.
  std::map<std::string, nlohmann::ordered_json> finish(core::model::Gpt& model, int64_t step_number);
  // After the step's optimizer update (collective over the world, on the same steps as finish; a rank whose
  // step was skipped or that measures nothing passes an empty map): the states' records.
  void finish_states(const Measured& states, int64_t step_number);
  // The recipe the records name for Linear `linear` from now on (launch/precision_policy.h changes recipes).
  void set_recipe(const std::string& linear, const std::string& recipe);

 private:
  struct Layer {
    std::string name, recipe;
  };
  int64_t every_ = 0;
  std::vector<Layer> layers_;  // every Linear of the whole model, in the same order on every rank
  std::vector<std::string> parameters_;  // every parameter of the whole model, likewise
  std::string state_codec_;
  std::unique_ptr<RunRecords> records_;
};

}  // namespace nibble::launch
