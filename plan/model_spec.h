#pragma once
// What is trained, and how, as the planner needs it: the transformer's sizes and architecture, the batch, the
// recipe, the optimizer-state codec, ZeRO-1, activation recomputation. Read from the same [model] / [train] /
// [optim] keys nibble-train reads (plan/train_config_reader.h), or built directly (the published runs of
// plan/published_runs.h describe Megatron's GPT, which differs from nibble's Llama-style layer).
#include <cstdint>
#include <string>

namespace nibble::plan {

// The layer's architecture. nibble-train's GPT is kSwiGlu + kFlash + RMSNorm without dropout; Megatron's GPT
// of the published runs is kGelu + kMaterialized (softmax and dropout over the s x s scores in memory).
enum class MlpKind : uint8_t { kGelu, kSwiGlu };  // 2 or 3 weight matrices of hidden x ffn
enum class AttentionKind : uint8_t {
  kMaterialized,  // scores written to HBM (Megatron 2021/2022): the 5as^2b activations of Korthikanti et al.
  kFlash,         // fused attention (nibble's scaled_dot_product_attention on a GPU): no s^2 tensor saved
};
enum class Recompute : uint8_t {
  kNone,
  kSelective,  // Korthikanti et al.: recompute the attention core (drops the 5as^2b activations)
  kFull,       // keep only each layer's input; the whole layer's forward runs again in backward
};
const char* recompute_name(Recompute r);  // "none", "selective", "full"
Recompute parse_recompute(const std::string& name);

struct ModelSpec {
  int64_t layers = 0;
  int64_t hidden = 0;
  int64_t heads = 0;
  int64_t kv_heads = 0;  // 0: = heads
  int64_t ffn = 0;       // 0: nibble's default (8/3 hidden rounded up to a multiple of 32)
  int64_t vocab = 0;
  int64_t seq_len = 0;
  bool tied_embeddings = false;
  MlpKind mlp = MlpKind::kSwiGlu;
  AttentionKind attention = AttentionKind::kFlash;
  bool dropout = false;  // Megatron's GPT: dropout after attention probabilities and both residual branches
  // Bytes per element of the hidden states, and so of what a layer saves uncompressed outside its Linears (norm
  // and SwiGLU inputs, the attention kernel's Q, K, V): nibble's residual stream is FP32 (its parameters are,
  // and no autocast runs), 4; Megatron's GPT of the published runs is 16-bit throughout, 2.
  int activation_bytes = 4;

  int64_t kv() const { return kv_heads > 0 ? kv_heads : heads; }
  int64_t ffn_hidden() const { return ffn > 0 ? ffn : ((hidden * 8 / 3) + 31) / 32 * 32; }
  int64_t head_dim() const { return hidden / heads; }
  int mlp_matrices() const { return mlp == MlpKind::kSwiGlu ? 3 : 2; }
  // Parameters of one transformer layer's Linears (weights only; norms' vectors are norm_params below).
  int64_t layer_params() const;
  // A layer's two RMSNorm weight vectors (replicated over tp, not split; nibble has no biases).
  int64_t layer_norm_params() const { return 2 * hidden; }
  int64_t embedding_params() const { return vocab * hidden; }
  int64_t total_params() const;  // layers + embedding (+ LM head when untied)
  void validate() const;         // InvalidArgument naming the field
};

struct TrainingSpec {
  int64_t global_batch = 1;  // sequences per optimizer step
  int64_t micro_batch = 1;   // sequences per pipeline micro-batch (per dp rank)
  std::string recipe = "bf16";  // nibble's preset names (core/recipe.h): bf16, fp8_delayed, ..., nvfp4, mxfp4
  int64_t bf16_first = 0;       // first / last transformer layers kept in BF16 (model.bf16_first / bf16_last)
  int64_t bf16_last = 0;
  std::string lm_head_recipe = "bf16";
  std::string optimizer = "adamw";    // adamw (2 states) | sgd (1 state: momentum)
  std::string optimizer_state = "fp32";  // optim.state codec: fp32, bf16, fp8, fp8_plain, int8
  bool zero1 = false;                 // optimizer states and master weights sharded over dp x cp
  bool zero_fp8_all_gather = false;   // ZeRO-1 parameter all-gather in FP8
  Recompute recompute = Recompute::kNone;
  bool sequence_parallel = false;
  std::string pp_schedule = "1f1b";   // gpipe | 1f1b | interleaved
  int virtual_stages = 1;
  bool overlap_dp = true;             // gradient reduction overlapped with backward (nibble's DP buckets)
  int gradient_bytes = 4;             // bytes per element of the gradients the data-parallel group reduces

  // Whether transformer layer `index` of `layers` runs in BF16 (bf16_first / bf16_last) rather than `recipe`:
  // the trainer's rule (core/model/gpt_config.cpp layer_recipe_name), which the memory and step models share.
  bool bf16_layer(int64_t index, int64_t layers) const { return index < bf16_first || index >= layers - bf16_last; }

  void validate() const;
};

}  // namespace nibble::plan
