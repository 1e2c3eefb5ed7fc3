#include "core/model/single_rank_tensor_parallel.h"

#include "core/gemm.h"

namespace nibble::core::model {

torch::Tensor SingleRankTensorParallel::column_linear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                                                      const std::optional<torch::Tensor>& bias_shard,
                                                      const std::shared_ptr<LinearState>& state) {
  return linear_forward(x, weight_shard, bias_shard, state);
}

torch::Tensor SingleRankTensorParallel::row_linear(const torch::Tensor& x_shard, const torch::Tensor& weight_shard,
                                                   const std::optional<torch::Tensor>& bias,
                                                   const std::shared_ptr<LinearState>& state) {
  return linear_forward(x_shard, weight_shard, bias, state);
}

torch::Tensor SingleRankTensorParallel::embedding(const torch::Tensor& tokens, const torch::Tensor& weight_shard) {
  return torch::embedding(weight_shard, tokens);
}

torch::Tensor SingleRankTensorParallel::cross_entropy(const torch::Tensor& logits_shard, const torch::Tensor& targets,
                                                      bool fp64_sums) {
  // FP32 log-softmax whatever the logits' dtype: the loss is the quantity every run is compared on. FP64 with
  // fp64_sums, as the vocab-parallel cross-entropy then is: both round the same exact-enough sums.
  const auto dtype = fp64_sums ? torch::kFloat64 : torch::kFloat32;
  return torch::nll_loss(torch::log_softmax(logits_shard.to(dtype), -1), targets, {}, at::Reduction::Mean, -100)
      .to(torch::kFloat32);
}

}  // namespace nibble::core::model
