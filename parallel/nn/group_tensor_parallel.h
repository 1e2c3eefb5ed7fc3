#pragma once
// nibble::core::model::TensorParallel (core/model/tensor_parallel_interface.h) over the tp group of a Mesh: Megatron
// tensor parallelism, optionally with sequence parallelism, running nibble's low-precision recipes.
//
//  column_linear  SP: quantize this rank's tokens with the group amax, all-gather the quantized copies
//                 (group_quantize.h says what moves per scheme), fprop; backward reduce-scatters dgrad.
//                 No SP: copy_to region (backward all-reduce of dgrad).
//  row_linear     local fprop on this rank's features (group amax for x), then all-reduce, or reduce-scatter
//                 over the tokens under SP (backward: all-gather of the output gradient's quantized copies
//                 where that is exact, else in its own dtype -- parallel_linear.h);
//                 the replicated bias is added after the reduction.
//  embedding      vocabulary-parallel, all-reduce / reduce-scatter under SP.
//  cross_entropy  vocabulary-parallel, never full-vocabulary logits.
// Weight shards are quantized with the group amax too, so with the same seeds a tp run uses the same scales
// as tp = 1 (the tests check outputs and gradients against the single-rank module).
//
// The sequence dim is dim 0: [tokens, hidden], or Megatron's [seq, batch, hidden].
// Under SP, parameters replicated over the group that see only this rank's tokens (norm weights, the row
// Linear's bias) must be registered by the model and passed to all_reduce_replicated_grads after backward.
#include <torch/torch.h>

#include "core/model/tensor_parallel_interface.h"
#include "parallel/communicator.h"

namespace nibble::parallel::nn {

class GroupTensorParallel final : public core::model::TensorParallel {
 public:
  // `group` (normally mesh.tp()) must outlive this object and every autograd graph built with it.
  GroupTensorParallel(Communicator& group, bool sequence_parallel);

  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  bool sequence_parallel() const override { return sequence_parallel_; }
  Communicator& group() const { return comm_; }

  torch::Tensor column_linear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                              const std::optional<torch::Tensor>& bias_shard,
                              const std::shared_ptr<core::LinearState>& state) override;
  torch::Tensor row_linear(const torch::Tensor& x_shard, const torch::Tensor& weight_shard,
                           const std::optional<torch::Tensor>& bias,
                           const std::shared_ptr<core::LinearState>& state) override;
  torch::Tensor embedding(const torch::Tensor& tokens, const torch::Tensor& weight_shard) override;
  torch::Tensor cross_entropy(const torch::Tensor& logits_shard, const torch::Tensor& targets, bool fp64_sums) override;
  torch::Tensor scatter_sequence(const torch::Tensor& x) override;
  torch::Tensor gather_sequence(const torch::Tensor& x) override;
  void all_reduce_replicated_grads(const std::vector<torch::Tensor>& params) override;

 private:
  Communicator& comm_;
  bool sequence_parallel_;
};

}  // namespace nibble::parallel::nn
