#pragma once
// Time of one training step on a layout, from the cluster's peaks and the fitted efficiencies
// (plan/efficiency.h). Per micro-batch and pipeline stage it adds, layer by layer:
//  - Linear GEMMs: fprop, dgrad, wgrad, each at the tensor-core rate of the path nibble takes for the recipe on
//    this GPU (plan/recipe_costs.h), times the GEMM efficiency;
//  - the attention core in BF16 (nibble quantizes Linears only): fused attention runs the causal half of the
//    s x s products (backward 2.5x forward: it recomputes the scores); materialised attention (Megatron) the
//    full square plus its softmax/dropout traffic, 13 (8 without dropout) bytes per score forward, twice that
//    backward;
//  - memory-bound element-wise work: twice the layer's saved activations forward (written once, read once),
//    twice that backward; the recipe's quantization passes (read BF16, write each quantized copy) and, where
//    the GPU has no native path, decoding to BF16;
//  - tensor-parallel collectives, not overlapped (Megatron's and nibble's TP layers wait for them): two
//    all-reduces forward and two backward, or with sequence parallelism all-gather + reduce-scatter pairs
//    (FP8 per-tensor recipes gather 1-byte copies); NVLink when tp fits a node, else InfiniBand;
//  - context-parallel ring attention: K and V passed cp-1 times, hidden behind the attention core where it is
//    longer;
//  - recomputation: selective re-runs the attention core; full the whole layer forward (collectives included);
//  - on a calibrated CPU, the rest of a layer that a 1-rank nibble-train step measured beyond these terms, per
//    token (ClusterSpec::layer_remainder_ns_per_token).
// The pipeline: stage k's micro-batch time t_k (its layers, the embedding on stage 0, logits and cross-entropy
// on the last, one activation send and one gradient send), step = m max(t_k) + (sum(t_k) - max(t_k)) / v, i.e.
// (m + p - 1) t for equal stages: the bubble (p-1)/(v m). On a calibrated CPU machine whose ranks outnumber its
// cores the step is at least every rank's work over the cores (ClusterSpec::rank_share). Then per step: the data-parallel gradient reduction
// over dp x cp (all-reduce, or reduce-scatter + parameter all-gather under ZeRO-1; with overlap only what
// outlasts one micro-batch's backward shows), the optimizer (memory-bound: master weights, moments, gradient)
// and the weights' quantization.
#include <string>

#include "plan/cluster.h"
#include "plan/efficiency.h"
#include "plan/layout.h"
#include "plan/model_spec.h"
#include "plan/recipe_costs.h"

namespace nibble::plan {

// Bytes of one layer's element-wise work for one micro-batch on one rank (its two RMSNorms, SwiGLU, the two
// residual adds and, in a recipe with COAT, the compression of their saved inputs), as the step model's
// memory-bound term charges them: twice the layer's saved activations (plan/activations.h: replicated +
// tensor_parallel) forward, written once and read once, and twice that backward.
struct ElementwiseBytes {
  double forward = 0;
  double backward = 0;
  double total() const { return forward + backward; }
};

// The count on a calibrated CPU description, whose `cpu.elementwise_gbps.<slot>` rate for a layer in `recipe`
// is over these bytes: the bf16 recipe's count for every recipe (the recipe's extra work, COAT's compression
// among it, is in its slot's rate), so one count and, at the calibrated shape, the planner's term is the time
// measured. plan/calibrate.py divides its timings by exactly this (`nibble-plan elementwise-bytes`) rather than
// restating it. `cuda_sm`: the description's (0 on a CPU). Throws InvalidArgument for an unknown recipe.
ElementwiseBytes calibrated_elementwise_bytes(const ModelSpec& model, const std::string& recipe, const Layout& layout,
                                              int cuda_sm = 0);

// What the step model charges a layer in the recipe of `costs` on `cluster`: calibrated_elementwise_bytes where
// the cluster has a measured element-wise rate for the recipe's slot (its fprop format), else the recipe's own
// saved activations (charged at memory.bandwidth_gbps). `nibble-plan predict` reports it per layer.
ElementwiseBytes layer_elementwise_bytes(const ModelSpec& model, const RecipeCosts& costs, const Layout& layout,
                                         const ClusterSpec& cluster);

struct StepTime {
  // Seconds per step on the critical path, by cause (the pipeline terms are the slowest stage's).
  double gemm = 0;            // Linear GEMMs (and the logits)
  double attention = 0;       // attention core
  double memory_bound = 0;    // element-wise, quantization, dequantization
  double layer_remainder = 0;  // a calibrated CPU's measured rest of a layer (ClusterSpec::layer_remainder_ns_per_token)
  double tp_comm = 0;
  double cp_comm = 0;
  double pp_comm = 0;
  double recompute = 0;       // (included in the above; shown for the report)
  double bubble = 0;          // pipeline fill and drain
  double dp_comm = 0;         // exposed data-parallel reduction (and ZeRO-1 all-gather)
  double optimizer = 0;
  double shared_cores = 0;    // ranks time-sharing a CPU machine's fewer cores: the step beyond the pipeline's
  double total = 0;
  double stage_seconds_max = 0;  // slowest stage, per micro-batch
  double tokens_per_second = 0;
  double mfu = 0;  // model FLOPs (flops.h, no recompute) / (step x GPUs x dense peak of the recipe's GEMM format)
  double hardware_tflops_per_gpu = 0;  // FLOPs actually run (recompute included, GEMMs only) per GPU per second
};

StepTime estimate_step_time(const ModelSpec& model, const TrainingSpec& training, const Layout& layout,
                            const ClusterSpec& cluster, const Efficiency& efficiency = kFittedEfficiency);

}  // namespace nibble::plan
