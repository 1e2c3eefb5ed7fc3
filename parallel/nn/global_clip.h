#pragma once
// Global-norm gradient clipping across process groups (Megatron's rule). Each rank passes the sum of squares
// of the gradients it is responsible for, so that every element of the full model's gradient is counted once:
//  - parameters replicated across TP (norm weights, biases of row-parallel layers) count on tp rank 0 only
//    (counts_replicated(tp));
//  - after a DP all-reduce every dp rank holds the same averaged gradient: do not sum over dp;
//    under ZeRO-1 each dp rank holds a disjoint shard: sum over dp;
//  - pipeline stages hold different layers: sum over pp; tp shards of split weights: sum over tp.
// The sums are FP64 all-reduces, one per group in the order given (every rank must pass the same groups).
#include <vector>

#include "parallel/communicator.h"

namespace nibble::parallel {

// sum over the groups of `local_sum_squares`; +inf/NaN propagate (a non-finite gradient anywhere is seen
// everywhere, so every rank skips the step together).
double global_grad_norm_squared(double local_sum_squares, const std::vector<Communicator*>& sum_over);

// Whether this rank counts parameters replicated across its TP group (tp rank 0 does).
inline bool counts_replicated(const Communicator& tp) { return tp.rank() == 0; }

// torch.nn.utils.clip_grad_norm_'s coefficient: min(1, max_norm / (norm + 1e-6)); 0 for a non-finite norm.
float clip_coefficient(double norm, double max_norm);

}  // namespace nibble::parallel
