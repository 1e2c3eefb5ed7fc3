#include "parallel/nn/group_context_parallel.h"

#include "parallel/nn/context_parallel_attention.h"
#include "precision/error.h"

namespace nibble::parallel::nn {

ContextParallelMethod parse_context_parallel_method(const std::string& name) {
  if (name == "ring") return ContextParallelMethod::kRing;
  if (name == "ulysses") return ContextParallelMethod::kUlysses;
  throw InvalidArgument("context-parallel method '" + name + "' is unknown; valid: ring, ulysses");
}

torch::Tensor GroupContextParallel::causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                     const torch::Tensor& v) {
  if (comm_.size() == 1) return at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, /*is_causal=*/true);
  return method_ == ContextParallelMethod::kRing ? ring_attention(q, k, v, comm_) : ulysses_attention(q, k, v, comm_);
}

}  // namespace nibble::parallel::nn
