#include "core/model/gpt.h"

#include <cmath>

#include "core/activations.h"
#include "core/model/recompute.h"
#include "core/model/rope.h"
#include "core/model/sharded_init.h"
#include "core/recipe.h"
#include "precision/error.h"

namespace nibble::core::model {
namespace {

void require_divides(int64_t tp, int64_t value, const std::string& what) {
  if (value % tp != 0)
    throw InvalidArgument("tp = " + std::to_string(tp) + " does not divide " + what + " = " + std::to_string(value) +
                          "; choose a tensor-parallel size that divides it");
}

}  // namespace

Gpt::Gpt(GptConfig config, std::shared_ptr<TensorParallel> tp, std::shared_ptr<ContextParallel> cp,
         std::vector<GptChunk> chunks)
    : config_(std::move(config)), tp_(std::move(tp)), cp_(std::move(cp)), chunks_(std::move(chunks)) {
  config_.validate();
  if (!tp_) throw InvalidArgument("Gpt: the TensorParallel implementation is null");
  if (!cp_) cp_ = std::make_shared<SingleRankContextParallel>();
  if (chunks_.empty()) chunks_.push_back({0, config_.layers, true, true});
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const GptChunk& k = chunks_[c];
    if (k.first_layer < 0 || k.end_layer < k.first_layer || k.end_layer > config_.layers ||
        (k.first_layer == k.end_layer && !k.embedding && !k.head) ||
        (c > 0 && k.first_layer < chunks_[c - 1].end_layer))
      throw InvalidArgument("Gpt: chunk " + std::to_string(c) + " holds layers [" + std::to_string(k.first_layer) +
                            ", " + std::to_string(k.end_layer) + "); chunks must be ordered ranges within [0, " +
                            std::to_string(config_.layers) + ")");
  }
  const int64_t t = tp_->size();
  require_divides(t, config_.heads, "model.heads");
  require_divides(t, config_.ffn(), "the MLP width (model.ffn_hidden)");
  require_divides(t, config_.vocab, "model.vocab");
  const int64_t h = config_.hidden, f = config_.ffn(), v = config_.vocab;
  const double std = config_.init_std;
  // GPT-2's scaled init for the projections that write into the residual stream.
  const double out_std = std / std::sqrt(2.0 * static_cast<double>(config_.layers));

  // Creation order = the whole model's order (embedding, layers, final norm, head) restricted to this rank.
  for (const GptChunk& k : chunks_) {
    std::vector<size_t> mine;
    if (k.embedding) embedding_ = add_param("embedding.weight", {v, h}, 0, std);
    for (int64_t i = k.first_layer; i < k.end_layer; ++i) {
      Layer l;
      l.name = "layers." + std::to_string(i);
      l.chunk = chunk_layers_.size();
      const Recipe recipe = layer_recipe(config_, i);
      l.compress = config_.compress_activations == "auto" ? recipe.compress_activations
                                                           : config_.compress_activations == "true";
      l.attn_norm = add_param(l.name + ".attn_norm.weight", {h}, -1, 0.0);
      l.qkv = add_param(l.name + ".qkv.weight", {3 * h, h}, 0, std);
      l.out = add_param(l.name + ".out.weight", {h, h}, 1, out_std);
      l.mlp_norm = add_param(l.name + ".mlp_norm.weight", {h}, -1, 0.0);
      l.gate = add_param(l.name + ".gate.weight", {f, h}, 0, std);
      l.up = add_param(l.name + ".up.weight", {f, h}, 0, std);
      l.down = add_param(l.name + ".down.weight", {h, f}, 1, out_std);
      l.s_qkv = add_state(recipe, l.name + ".qkv");
      l.s_out = add_state(recipe, l.name + ".out");
      l.s_gate = add_state(recipe, l.name + ".gate");
      l.s_up = add_state(recipe, l.name + ".up");
      l.s_down = add_state(recipe, l.name + ".down");
      mine.push_back(layers_.size());
      layers_.push_back(std::move(l));
    }
    if (k.head) {
      final_norm_ = add_param("final_norm.weight", {h}, -1, 0.0);
      if (!config_.tie_embeddings)
        lm_head_ = add_param("lm_head.weight", {v, h}, 0, std);
      else if (embedding_.defined())
        lm_head_ = embedding_;  // one parameter, two uses: autograd sums both gradients into it
      else
        lm_head_ = add_param("embedding.weight", {v, h}, 0, std, /*tied_copy=*/true);
      Recipe head = recipe_preset(config_.lm_head_recipe);
      head.reproducible_sums = config_.reproducible_sums;
      s_head_ = add_state(head, "lm_head");
    }
    chunk_layers_.push_back(std::move(mine));
  }
  std::tie(rope_cos_, rope_sin_) = rope_tables(config_.seq_len, config_.head_dim(), config_.rope_theta);
}

