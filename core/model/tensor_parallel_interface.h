#pragma once
// The seam between the model (core/) and tensor/sequence parallelism (parallel/).
//
// core/ may not include parallel/ (DESIGN.md: dependency runs precision <- core <- optim <- parallel <- launch),
// yet the GPT model must run at any tp. So the model is written against this interface: every layer whose
// weight is split across the tensor-parallel group, and every Megatron region, goes through it. The model owns
// the weight *shards* (it sizes them with rank()/size()); the implementation owns the communication.
//  - SingleRankTensorParallel (core/model/single_rank_tensor_parallel.*) is tp = 1: plain layers, no traffic.
//  - parallel/nn implements it over a Communicator (Megatron's regions, FP8 all-gather under sequence parallel,
//    amaxes reduced over the group so every rank quantizes with the same scale).
//
// Shapes: activations are [tokens, hidden] (or [batch, seq, hidden]); "sequence-sharded" means the token dim is
// split into size() equal contiguous parts (rank r holds part r) -- only when sequence_parallel() is true.
#include <torch/torch.h>

#include <memory>
#include <optional>

#include "core/linear.h"

namespace nibble::core::model {

class TensorParallel {
 public:
  virtual ~TensorParallel() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual bool sequence_parallel() const = 0;

  // Column-parallel Linear: weight_shard is rows [rank*out/size, (rank+1)*out/size) of the full [out, in]
  // weight. Input: full activations (or sequence-sharded under SP: gathered inside, quantized bytes when the
  // recipe quantizes x). Output: the local out/size features of every token.
  virtual torch::Tensor column_linear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                                      const std::optional<torch::Tensor>& bias_shard,
                                      const std::shared_ptr<LinearState>& state) = 0;

  // Row-parallel Linear: weight_shard is columns [rank*in/size, ...) of the full [out, in] weight; input holds
  // the local in/size features. Output: summed over the group (all-reduce), or reduce-scattered over tokens
  // under SP. The bias (full, replicated) is added once, after the reduction.
  virtual torch::Tensor row_linear(const torch::Tensor& x_shard, const torch::Tensor& weight_shard,
                                   const std::optional<torch::Tensor>& bias,
                                   const std::shared_ptr<LinearState>& state) = 0;

  // Vocab-parallel embedding: weight_shard holds rows [rank*V/size, ...) of the [V, hidden] table. Output: the
  // full embeddings (all-reduced), or sequence-sharded under SP (reduce-scattered).
  virtual torch::Tensor embedding(const torch::Tensor& tokens, const torch::Tensor& weight_shard) = 0;

  // Vocab-parallel cross-entropy: logits_shard [tokens, V/size] (this rank's vocabulary slice, as produced
  // by column_linear with the LM head), targets [tokens] (full vocabulary ids, int64; ignore_index -100).
  // Returns the mean loss over non-ignored tokens; never materialises full-vocabulary logits. fp64_sums: the
  // softmax sums run in FP64 (the model's reproducible_sums), so a vocabulary split rounds like one rank.
  virtual torch::Tensor cross_entropy(const torch::Tensor& logits_shard, const torch::Tensor& targets,
                                      bool fp64_sums) = 0;

  // Sequence parallel: full -> this rank's token slice (forward split; backward all-gather), and the reverse
  // (forward all-gather; backward split). Identity when sequence_parallel() is false.
  virtual torch::Tensor scatter_sequence(const torch::Tensor& x) = 0;
  virtual torch::Tensor gather_sequence(const torch::Tensor& x) = 0;

  // Gradients of parameters replicated across the group that only saw this rank's tokens (norm weights under
  // SP) must be summed over the group after backward: the model registers them here, the trainer calls this.
  virtual void all_reduce_replicated_grads(const std::vector<torch::Tensor>& params) = 0;
};

}  // namespace nibble::core::model
