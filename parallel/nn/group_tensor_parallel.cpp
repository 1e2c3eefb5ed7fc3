#include "parallel/nn/group_tensor_parallel.h"

#include <map>

#include "core/gemm.h"
#include "parallel/nn/parallel_linear.h"
#include "parallel/nn/regions.h"
#include "parallel/nn/torch_collectives.h"
#include "parallel/nn/vocab_parallel.h"
#include "precision/error.h"

namespace nibble::parallel::nn {

GroupTensorParallel::GroupTensorParallel(Communicator& group, bool sequence_parallel)
    : comm_(group), sequence_parallel_(sequence_parallel) {}

torch::Tensor GroupTensorParallel::column_linear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                                                 const std::optional<torch::Tensor>& bias_shard,
                                                 const std::shared_ptr<core::LinearState>& state) {
  ParallelLinearOptions o;
  o.split = WeightSplit::kOutputFeatures;
  o.reduce_dy_amax = true;  // each rank holds the gradient of its own output features
  if (sequence_parallel_) {
    o.gather_input = true;
    o.reduce_x_amax = true;
    return parallel_linear(x, weight_shard, bias_shard, state, comm_, o);
  }
  if (state->recipe.reproducible_sums) {
    o.reduce_dgrad = true;  // the dgrad partial sums are added in FP64 inside the Linear
    return parallel_linear(x, weight_shard, bias_shard, state, comm_, o);
  }
  return parallel_linear(copy_to_tensor_parallel(x, comm_), weight_shard, bias_shard, state, comm_, o);
}

torch::Tensor GroupTensorParallel::row_linear(const torch::Tensor& x_shard, const torch::Tensor& weight_shard,
                                              const std::optional<torch::Tensor>& bias,
                                              const std::shared_ptr<core::LinearState>& state) {
  ParallelLinearOptions o;
  o.split = WeightSplit::kInputFeatures;
  o.reduce_x_amax = true;  // each rank holds its own input features; dy is replicated (or all-gathered)
  // Under SP the reduce-scatter happens inside the Linear, so that its backward can gather the output gradient's
  // quantized copies (parallel_linear.h); without SP the all-reduce's backward is the identity.
  o.scatter_output = sequence_parallel_;
  o.reduce_output = !sequence_parallel_ && state->recipe.reproducible_sums;  // FP64 partial sums, added inside
  const torch::Tensor out = parallel_linear(x_shard, weight_shard, std::nullopt, state, comm_, o);
  torch::Tensor y = sequence_parallel_ || o.reduce_output ? out : reduce_from_tensor_parallel(out, comm_);
  if (bias) {
    if (bias->dim() != 1 || bias->size(0) != weight_shard.size(0))
      throw InvalidArgument(state->name + ": bias must have shape (" + std::to_string(weight_shard.size(0)) +
                            "), got " + c10::str(bias->sizes()));
    y = y + *bias;
  }
  return y;
}

torch::Tensor GroupTensorParallel::embedding(const torch::Tensor& tokens, const torch::Tensor& weight_shard) {
  const torch::Tensor partial = vocab_parallel_embedding_partial(tokens, weight_shard, comm_);
  return sequence_parallel_ ? reduce_scatter_to_sequence_parallel(partial, comm_)
                            : reduce_from_tensor_parallel(partial, comm_);
}

torch::Tensor GroupTensorParallel::cross_entropy(const torch::Tensor& logits_shard, const torch::Tensor& targets,
                                                 bool fp64_sums) {
  return vocab_parallel_cross_entropy(logits_shard, targets, comm_, -100, fp64_sums);
}

torch::Tensor GroupTensorParallel::scatter_sequence(const torch::Tensor& x) {
  return sequence_parallel_ ? scatter_to_sequence_parallel(x, comm_) : x;
}

torch::Tensor GroupTensorParallel::gather_sequence(const torch::Tensor& x) {
  return sequence_parallel_ ? gather_from_sequence_parallel(x, comm_, /*grad_is_partial=*/false) : x;
}

void GroupTensorParallel::all_reduce_replicated_grads(const std::vector<torch::Tensor>& params) {
  // Without SP every rank ran the replicated parameters on all tokens: their gradients are already equal
  // and complete, and summing them would multiply them by the group size.
  if (comm_.size() == 1 || !sequence_parallel_) return;
  // One all-reduce per dtype over a flat buffer (Megatron coalesces the same way), in parameter order so every
  // rank builds the same buffer.
  std::map<torch::ScalarType, std::vector<torch::Tensor>> by_dtype;
  for (const torch::Tensor& p : params) {
    const torch::Tensor& g = p.grad();
    if (!g.defined())
      throw InvalidArgument("all_reduce_replicated_grads: a registered parameter of shape " + c10::str(p.sizes()) +
                            " has no gradient (run backward first; every rank must pass the same parameters)");
    by_dtype[g.scalar_type()].push_back(g);
  }
  for (auto& [dtype, grads] : by_dtype) {
    std::vector<torch::Tensor> flat;
    for (const auto& g : grads) flat.push_back(g.reshape({-1}));
    torch::Tensor buf = torch::cat(flat);
    all_reduce_(buf, ReduceOp::kSum, comm_, "all_reduce_replicated_grads");
    int64_t offset = 0;
    for (auto& g : grads) {
      torch::NoGradGuard no_grad;
      g.copy_(buf.narrow(0, offset, g.numel()).view(g.sizes()));
      offset += g.numel();
    }
  }
}

}  // namespace nibble::parallel::nn
