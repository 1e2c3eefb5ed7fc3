#pragma once
// The sizes and numerics choices of a GPT decoder (Llama style: RMSNorm, RoPE, SwiGLU, untied LM head).
#include <cstdint>
#include <string>

#include "core/recipe.h"

namespace nibble::core::model {

struct GptConfig {
  int64_t vocab = 256;        // byte-level tokenizer by default
  int64_t hidden = 64;
  int64_t layers = 2;
  int64_t heads = 4;
  int64_t ffn_hidden = 0;     // 0: the Llama choice, 8/3 * hidden rounded up to a multiple of 32
  int64_t seq_len = 64;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  double init_std = 0.02;
  std::string recipe = "bf16";   // recipe_preset name for the transformer layers' Linears
  int64_t bf16_first = 0;        // keep the first N layers in bf16 (NVFP4's selective high precision)
  int64_t bf16_last = 0;         // ... and the last M
  // Per-operand overrides of the transformer layers' quantized recipes and a per-layer preset list
  // (core/recipe_overrides.h; "" = none / model.recipe with bf16_first and bf16_last).
  std::string recipe_overrides;
  std::string layer_recipes;
  std::string lm_head_recipe = "bf16";
  // Adaptive precision (launch/precision_policy.h): "fixed" keeps every Linear at its recipe; "adaptive" raises a
  // Linear one rung along adaptive_ladder (core/precision_ladder.h) when the worst SNR of its quantized copies
  // (train.stats_every's reduced statistics) is below adaptive_snr_db for adaptive_patience measurements in a
  // row, or at once when its weight gradient is non-finite. adaptive_measure = "loss_probe" decides from a loss
  // probe instead (core/adaptive_precision.h): every train.stats_every steps, adaptive_probe_batches fixed
  // training batches are evaluated as the model is and with each block one rung up; the block whose raise
  // lowers that loss the most, by >= adaptive_probe_gain % of it, for adaptive_patience probes in a row goes up.
  std::string precision_policy = "fixed";
  std::string adaptive_ladder = "mxfp8, bf16";
  std::string adaptive_measure = "snr";
  double adaptive_snr_db = 15.0;
  double adaptive_probe_gain = 0.05;
  int64_t adaptive_probe_batches = 4;
  int64_t adaptive_patience = 2;
  // Whether the norms and SwiGLU save their inputs for backward as FP8 1x16 groups (COAT): "auto" as the
  // layer's recipe says (every quantized preset does, bf16 does not), "true" in every layer, "false" in none.
  std::string compress_activations = "auto";
  bool tie_embeddings = false;   // the LM head reuses embedding.weight (GPT-2); off: untied (Llama)
  // Activation recomputation (core/model/recompute.h): "none"; "selective", the attention core (softmax(QKᵀ)V,
  // whose s² probabilities are the largest activation: Megatron's selective recomputation); "full", every
  // transformer layer keeps only its input and runs again in backward. Same gradients, bit for bit.
  std::string recompute = "none";
  // The attention core's arithmetic: "fp32" (q, k, v and the softmax in FP32, the CPU reference) or "bf16" (q, k,
  // v rounded to BF16 and the core run in BF16 with FP32 accumulation inside the kernel, as Transformer Engine and
  // torch autocast run it; the gradient passes the casts straight through). With "bf16" what the core saves for
  // backward is BF16, half the bytes, and on a GPU it is what flash attention needs.
  std::string attention_precision = "fp32";
  uint64_t seed = 0;             // parameter init and stochastic-rounding keys
  // Every Linear's recipe gets reproducible_sums (FP64 GEMM sums, tp partial sums added in FP64) and the
  // cross-entropy sums in FP64: a tp/sp split of the model then rounds as one rank does (core/recipe.h).
  bool reproducible_sums = false;

  int64_t head_dim() const { return hidden / heads; }
  int64_t ffn() const { return ffn_hidden > 0 ? ffn_hidden : ((hidden * 8 / 3) + 31) / 32 * 32; }
  // Throws InvalidArgument naming the key ("model.<key>"), its value and what is valid.
  void validate() const;
};

// Transformer layer `index`'s preset name: model.layer_recipes[index], else "bf16" inside bf16_first/bf16_last,
// else model.recipe.
std::string layer_recipe_name(const GptConfig& config, int64_t index);
// Its recipe: the preset with model.recipe_overrides applied when it quantizes anything (bf16 layers stay as
// they are), and the config's reproducible_sums.
Recipe layer_recipe(const GptConfig& config, int64_t index);

}  // namespace nibble::core::model
