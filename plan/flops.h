#pragma once
// FLOP counts. The published figures this planner is checked against count FLOPs the way Narayanan et al. 2021
// ("Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", Appendix, Eq. 3) do:
// GEMMs only (QKV, QK^T, attention-over-values, output projection, the two MLP matrices, the logits), one
// multiply-add = 2 FLOPs, the full s x s attention matrix (no causal halving), backward = 2x forward:
//   with full recomputation (4 forward-equivalents):  F = 96 B s l h^2 (1 + s/(6h) + V/(16 l h))
//   without (3):                                      F = 72 B s l h^2 (1 + s/(6h) + V/(12 l h))
// (the logit layer is never recomputed, hence 16 vs 12). Korthikanti et al. 2022's model FLOPs (MFU) are the
// 72 form. These closed forms hold for Megatron's GPT (MLP 4h, GELU, one KV head per head); the per-layer
// counts below hold for any ModelSpec and reduce to them (a unit test checks that).
#include <cstdint>

#include "plan/model_spec.h"

namespace nibble::plan {

// Eq. 3 of Narayanan et al. 2021 for `batch` sequences (per step).
double narayanan_flops(const ModelSpec& model, int64_t batch, bool full_recompute);

// Forward FLOPs of one transformer layer for `sequences` sequences of model.seq_len tokens.
struct LayerForwardFlops {
  double linear = 0;          // QKV, output projection, MLP: 2 x tokens x layer_params
  double attention_core = 0;  // QK^T and attention over values: 4 s^2 h per sequence (full square)
};
LayerForwardFlops layer_forward_flops(const ModelSpec& model, double sequences);
double logits_forward_flops(const ModelSpec& model, double sequences);  // 2 s h V per sequence

// Model FLOPs of a training step of `batch` sequences (forward + backward, no recomputation): what MFU divides.
double model_flops_per_step(const ModelSpec& model, int64_t batch);

}  // namespace nibble::plan
