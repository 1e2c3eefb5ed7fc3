#pragma once
// Megatron's tensor/sequence-parallel regions as autograd functions over a Communicator: each forward
// collective has its conjugate as backward (parallel-runtimes.md §1.1). All are the identity on a group of one.
// Sequence-parallel regions split/gather dim 0: the token dim of [tokens, hidden], or the sequence dim of
// Megatron's [seq, batch, hidden] layout.
#include <torch/torch.h>

#include "parallel/communicator.h"

namespace nibble::parallel::nn {

// "f": forward identity, backward all-reduce (sum). Enters a tensor-parallel region with a replicated input.
torch::Tensor copy_to_tensor_parallel(const torch::Tensor& x, Communicator& comm);
// "g": forward all-reduce (sum), backward identity. Leaves a tensor-parallel region (partial sums).
torch::Tensor reduce_from_tensor_parallel(const torch::Tensor& x, Communicator& comm);
// Forward: this rank's part of dim 0; backward: all-gather dim 0.
torch::Tensor scatter_to_sequence_parallel(const torch::Tensor& x, Communicator& comm);
// Forward: all-gather dim 0; backward: reduce-scatter (the consumer is tensor-parallel, so every rank's
// gradient is a partial sum) when `grad_is_partial`, else this rank's part (the consumer is replicated).
torch::Tensor gather_from_sequence_parallel(const torch::Tensor& x, Communicator& comm, bool grad_is_partial);
// Forward: reduce-scatter dim 0; backward: all-gather dim 0. Leaves a tensor-parallel region under SP.
torch::Tensor reduce_scatter_to_sequence_parallel(const torch::Tensor& x, Communicator& comm);

}  // namespace nibble::parallel::nn
