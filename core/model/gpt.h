#pragma once
// The GPT decoder: token embedding, L x [RMSNorm -> QKV -> causal attention (RoPE, torch SDPA) -> output
// projection -> residual; RMSNorm -> gate, up -> SwiGLU -> down -> residual], final RMSNorm, untied LM head,
// cross-entropy. Every sharded weight and every Megatron region goes through a TensorParallel, so the same
// model runs at tp = 1 (SingleRankTensorParallel) or over a tp group (parallel/nn).
//
// Parameters are this rank's shards of full tensors that are initialised from (seed, parameter name) and then
// sliced, so every tp layout starts from the same full model. Full layouts (what a checkpoint reshards):
//   embedding.weight, lm_head.weight [vocab, hidden], split along dim 0 (vocabulary)
//   layers.i.qkv.weight [3 * hidden, hidden], rows ordered head by head as [q | k | v] of head_dim each
//     (Megatron's interleave), so a dim-0 shard holds whole heads; split along dim 0
//   layers.i.gate.weight, layers.i.up.weight [ffn, hidden], dim 0;  layers.i.out.weight [hidden, hidden],
//   layers.i.down.weight [hidden, ffn], dim 1;  *norm.weight [hidden], replicated.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/linear.h"
#include "core/model/gpt_config.h"
#include "core/model/tensor_parallel.h"

namespace nibble::nn {

struct ParamInfo {
  std::string name;
  torch::Tensor tensor;            // this rank's shard (float32 leaf, requires_grad)
  int shard_dim = -1;              // -1: replicated over the tp group
  std::vector<int64_t> full_shape;
};

// The recipe of transformer layer `index`: bf16 for the first bf16_first and last bf16_last layers.
std::string layer_recipe_name(const GptConfig& config, int64_t index);

class Gpt {
 public:
  // Validates the config and the tp divisibility (heads, ffn, vocab by tp.size()).
  Gpt(GptConfig config, std::shared_ptr<TensorParallel> tp);

  // tokens, targets: int64 [batch, seq] (seq <= config.seq_len). Mean cross-entropy over all tokens.
  torch::Tensor loss(const torch::Tensor& tokens, const torch::Tensor& targets);
  // This rank's vocabulary slice of the logits: [batch * seq, vocab / tp] (full tokens, also under SP).
  torch::Tensor logits(const torch::Tensor& tokens);

  const std::vector<ParamInfo>& params() const { return params_; }
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;
  // Norm weights: replicated over tp; under SP their gradients must go through all_reduce_replicated_grads.
  std::vector<torch::Tensor> replicated_parameters() const;
  const std::vector<std::shared_ptr<LinearState>>& linear_states() const { return states_; }
  void end_step();  // delayed scaling: fold this step's amaxes (every Linear)
  void zero_grad();
  const GptConfig& config() const { return config_; }
  TensorParallel& tensor_parallel() const { return *tp_; }

 private:
  struct Layer {
    torch::Tensor attn_norm, qkv, out, mlp_norm, gate, up, down;
    std::shared_ptr<LinearState> s_qkv, s_out, s_gate, s_up, s_down;
    bool compress = false;
    std::string name;
  };
  torch::Tensor add_param(const std::string& name, std::vector<int64_t> full_shape, int shard_dim, double std);
  std::shared_ptr<LinearState> add_state(const std::string& recipe, const std::string& name);
  torch::Tensor hidden_states(const torch::Tensor& tokens);  // final-normed [tokens(/tp under SP), hidden]
  torch::Tensor attention(const Layer& l, const torch::Tensor& x, int64_t batch, int64_t seq);

  GptConfig config_;
  std::shared_ptr<TensorParallel> tp_;
  std::vector<ParamInfo> params_;
  std::vector<std::shared_ptr<LinearState>> states_;
  torch::Tensor embedding_, final_norm_, lm_head_;
  std::shared_ptr<LinearState> s_head_;
  std::vector<Layer> layers_;
  torch::Tensor rope_cos_, rope_sin_;
};

}  // namespace nibble::nn
