#pragma once
// Quantization statistics of compressed optimizer states (train.stats_every; docs/STATS.md): the codec's error on
// the moments one AdamW step stores. Made just before the step, the probe decodes each moment as the step will
// read it and runs the step's own FP32 moment update (optim/update_rules.h adamw_element) on the gradients the
// step will load; after the step, measure() decodes what the step stored and compares. So the figures are the
// error the codec added in this step, nothing the update itself does.
//
// Measured: AdamW with a compressed codec (bf16, fp8, fp8_plain, int8; int8 keeps tensors under 4096 elements in
// FP32, which are skipped) on the plain optimizer. Not measured: fp32 states (exact), SGD, ZeRO-1's sharded states.
#include <map>
#include <string>
#include <vector>

#include "core/quantization_stats.h"
#include "optim/state_codec.h"
#include "optim/torch/optimizer.h"

namespace nibble::launch {

class OptimizerStateProbe {
 public:
  // Before optimizer.step(lr_factor, grad_scale): gradients in .grad (already averaged over dp x cp).
  OptimizerStateProbe(const optim::Optimizer& optimizer, float grad_scale);
  // After the step: "<parameter>" -> {"exp_avg": figures, "exp_avg_sq": figures}; empty when nothing is measured.
  std::map<std::string, std::map<std::string, core::QuantizationErrorSums>> measure() const;

 private:
  struct Expected {
    size_t index;
    optim::StateCodec codec;                 // the tensor's effective codec
    std::vector<float> exp_avg, exp_avg_sq;  // the FP32 moments the step computed
  };
  const optim::Optimizer& optimizer_;
  std::vector<Expected> expected_;
};

}  // namespace nibble::launch
