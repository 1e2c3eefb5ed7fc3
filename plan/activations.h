#pragma once
// Activations saved for backward, per transformer layer and micro-batch on one rank, itemised the way
// Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer Models", Sec. 4) count them:
// for Megatron's GPT in 16-bit, 34sbh + 5as^2b bytes per layer without parallelism; with tensor parallelism the
// parts inside the tp regions divide by t and the rest (norm inputs, the Linear inputs that precede a
// column-parallel Linear, dropout masks: 10sbh) divides by t only under sequence parallelism; selective
// recomputation drops the 5as^2b attention-core term; full recomputation keeps only the layer input (2sbh).
// The same items give nibble's Llama-style layer (SwiGLU with separate gate and up Linears, RMSNorm, fused
// attention, no dropout), and each item takes the bytes per element nibble saves it in: a Linear keeps its
// input's columnwise copy in the recipe's format (BF16 under bf16), compressed activations keep non-linear ops'
// inputs as FP8 1x16 groups, and what is kept as is has the hidden states' type (ModelSpec::activation_bytes:
// FP32 in nibble, 16-bit in Megatron).
#include "plan/layout.h"
#include "plan/model_spec.h"
#include "plan/recipe_costs.h"

namespace nibble::plan {

struct LayerActivations {
  double replicated = 0;      // bytes not split by tp (split by tp only under sequence parallelism)
  double tensor_parallel = 0;  // bytes already split by tp
  double attention_scores = 0;  // the s x s term (materialised attention), split by tp
  // Of tensor_parallel: Q, K, V and a fused kernel's output, kept by the attention kernel (torch's), not by
  // nibble's own autograd functions (what nibble-train's memory account meters: saved_per_microbatch).
  double attention_core = 0;
  double total() const { return replicated + tensor_parallel + attention_scores; }
};

// Saved bytes of one layer for one micro-batch on one rank, before recomputation (`layout` gives tp, cp, the
// micro-batch and sequence parallelism; recompute is applied by saved_activation_bytes below).
LayerActivations layer_activations(const ModelSpec& model, const RecipeCosts& costs, const Layout& layout);

// What one layer keeps between its forward and backward under layout.recompute: everything (none), everything
// but the attention scores (selective), or only its input, activation_bytes per element of the s/cp x b x h
// input (/tp under sequence parallelism) (full).
double saved_activation_bytes(const ModelSpec& model, const RecipeCosts& costs, const Layout& layout);

}  // namespace nibble::plan
