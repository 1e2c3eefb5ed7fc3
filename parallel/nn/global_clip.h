#pragma once
// The global gradient norm across process groups (Megatron's rule), nibble's one implementation: the trainer
// (replicated and ZeRO-1 optimizers), Python's clip_grad_norm_ and ZeroAdamW all call global_grad_norm. Every
// element of the full model's gradient must be counted once:
//  - parameters replicated across TP (norm weights, biases of row-parallel layers) hold equal gradients on every
//    tp rank: count them once (on every rank without summing over tp, or on tp rank 0 only and sum over tp:
//    counts_replicated);
//  - after a DP all-reduce every dp rank holds the same averaged gradient: do not sum over dp;
//    under ZeRO-1 each dp rank holds a disjoint shard: sum over dp;
//  - pipeline stages hold different layers: sum over pp; tp shards of split weights: sum over tp.
// Local sums are FP64 (optim/torch/grad_norm.h, the same read the optimizer's own step makes); the reductions
// are FP64 all-reduces in the order given (every rank must pass the same groups in the same order). The
// clipping coefficient from the norm is optim/clip.h's.
#include <torch/torch.h>

#include <vector>

#include "parallel/communicator.h"

namespace nibble::parallel::nn {

// Gradients this rank counts and the groups their sum of squares is added over before joining the other parts
// (e.g. tp-sharded weights: {tp}; tp-replicated ones: none).
struct GradNormPart {
  std::vector<torch::Tensor> grads;  // undefined tensors are skipped (parameters without a gradient)
  std::vector<Communicator*> sum_over;
};

// sqrt(sum over `sum_over` of (sum over parts of (sum over part.sum_over of the part's FP64 sum of squares))).
// A NaN/Inf gradient on any rank gives a non-finite norm on every rank (so every rank clips or skips alike).
double global_grad_norm(const std::vector<GradNormPart>& parts, const std::vector<Communicator*>& sum_over);

// Whether this rank counts parameters replicated across its TP group when their sum is added over tp.
inline bool counts_replicated(const Communicator& tp) {
  return tp.rank() == 0;
}

}  // namespace nibble::parallel::nn
