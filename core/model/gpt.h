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
// With model.tie_embeddings the LM head is embedding.weight (same [vocab, hidden] layout and vocab split); under
// pp the last stage holds a copy (ParamInfo::tied_copy) kept equal by summing the two gradients across pp.
//
// Pipeline parallelism: a rank may hold only some of the model, as one or more chunks (virtual stages): a
// chunk is a run of layers, the first one also holding the embedding and the last one the final norm and LM
// head. Parameters keep their names and initial values whatever the split (init is keyed by name), so every
// layout starts from the same model. Context parallelism: each rank holds S/cp tokens of every sequence
// (context_parallel_interface.h's split); RoPE uses their global positions and attention goes through the
// ContextParallel seam.
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "core/linear.h"
#include "core/model/context_parallel_interface.h"
#include "core/model/gpt_config.h"
#include "core/model/tensor_parallel_interface.h"

namespace nibble::core::model {

struct ParamInfo {
  std::string name;
  torch::Tensor tensor;            // this rank's shard (float32 leaf, requires_grad)
  int shard_dim = -1;              // -1: replicated over the tp group
  std::vector<int64_t> full_shape;
  // Tied embeddings under pipeline parallelism: the last stage's copy of embedding.weight (the first stage
  // holds the original). Its gradient is summed with the original's across pp (so both stay equal) and it
  // is not counted twice in the gradient norm; each stage's shard file holds its own copy.
  bool tied_copy = false;
};

// A pipeline chunk: layers [first_layer, end_layer), plus the embedding before them and/or the final norm and
// LM head after them. (parallel/pipeline_schedule.h's assign_layers decides which chunks a pp rank holds.)
struct GptChunk {
  int64_t first_layer = 0, end_layer = 0;
  bool embedding = false, head = false;
};

// (layer_recipe_name / layer_recipe, each transformer layer's recipe: core/model/gpt_config.h.)

class Gpt {
 public:
  // Validates the config and the tp divisibility (heads, ffn, vocab by tp.size()). `cp` null: cp = 1.
  // `chunks` empty: the whole model as one chunk.
  Gpt(GptConfig config, std::shared_ptr<TensorParallel> tp, std::shared_ptr<ContextParallel> cp = nullptr,
      std::vector<GptChunk> chunks = {});

  // Whole model (one chunk with embedding and head). tokens, targets: int64 [batch, seq] -- this rank's
  // tokens (seq <= config.seq_len / cp; under cp the split of context_parallel_interface.h). Mean cross-entropy over
  // this rank's tokens.
  torch::Tensor loss(const torch::Tensor& tokens, const torch::Tensor& targets);
  // This rank's vocabulary slice of the logits: [batch * seq, vocab / tp] (full tokens, also under SP).
  torch::Tensor logits(const torch::Tensor& tokens);

  // Pipeline stages. forward_chunk(c, input, batch, seq): input is tokens int64 [batch, seq] when chunk c has
  // the embedding, else the previous chunk's output; returns the hidden states [batch * seq (/ tp under SP),
  // hidden] (after the final norm when the chunk has the head). head_loss / head_logits finish a head chunk.
  const std::vector<GptChunk>& chunks() const { return chunks_; }
  torch::Tensor forward_chunk(size_t chunk, const torch::Tensor& input, int64_t batch, int64_t seq);
  torch::Tensor head_loss(const torch::Tensor& hidden, const torch::Tensor& targets);
  torch::Tensor head_logits(const torch::Tensor& hidden);

  const std::vector<ParamInfo>& params() const { return params_; }
  std::vector<std::pair<std::string, torch::Tensor>> named_parameters() const;
  // Norm weights: replicated over tp; under SP their gradients must go through all_reduce_replicated_grads.
  std::vector<torch::Tensor> replicated_parameters() const;
  const std::vector<std::shared_ptr<LinearState>>& linear_states() const { return states_; }
  void end_step();  // delayed scaling: fold this step's amaxes (every Linear)
  // Stochastic rounding keyed by the data, not by call order: every Linear's counter (of chunk `chunk`, or all
  // when chunk < 0) restarts at stream << 24. The trainer passes (step, global micro-batch index), so a
  // micro-batch draws the same bits whichever dp rank runs it (dp runs then equal one rank bit for bit).
  void set_rounding_stream(uint64_t stream, int chunk = -1);
  void zero_grad();
  // Moves every parameter (in place: the same tensors, as torch's Module::to) and the RoPE tables to `device`;
  // tokens and targets must then be on it too. Gradients are dropped.
  void to(const torch::Device& device);
  torch::Device device() const { return rope_cos_.device(); }
  const GptConfig& config() const { return config_; }
  TensorParallel& tensor_parallel() const { return *tp_; }
  ContextParallel& context_parallel() const { return *cp_; }

 private:
  struct Layer {
    torch::Tensor attn_norm, qkv, out, mlp_norm, gate, up, down;
    std::shared_ptr<LinearState> s_qkv, s_out, s_gate, s_up, s_down;
    bool compress = false;
    std::string name;
    size_t chunk = 0;
  };
  torch::Tensor add_param(const std::string& name, std::vector<int64_t> full_shape, int shard_dim, double std,
                          bool tied_copy = false);
  std::shared_ptr<LinearState> add_state(const Recipe& recipe, const std::string& name);
  void check_tokens(const torch::Tensor& tokens) const;
  void require_whole_model(const char* what) const;
  torch::Tensor attention(const Layer& l, const torch::Tensor& x, int64_t batch, int64_t seq);
  // One transformer layer on its input (also what model.recompute = "full" runs again in backward).
  torch::Tensor layer_forward(const Layer& l, const torch::Tensor& x, int64_t batch, int64_t seq);

  GptConfig config_;
  std::shared_ptr<TensorParallel> tp_;
  std::shared_ptr<ContextParallel> cp_;
  std::vector<GptChunk> chunks_;
  std::vector<std::vector<size_t>> chunk_layers_;  // indices into layers_ per chunk
  std::vector<ParamInfo> params_;
  std::vector<std::shared_ptr<LinearState>> states_;
  torch::Tensor embedding_, final_norm_, lm_head_;  // undefined when no chunk of this rank holds them
  std::shared_ptr<LinearState> s_head_;
  std::vector<Layer> layers_;
  torch::Tensor rope_cos_, rope_sin_;
};

}  // namespace nibble::core::model
