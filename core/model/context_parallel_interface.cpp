#include "core/model/context_parallel_interface.h"

#include "precision/error.h"

namespace nibble::core::model {

torch::Tensor SingleRankContextParallel::causal_attention(const torch::Tensor& q, const torch::Tensor& k,
                                                          const torch::Tensor& v) {
  return at::scaled_dot_product_attention(q, k, v, std::nullopt, 0.0, /*is_causal=*/true);
}

torch::Tensor context_parallel_positions(int64_t local_seq, int cp, int rank) {
  if (cp < 1 || rank < 0 || rank >= cp)
    throw InvalidArgument("context_parallel_positions: rank " + std::to_string(rank) +
                          " is not in [0, cp = " + std::to_string(cp) + ")");
  if (cp == 1) return torch::arange(local_seq, torch::kInt64);
  if (local_seq % 2 != 0)
    throw InvalidArgument("context_parallel_positions: each cp rank holds two chunks, so its " +
                          std::to_string(local_seq) +
                          " tokens must be even (the sequence a multiple of 2*cp = " + std::to_string(2 * cp) + ")");
  const int64_t chunk = local_seq / 2;
  return torch::cat({torch::arange(rank * chunk, (rank + 1) * chunk, torch::kInt64),
                     torch::arange((2 * cp - 1 - rank) * chunk, (2 * cp - rank) * chunk, torch::kInt64)});
}

}  // namespace nibble::core::model
