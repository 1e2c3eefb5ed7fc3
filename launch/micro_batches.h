#pragma once
// This rank's part of one training step's data, as nibble-train feeds it (launch/trainer.cpp) and Python's
// examples/train_gpt.py reproduces it through nibble.models: the step's global batch from the sampler, this dp
// rank's rows cut into micro-batches, this cp rank's tokens of each, and each micro-batch's stochastic-rounding
// stream.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "core/data/batch_sampler.h"
#include "launch/train_config.h"
#include "parallel/mesh.h"

namespace nibble::launch {

// This rank's part (dp rows, cp tokens) of every micro-batch of training step `step`, and each one's
// stochastic-rounding stream: (step, global micro-batch index), the same at any dp layout.
struct MicroBatches {
  std::vector<torch::Tensor> tokens, targets;
  std::vector<uint64_t> streams;
};

MicroBatches step_batches(const TrainConfig& c, const core::data::BatchSampler& train, const parallel::Mesh& mesh,
                          int64_t step, const torch::Device& device);

}  // namespace nibble::launch