torch::Tensor Gpt::add_param(const std::string& name, std::vector<int64_t> full_shape, int shard_dim, double std,
                             bool tied_copy) {
  torch::NoGradGuard no_grad;
  // Only this rank's shard is made (core/model/sharded_init.h): the values of slicing the full tensor.
  const int64_t parts = shard_dim >= 0 ? tp_->size() : 1, index = shard_dim >= 0 ? tp_->rank() : 0;
  torch::Tensor shard;
  if (std == 0.0) {
    std::vector<int64_t> shape = full_shape;
    if (shard_dim >= 0) shape[static_cast<size_t>(shard_dim)] /= parts;
    shard = torch::ones(shape, torch::kFloat32);  // norm weights
  } else {
    shard = sharded_normal(layer_seed(name, config_.seed), std, full_shape, shard_dim, parts, index);
  }
  shard = shard.contiguous().set_requires_grad(true);
  params_.push_back({name, shard, shard_dim, full_shape, tied_copy});
  return shard;
}

std::shared_ptr<LinearState> Gpt::add_state(const Recipe& recipe, const std::string& name) {
  // A stochastic-rounding stream per layer, the same on every tp rank: each rank's shard draws the bits of its
  // elements' places in the whole tensor (parallel_linear.h WeightSplit), so tp rounds as one rank does.
  const uint64_t seed = layer_seed(name, config_.seed);
  auto s = std::make_shared<LinearState>(recipe, name, seed);
  states_.push_back(s);
  return s;
}

torch::Tensor Gpt::attention(const Layer& l, const torch::Tensor& x, int64_t batch, int64_t seq) {
  const int64_t heads = config_.heads / tp_->size(), hd = config_.head_dim();
  // This rank's tokens sit at their global positions (context parallel: two chunks of the sequence).
  const torch::Tensor pos = context_parallel_positions(seq, cp_->size(), cp_->rank());
  const torch::Tensor at = pos.to(rope_cos_.device());
  const torch::Tensor cos = rope_cos_.index_select(0, at), sin = rope_sin_.index_select(0, at);
  // The core's inputs in model.attention_precision: in BF16 they are rounded here, so it saves BF16 copies.
  const bool bf16 = config_.attention_precision == "bf16";
  const torch::ScalarType core_dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
  torch::Tensor q, k, v;
  {
    // [tokens, heads * 3 * hd] -> [batch, seq, heads, 3, hd] -> three [batch, heads, seq, hd] views. unbind, not
    // qkv[i]: its backward stacks the three gradients once, where each select's would fill a zero tensor of the
    // whole projection and autograd would add the three.
    const std::vector<torch::Tensor> parts = tp_->column_linear(x, l.qkv, std::nullopt, l.s_qkv)
                                                 .view({batch, seq, heads, 3, hd})
                                                 .permute({3, 0, 2, 1, 4})
                                                 .unbind(0);
    q = apply_rope(parts[0], cos, sin).to(core_dtype), k = apply_rope(parts[1], cos, sin).to(core_dtype);
    // V as its own tensor (to() alone would alias the strided view when the dtype is unchanged): the core saves
    // it for backward, and a view would keep the whole projection output (3x V's bytes) alive until then. The
    // projection's output dies with `parts` here, before the core and the output projection run.
    v = parts[2].to(core_dtype).contiguous();
  }
  torch::Tensor a;
  if (config_.recompute == "selective") {
    // (The node outlives this call: capture the model, not the locals.)
    a = recomputed(
        l.name + ".attention_core",
        [this](const std::vector<torch::Tensor>& in) { return cp_->causal_attention(in[0], in[1], in[2]); },
        {q, k, v}, {});
  } else {
    a = cp_->causal_attention(q, k, v);
  }
  // [batch, heads, seq, hd] -> [tokens, heads * hd], in FP32 for the output projection.
  a = a.transpose(1, 2).reshape({batch * seq, heads * hd}).to(torch::kFloat32);
  return tp_->row_linear(a, l.out, std::nullopt, l.s_out);
}

