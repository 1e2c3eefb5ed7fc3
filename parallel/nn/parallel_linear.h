#pragma once
// The low-precision Linear of a tensor-parallel rank: nibble's Linear (core/linear.h: fprop x_row·w_rowᵀ,
// dgrad dy_row·w_col, wgrad dy_colᵀ·x_col from the recipe's quantized copies) with the communication TP
// needs inside its GEMMs:
//  - per-tensor factors (FP8 scales, NVFP4 global amaxes) of the weight shard, and optionally of x and dy, are
//    the group's (group_quantize.h), so a tp run quantizes every tensor exactly as tp = 1 would;
//  - `gather_input` (sequence-parallel column Linear): x is this rank's token slice; its quantized copies are
//    all-gathered (FP8 / NVFP4 bytes, not BF16) before fprop and kept for wgrad, and dgrad's result is
//    reduce-scattered back to the token slice;
//  - `scatter_output` (sequence-parallel row Linear): y is reduce-scattered over the tokens and the output
//    gradient's quantized copies are all-gathered in backward (FP8 / MXFP8 / NVFP4 bytes where exact).
// The per-layer LinearState (seed, SR counter, weight cache, delayed scaling, capture) is nibble's. Delayed
// scaling (fp8_delayed) quantizes with the state's scales; ranks agree on them when the amax histories are
// max-reduced once per step (parallel/nn/amax_reduction.h) before LinearState::end_step().
// Quartet (mxfp4_quartet: QuEST forward, random-sign Hadamard-32 along each backward GEMM's inner dim) follows
// core/linear.cpp's rules and counter order: wgrad's rotation runs along all tokens (under SP x is gathered in
// its own dtype for it), dgrad's along this rank's output features (a column shard rotates its N/tp features with
// the signs the unsharded Linear draws for them); a row shard needs in_features/tp divisible by 32 (QuEST).
#include <torch/torch.h>

#include <memory>
#include <optional>

#include "core/linear.h"
#include "parallel/communicator.h"

namespace nibble::parallel::nn {

// Which dimension of the full weight this rank's shard is a slice of. It places every tensor the Linear
// quantizes within the tensor one rank would quantize (precision::SrIndexMap), so stochastic rounding draws,
// for each element, the bits a single rank draws for it: a tp run rounds gradients exactly as tp = 1 does.
enum class WeightSplit : uint8_t {
  kNone,            // the whole weight (a group of one, or a replicated Linear)
  kOutputFeatures,  // column-parallel: out_features / size rows of the weight; y and dy are column slices
  kInputFeatures,   // row-parallel: in_features / size columns of the weight; x is a column slice
};

struct ParallelLinearOptions {
  WeightSplit split = WeightSplit::kNone;
  bool gather_input = false;    // x is sequence-sharded: all-gather it (quantized), reduce-scatter dx
  bool reduce_x_amax = false;   // x differs across ranks (a shard): use the group amax
  bool reduce_dy_amax = false;  // dy differs across ranks (column-parallel output features)
  // Sequence-parallel row Linear: y (partial sums over the features) is reduce-scattered over the tokens; in
  // backward the output gradient (this rank's tokens) is quantized with the group amax and its quantized copies
  // all-gathered (Transformer Engine's FP8 gather of grad_output) when that is exact and moves fewer bytes
  // (group_quantize.h gathers_exactly), else gathered in its own dtype and quantized after. No bias here.
  bool scatter_output = false;
  // Under the recipe's reproducible_sums (core/gemm.h fp64_accumulation), the partial sums a K split leaves on each
  // rank are added by the group in FP64 and rounded once, inside the Linear: `reduce_output` (row-parallel without SP)
  // all-reduces y in forward (its backward is the identity: dy is replicated), `reduce_dgrad` (column-parallel without
  // SP) all-reduces dx in backward (in place of copy_to_tensor_parallel's). scatter_output / gather_input reduce in
  // FP64 too. Bit for bit the single-rank sums.
  bool reduce_output = false;
  bool reduce_dgrad = false;
};

torch::Tensor parallel_linear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                              const std::optional<torch::Tensor>& bias, const std::shared_ptr<core::LinearState>& state,
                              Communicator& comm, const ParallelLinearOptions& options);

}  // namespace nibble::parallel::nn
