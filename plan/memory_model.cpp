// Memory per rank (see plan/memory_model.h).
#include "plan/memory_model.h"

#include <algorithm>
#include <vector>

#include "optim/state_codec.h"
#include "plan/activations.h"
#include "precision/error.h"

namespace nibble::plan {

double state_bytes_per_element(const std::string& codec) {
  constexpr int64_t n = int64_t{1} << 24;  // large enough that the codec's groups are full and int8 applies
  return static_cast<double>(optim::moment_layout(optim::parse_state_codec(codec), n).bytes()) / static_cast<double>(n);
}

int states_per_parameter(const std::string& optimizer) {
  if (optimizer == "adamw") return 2;
  if (optimizer == "sgd") return 1;
  throw InvalidArgument("optim.optimizer = '" + optimizer + "' is invalid: must be adamw or sgd");
}

std::vector<int64_t> stage_tensors(const ModelSpec& model, const Layout& layout, int stage) {
  const int pp = layout.mesh.pp;
  const int64_t t = layout.mesh.tp, h = model.hidden, f = model.ffn_hidden(), kv_dim = model.kv() * model.head_dim();
  std::vector<int64_t> n;
  if (stage == 0) n.push_back(model.embedding_params() / t);
  for (int64_t i = 0; i < model.layers / pp; ++i) {
    // attention norm, QKV, out-proj, MLP norm, then gate, up, down (SwiGLU) or fc1, fc2 (GELU)
    for (int64_t e : {h, (h + 2 * kv_dim) * h / t, h * h / t, h}) n.push_back(e);
    for (int k = 0; k < model.mlp_matrices(); ++k) n.push_back(f * h / t);
  }
  if (stage == pp - 1) {
    n.push_back(h);  // the final norm
    // The LM head: its own matrix when untied; tied, the last stage still keeps a copy when it is not stage 0.
    if (!model.tied_embeddings || pp > 1) n.push_back(model.embedding_params() / t);
  }
  return n;
}

double stage_parameters(const ModelSpec& model, const Layout& layout, int stage) {
  double params = 0;
  for (int64_t n : stage_tensors(model, layout, stage)) params += static_cast<double>(n);
  return params;
}

double stage_state_bytes(const ModelSpec& model, const TrainingSpec& training, const Layout& layout, int stage) {
  const optim::StateCodec codec = optim::parse_state_codec(training.optimizer_state);
  const int states = states_per_parameter(training.optimizer);
  const double shard = training.zero1 ? static_cast<double>(layout.mesh.dp) * layout.mesh.cp : 1.0;
  double bytes = 0;
  for (int64_t n : stage_tensors(model, layout, stage))
    bytes += 8.0 + states * static_cast<double>(optim::moment_layout(codec, n).bytes()) / shard;
  return bytes;
}

double layers_in_flight(const ModelSpec& model, const TrainingSpec& training, const Layout& layout, int stage) {
  const double p = layout.mesh.pp;
  const double k = stage;
  const double m = static_cast<double>(layout.microbatches(training));
  const double layers_per_stage = static_cast<double>(model.layers) / p;
  if (training.pp_schedule == "gpipe") return m * layers_per_stage;
  if (training.pp_schedule == "interleaved" && training.virtual_stages > 1) {
    const double v = training.virtual_stages;
    const double chunks = std::min(m * v, 2 * (p - k - 1) + (v - 1) * p + 1);
    return chunks * layers_per_stage / v;
  }
  return std::min(m, p - k) * layers_per_stage;
}

MemoryBreakdown estimate_memory(const ModelSpec& model, const TrainingSpec& training, const Layout& layout,
                                const ClusterSpec& cluster) {
  const RecipeCosts costs = recipe_costs(training.recipe, cluster.cuda_sm);
  const RecipeCosts bf16 = recipe_costs("bf16", cluster.cuda_sm);
  const RecipeCosts head = recipe_costs(training.lm_head_recipe, cluster.cuda_sm);
  const double t = layout.mesh.tp;
  const double tokens = static_cast<double>(layout.micro_batch) * static_cast<double>(model.seq_len) / layout.mesh.cp;
  const double act_low = saved_activation_bytes(model, costs, layout);
  const double act_high = saved_activation_bytes(model, bf16, layout);
  // nibble's own saves per layer (recompute none or selective: everything but the attention kernel's part).
  const auto nibble_saved = [&](const RecipeCosts& c) {
    const LayerActivations a = layer_activations(model, c, layout);
    return layout.recompute == Recompute::kFull ? saved_activation_bytes(model, c, layout)
                                                : a.replicated + a.tensor_parallel - a.attention_core;
  };
  const double nibble_low = nibble_saved(costs), nibble_high = nibble_saved(bf16);
  // Full recomputation re-runs a layer's forward inside its backward: that layer's full activations are live.
  Layout no_recompute = layout;
  no_recompute.recompute = Recompute::kNone;
  const double working_layer =
      layout.recompute == Recompute::kFull ? saved_activation_bytes(model, costs, no_recompute) : 0.0;
  const int64_t per_stage = model.layers / layout.mesh.pp;

  MemoryBreakdown best;
  for (int stage = 0; stage < layout.mesh.pp; ++stage) {
    MemoryBreakdown m;
    m.stage = stage;
    const double params = stage_parameters(model, layout, stage);
    int64_t low_layers = 0;
    for (int64_t i = stage * per_stage; i < (stage + 1) * per_stage; ++i)
      low_layers += training.bf16_layer(i, model.layers) ? 0 : 1;
    const double high_layers = static_cast<double>(per_stage - low_layers);
    m.parameters = 4.0 * params;
    m.weight_copies = costs.quantized ? (costs.w_row + costs.w_col) * static_cast<double>(low_layers) *
                                            static_cast<double>(model.layer_params()) / t
                                      : 0.0;
    m.gradients = static_cast<double>(training.gradient_bytes) * params;
    m.optimizer_states = stage_state_bytes(model, training, layout, stage);
    const double act_per_layer =
        (static_cast<double>(low_layers) * act_low + high_layers * act_high) / static_cast<double>(per_stage);
    m.activations = act_per_layer * layers_in_flight(model, training, layout, stage) + working_layer;
    m.saved_per_microbatch = static_cast<double>(low_layers) * nibble_low + high_layers * nibble_high;
    if (stage == layout.mesh.pp - 1) {
      // The vocab-parallel logits (BF16 + FP32 softmax), the final norm's input (the hidden states' type; /tp under
      // sequence parallelism) and the LM head's input (its recipe's columnwise copy, the gathered tokens).
      const double norm_in =
          tokens * static_cast<double>(model.hidden) * model.activation_bytes / (layout.sequence_parallel ? t : 1.0);
      const double head_in = tokens * static_cast<double>(model.hidden) * head.x_col;
      m.logits = tokens * static_cast<double>(model.vocab) / t * (2.0 + 4.0) + norm_in + head_in;
      m.saved_per_microbatch += norm_in + head_in;
      if (head.quantized)  // the head's Linear caches its weight's copies, tied or not
        m.weight_copies += (head.w_row + head.w_col) * static_cast<double>(model.embedding_params()) / t;
    }
    const double hidden_bytes = 2.0 * tokens * static_cast<double>(model.hidden);
    // tp: the all-gathered input of a column-parallel Linear, double-buffered; pp: one send and one receive;
    // dp: two 25 MiB gradient buckets in flight (Megatron's and torch DDP's default bucket size).
    m.comm_buffers = (t > 1 ? 2.0 * hidden_bytes : 0.0) + (layout.mesh.pp > 1 ? 2.0 * hidden_bytes / t : 0.0) +
                     (layout.mesh.dp * layout.mesh.cp > 1 ? 2.0 * 25.0 * 1024 * 1024 : 0.0);
    m.capacity = cluster.hbm_gb * 1e9 * (1.0 - kReservedHbmFraction);
    if (stage == 0 || m.total() > best.total()) best = m;
  }
  return best;
}

}  // namespace nibble::plan
