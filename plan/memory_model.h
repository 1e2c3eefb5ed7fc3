#pragma once
// Memory per rank, by category, on the pipeline stage that needs the most (under 1F1B the first stage: it
// holds p micro-batches' activations; the last stage holds the logits), and whether it fits in HBM.
//
// Conventions (nibble's mixed precision): BF16 weights, the recipe's quantized weight copies (row and
// columnwise, refreshed once per step), FP32 master weights, FP32 gradients (TrainingSpec::gradient_bytes),
// optimizer moments in the optim.state codec (optim/state_codec.h's exact layout: FP8 groups, int8 blocks),
// ZeRO-1 sharding master weights and moments over dp x cp.
#include <string>

#include "plan/cluster.h"
#include "plan/layout.h"
#include "plan/model_spec.h"
#include "plan/recipe_costs.h"

namespace nibble::plan {

struct MemoryBreakdown {
  int stage = 0;  // the pipeline stage these figures are for (the largest total)
  double weights = 0;
  double weight_copies = 0;  // quantized copies of the weights (0 under bf16)
  double master_weights = 0;
  double gradients = 0;
  double optimizer_states = 0;
  double activations = 0;    // saved for backward, all micro-batches in flight
  double logits = 0;         // last stage: the vocab-parallel logits of one micro-batch (BF16 + FP32 softmax)
  double comm_buffers = 0;   // tp gather, pp send/recv, dp buckets
  double capacity = 0;       // usable HBM: capacity less the reserve below
  double total() const {
    return weights + weight_copies + master_weights + gradients + optimizer_states + activations + logits + comm_buffers;
  }
  bool fits() const { return total() <= capacity; }
};

// CUDA context, NCCL's own buffers and allocator fragmentation: held back from every GPU's HBM.
inline constexpr double kReservedHbmFraction = 0.08;

// Bytes per optimizer-state element of a codec (optim::moment_layout on a large tensor), and states per
// parameter of an optimizer (adamw 2, sgd 1).
double state_bytes_per_element(const std::string& codec);
int states_per_parameter(const std::string& optimizer);

// Parameters held by pipeline stage `stage` of one tp rank (its transformer layers / tp, plus the embedding on
// the first stage and the LM head on the last, vocab-parallel).
double stage_parameters(const ModelSpec& model, const Layout& layout, int stage);

// Layers' worth of activations (per micro-batch) pipeline stage `stage` holds in flight at its peak: 1F1B
// min(m, p - stage) micro-batches of L/p layers; GPipe all m; interleaved Megatron's warm-up count,
// min(mv, 2(p - stage - 1) + (v - 1)p + 1) chunks of L/(pv) layers.
double layers_in_flight(const ModelSpec& model, const TrainingSpec& training, const Layout& layout, int stage);

MemoryBreakdown estimate_memory(const ModelSpec& model, const TrainingSpec& training, const Layout& layout,
                                const ClusterSpec& cluster);

}  // namespace nibble::plan
