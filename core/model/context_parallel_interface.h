#pragma once
// The seam between the model (core/) and context parallelism (parallel/nn/context_parallel_attention.*), like
// tensor_parallel_interface.h is for tp: core/ may not include parallel/, so the GPT model calls causal attention and
// asks for its tokens' positions through this interface.
//
// The sequence split is fixed here (it is a contract between the data loader, RoPE and attention): the full
// sequence of S tokens is cut into 2*cp chunks of S/(2*cp); cp rank r holds chunks r and 2*cp-1-r, in that
// order (Megatron's load balancing: every rank gets the same amount of causal work). S must be a multiple of
// 2*cp. parallel/nn/context_parallel_attention.h's context_parallel_split cuts tensors by the same rule.
#include <torch/torch.h>

#include <memory>

namespace nibble::core::model {

class ContextParallel {
 public:
  virtual ~ContextParallel() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  // q [batch, heads, s, head_dim], k and v [batch, kv_heads, s, head_dim]: this rank's s = S/cp tokens in the
  // split above. Causal attention over the global positions, scale 1/sqrt(head_dim). Every rank of the cp
  // group calls it with the same shapes.
  virtual torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) = 0;
};

// cp = 1: torch's scaled_dot_product_attention with is_causal.
class SingleRankContextParallel final : public ContextParallel {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  torch::Tensor causal_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v) override;
};

// The global positions (int64 [local_seq]) of cp rank `rank`'s tokens when each rank holds local_seq tokens.
// Throws InvalidArgument when local_seq is not a multiple of 2 (two chunks per rank) for cp > 1.
torch::Tensor context_parallel_positions(int64_t local_seq, int cp, int rank);

}  // namespace nibble::core::model
