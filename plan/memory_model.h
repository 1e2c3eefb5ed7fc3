#pragma once
// Memory per rank, by category, on the pipeline stage that needs the most (under 1F1B the first stage: it
// holds p micro-batches' activations; the last stage holds the logits), and whether it fits in HBM.
//
// Conventions (nibble's layout, as its memory account, launch/memory_account.h, measures it): FP32 parameters,
// which are also the master weights (no BF16 copy is kept: a bf16 Linear casts per GEMM), the recipe's quantized
// copies of the quantized Linears' weights (row and columnwise, refreshed once per step; not the embedding, not
// layers kept in BF16, the LM head only under a quantized lm_head_recipe), FP32 gradients
// (TrainingSpec::gradient_bytes), optimizer moments in the optim.state codec (optim/state_codec.h's exact
// layout: FP8 groups, int8 blocks), ZeRO-1 sharding the moments over dp x cp (the parameters stay whole).
#include <cstdint>
#include <string>
#include <vector>

#include "plan/cluster.h"
#include "plan/layout.h"
#include "plan/model_spec.h"
#include "plan/recipe_costs.h"

namespace nibble::plan {

struct MemoryBreakdown {
  int stage = 0;  // the pipeline stage these figures are for (the largest total)
  double parameters = 0;     // FP32: nibble's master weights, the only copy
  double weight_copies = 0;  // quantized copies of the weights (0 under bf16)
  double gradients = 0;
  double optimizer_states = 0;
  double activations = 0;    // saved for backward, all micro-batches in flight
  double logits = 0;         // last stage: the vocab-parallel logits of one micro-batch (BF16 + FP32 softmax)
  double comm_buffers = 0;   // tp gather, pp send/recv, dp buckets
  double capacity = 0;       // usable HBM: capacity less the reserve below
  // What nibble's own autograd functions save over one micro-batch's forward on this stage (the memory
  // account's saved_per_microbatch): the layers' items less the attention kernel's Q, K, V and output (torch
  // keeps those), plus on the last stage the final norm's and the LM head's inputs. Part of activations and
  // logits above, not added to the total.
  double saved_per_microbatch = 0;
  double total() const {
    return parameters + weight_copies + gradients + optimizer_states + activations + logits + comm_buffers;
  }
  bool fits() const { return total() <= capacity; }
};

// CUDA context, NCCL's own buffers and allocator fragmentation: held back from every GPU's HBM.
inline constexpr double kReservedHbmFraction = 0.08;

// Bytes per optimizer-state element of a codec (optim::moment_layout on a large tensor), and states per
// parameter of an optimizer (adamw 2, sgd 1).
double state_bytes_per_element(const std::string& codec);
int states_per_parameter(const std::string& optimizer);

// Parameters held by pipeline stage `stage` of one tp rank (its transformer layers' Linears / tp and their norm
// vectors, whole; the embedding on the first stage and the LM head and final norm on the last, vocab-parallel).
double stage_parameters(const ModelSpec& model, const Layout& layout, int stage);
// The same, tensor by tensor (elements of each on one tp rank), in nibble's order: embedding, per layer attention
// norm, QKV, out-proj, MLP norm, the MLP's matrices, then final norm and LM head.
std::vector<int64_t> stage_tensors(const ModelSpec& model, const Layout& layout, int stage);
// Optimizer-state bytes of a stage on one rank, tensor by tensor as nibble's optimizer holds them: per tensor its
// moments at optim::moment_layout's size for that tensor (so FP8's partial groups and int8's FP32 states under
// 4096 elements count) and its int64 step count; ZeRO-1 divides the moments by dp x cp.
double stage_state_bytes(const ModelSpec& model, const TrainingSpec& training, const Layout& layout, int stage);

// Layers' worth of activations (per micro-batch) pipeline stage `stage` holds in flight at its peak: 1F1B
// min(m, p - stage) micro-batches of L/p layers; GPipe all m; interleaved Megatron's warm-up count,
// min(mv, 2(p - stage - 1) + (v - 1)p + 1) chunks of L/(pv) layers.
double layers_in_flight(const ModelSpec& model, const TrainingSpec& training, const Layout& layout, int stage);

MemoryBreakdown estimate_memory(const ModelSpec& model, const TrainingSpec& training, const Layout& layout,
                                const ClusterSpec& cluster);

}  // namespace nibble::plan
