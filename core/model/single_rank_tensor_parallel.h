#pragma once
// TensorParallel at tp = 1: every layer holds its whole weight and nothing is communicated. The model uses it
// for single-rank runs and as the oracle the tp > 1 implementation (parallel/nn) is tested against.
#include "core/model/tensor_parallel_interface.h"

namespace nibble::core::model {

class SingleRankTensorParallel final : public TensorParallel {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  bool sequence_parallel() const override { return false; }

  torch::Tensor column_linear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                              const std::optional<torch::Tensor>& bias_shard,
                              const std::shared_ptr<LinearState>& state) override;
  torch::Tensor row_linear(const torch::Tensor& x_shard, const torch::Tensor& weight_shard,
                           const std::optional<torch::Tensor>& bias,
                           const std::shared_ptr<LinearState>& state) override;
  torch::Tensor embedding(const torch::Tensor& tokens, const torch::Tensor& weight_shard) override;
  torch::Tensor cross_entropy(const torch::Tensor& logits_shard, const torch::Tensor& targets, bool fp64_sums) override;
  torch::Tensor scatter_sequence(const torch::Tensor& x) override { return x; }
  torch::Tensor gather_sequence(const torch::Tensor& x) override { return x; }
  void all_reduce_replicated_grads(const std::vector<torch::Tensor>&) override {}
};

}  // namespace nibble::core::model
