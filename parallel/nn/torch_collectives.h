#pragma once
// Collectives of a Communicator on torch CPU tensors, along dim 0 (rank-major contiguous blocks, as NCCL and
// MPI move them; any other layout is a local transpose around these). Every call adds its payload to a
// process-wide byte meter, so benchmarks and tests can state what a step moved.
#include <torch/torch.h>

#include <cstdint>

#include "parallel/communicator.h"

namespace nibble::parallel::nn {

// The communicable element type of a tensor; InvalidArgument naming `what` and the valid dtypes otherwise.
DType dtype_of_tensor(const torch::Tensor& t, const std::string& what);

// In place: t = op over the group. Returns t.
torch::Tensor& all_reduce_(torch::Tensor& t, ReduceOp op, Communicator& comm, const std::string& what);
// [n, ...] on every rank -> [size*n, ...], rank r's block at rows [r*n, (r+1)*n).
torch::Tensor all_gather_dim0(const torch::Tensor& t, Communicator& comm, const std::string& what);
// [size*n, ...] -> [n, ...]: the sum over ranks of block `rank`. Dim 0 must divide by the group size.
torch::Tensor reduce_scatter_dim0(const torch::Tensor& t, Communicator& comm, const std::string& what);
// This rank's block of dim 0 (no communication). Dim 0 must divide by the group size.
torch::Tensor split_dim0(const torch::Tensor& t, const Communicator& comm, const std::string& what);

// Bytes this process handed to collectives (the input buffer of each call) since the last reset. A meter like
// torch.cuda.memory_stats: process-wide, read by benchmarks and tests as a difference around the code they
// measure; nothing numeric depends on it.
int64_t communicated_bytes();
void reset_communicated_bytes();

}  // namespace nibble::parallel::nn