void Gpt::check_tokens(const torch::Tensor& tokens) const {
  if (tokens.dim() != 2 || tokens.scalar_type() != torch::kInt64)
    throw InvalidArgument("Gpt: tokens must be int64 [batch, seq], got " + std::string(c10::toString(tokens.scalar_type())) +
                          " " + c10::str(tokens.sizes()));
}

void Gpt::require_whole_model(const char* what) const {
  if (chunks_.size() != 1 || !chunks_[0].embedding || !chunks_[0].head)
    throw InvalidArgument(std::string("Gpt::") + what + " needs the whole model on this rank; under pipeline "
                          "parallelism run forward_chunk per stage");
}

torch::Tensor Gpt::forward_chunk(size_t chunk, const torch::Tensor& input, int64_t batch, int64_t seq) {
  if (chunk >= chunks_.size())
    throw InvalidArgument("Gpt::forward_chunk: chunk " + std::to_string(chunk) + " of " +
                          std::to_string(chunks_.size()));
  const int64_t max_seq = config_.seq_len / cp_->size();
  if (seq < 1 || seq > max_seq)
    throw InvalidArgument("Gpt: sequence length " + std::to_string(seq) + " per rank must be in [1, model.seq_len / cp = " +
                          std::to_string(max_seq) + "]");
  const GptChunk& k = chunks_[chunk];
  torch::Tensor h;
  if (k.embedding) {
    check_tokens(input);
    if (input.size(0) != batch || input.size(1) != seq)
      throw InvalidArgument("Gpt::forward_chunk: tokens " + c10::str(input.sizes()) + " but batch " +
                            std::to_string(batch) + ", seq " + std::to_string(seq));
    h = tp_->embedding(input.reshape({-1}), embedding_);
  } else {
    const int64_t rows = batch * seq / (tp_->sequence_parallel() ? tp_->size() : 1);
    if (input.dim() != 2 || input.size(0) != rows || input.size(1) != config_.hidden)
      throw InvalidArgument("Gpt::forward_chunk: chunk " + std::to_string(chunk) + " expects hidden states [" +
                            std::to_string(rows) + ", " + std::to_string(config_.hidden) + "], got " +
                            c10::str(input.sizes()));
    h = input;
  }
  for (size_t i : chunk_layers_[chunk]) {
    const Layer& l = layers_[i];
    if (config_.recompute != "full") {
      h = layer_forward(l, h, batch, seq);
      continue;
    }
    h = recomputed(
        l.name, [this, i, batch, seq](const std::vector<torch::Tensor>& in) {
          return layer_forward(layers_[i], in[0], batch, seq);
        },
        {h}, {l.attn_norm, l.qkv, l.out, l.mlp_norm, l.gate, l.up, l.down},
        {l.s_qkv, l.s_out, l.s_gate, l.s_up, l.s_down});
  }
  if (k.head) h = rms_norm(h, final_norm_, config_.norm_eps, false, "final_norm");
  return h;
}

