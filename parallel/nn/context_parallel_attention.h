#pragma once
// Context parallelism for causal self-attention: the sequence is split over the cp group and attention still
// sees every earlier token. Two methods, both torch::autograd functions over a Communicator, on CPU or CUDA
// tensors (a CUDA tensor moves over NCCL, or through host memory on an MPI group: host_staging.h; the CUDA branch
// is compiled only until a GPU run proves it; docs/PARALLEL.md "Pipeline and context parallel"):
//
//  - ring_attention: K/V blocks travel around the ring (send to cp rank r+1, receive from r-1, the next
//    exchange posted before the current block computes); partial outputs are merged with the log-sum-exp
//    rule; backward sends K/V around again together with the dK/dV accumulated for them.
//  - ulysses_attention: all-to-all from sequence-sharded to head-sharded, ordinary causal attention (torch SDPA)
//    on all tokens of H/cp heads, all-to-all back. Heads and KV heads must divide by cp.
//
// Layout: [batch, heads, seq, head_dim], torch SDPA's. KV heads may be fewer than query heads (GQA: query head
// h uses KV head h / (heads / kv_heads), SDPA's enable_gqa rule).
//
// The sequence split (both methods, so the data loader's split does not depend on the method): the full
// sequence of length S is cut into 2*cp chunks of S/(2*cp) tokens; cp rank r holds chunks r and 2*cp-1-r,
// concatenated in that order (Megatron's load balancing: every rank gets the same causal work). S must be a
// multiple of 2*cp: a sequence that is not is rejected by context_parallel_split with a message naming S, cp
// and the nearest valid lengths (nibble does not pad: padded keys would have to be masked everywhere).
#include <torch/torch.h>

#include <optional>

#include "parallel/communicator.h"

namespace nibble::parallel::nn {

// Rank `rank`'s part of `x` along `dim` (chunks rank and 2*cp-1-rank, concatenated), a new contiguous tensor.
torch::Tensor context_parallel_split(const torch::Tensor& x, int64_t dim, int cp, int rank);
// The inverse: `x` is every rank's part concatenated in rank order along `dim` (what an all-gather gives);
// returns the sequence in its natural order.
torch::Tensor context_parallel_merge(const torch::Tensor& x, int64_t dim, int cp);

// q [B, H, s, D], k and v [B, Hkv, s, D], s = S/cp local tokens in the split above; causal over the global
// positions. scale defaults to 1/sqrt(D). Returns [B, H, s, D]. Every rank of `comm` must call it with the
// same shapes. Floating dtypes the Communicator moves (float32, float64, bfloat16); math in the input dtype
// with FP32 accumulation for bfloat16 (the log-sum-exp merge runs in FP32 or FP64).
torch::Tensor ring_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, Communicator& comm,
                             std::optional<double> scale = std::nullopt);

// Same contract as ring_attention; H and Hkv must divide by comm.size().
torch::Tensor ulysses_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                Communicator& comm, std::optional<double> scale = std::nullopt);

}  // namespace nibble::parallel::nn