torch::Tensor Gpt::layer_forward(const Layer& l, const torch::Tensor& x, int64_t batch, int64_t seq) {
  const double eps = config_.norm_eps;
  torch::Tensor n = rms_norm(x, l.attn_norm, eps, l.compress, l.name + ".attn_norm");
  torch::Tensor h = x + attention(l, n, batch, seq);
  n = rms_norm(h, l.mlp_norm, eps, l.compress, l.name + ".mlp_norm");
  torch::Tensor act;
  {
    // The gate and up projections' FP32 outputs (ffn wide, the largest activations) die here, before the down
    // projection runs: SwiGLU keeps what its backward needs (compressed or not), the Linears their quantized input.
    const torch::Tensor g = tp_->column_linear(n, l.gate, std::nullopt, l.s_gate);
    const torch::Tensor u = tp_->column_linear(n, l.up, std::nullopt, l.s_up);
    n.reset();
    act = swiglu(g, u, l.compress, l.name + ".swiglu");
  }
  return h + tp_->row_linear(act, l.down, std::nullopt, l.s_down);
}

torch::Tensor Gpt::head_logits(const torch::Tensor& hidden) {
  if (!lm_head_.defined()) throw InvalidArgument("Gpt::head_logits: this rank holds no LM head");
  return tp_->column_linear(hidden, lm_head_, std::nullopt, s_head_);
}

torch::Tensor Gpt::head_loss(const torch::Tensor& hidden, const torch::Tensor& targets) {
  return tp_->cross_entropy(head_logits(hidden), targets.reshape({-1}).to(torch::kInt64), config_.reproducible_sums);
}

torch::Tensor Gpt::logits(const torch::Tensor& tokens) {
  require_whole_model("logits");
  check_tokens(tokens);
  return head_logits(forward_chunk(0, tokens, tokens.size(0), tokens.size(1)));
}

torch::Tensor Gpt::loss(const torch::Tensor& tokens, const torch::Tensor& targets) {
  require_whole_model("loss");
  check_tokens(tokens);
  if (!targets.sizes().equals(tokens.sizes()))
    throw InvalidArgument("Gpt: targets " + c10::str(targets.sizes()) + " must match tokens " +
                          c10::str(tokens.sizes()));
  return head_loss(forward_chunk(0, tokens, tokens.size(0), tokens.size(1)), targets);
}

std::vector<std::pair<std::string, torch::Tensor>> Gpt::named_parameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const ParamInfo& p : params_) out.emplace_back(p.name, p.tensor);
  return out;
}

std::vector<torch::Tensor> Gpt::replicated_parameters() const {
  std::vector<torch::Tensor> out;
  for (const ParamInfo& p : params_)
    if (p.shard_dim < 0) out.push_back(p.tensor);
  return out;
}

void Gpt::set_rounding_stream(uint64_t stream, int chunk) {
  const uint64_t counter = stream << 24;  // 2^24 quantizations per Linear per micro-batch: never reached
  for (const Layer& l : layers_)
    if (chunk < 0 || l.chunk == static_cast<size_t>(chunk))
      for (const auto* s : {&l.s_qkv, &l.s_out, &l.s_gate, &l.s_up, &l.s_down}) (*s)->sr_counter = counter;
  if (s_head_ && (chunk < 0 || chunks_[static_cast<size_t>(chunk)].head)) s_head_->sr_counter = counter;
}

void Gpt::end_step() {
  for (const auto& s : states_) s->end_step();
}

void Gpt::zero_grad() {
  for (const ParamInfo& p : params_) p.tensor.mutable_grad() = torch::Tensor();
}

void Gpt::to(const torch::Device& device) {
  torch::NoGradGuard no_grad;
  zero_grad();
  // set_data keeps each parameter's identity (the Layer fields, params_ and any optimizer hold the same tensor).
  for (const ParamInfo& p : params_) p.tensor.set_data(p.tensor.to(device));
  rope_cos_ = rope_cos_.to(device);
  rope_sin_ = rope_sin_.to(device);
}

}  // namespace nibble::core::model
