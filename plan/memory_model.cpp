// Memory per rank (see plan/memory_model.h).
#include "plan/memory_model.h"

#include <algorithm>

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

double stage_parameters(const ModelSpec& model, const Layout& layout, int stage) {
  const int pp = layout.mesh.pp;
  const double t = layout.mesh.tp;
  double params = static_cast<double>(model.layers / pp) * static_cast<double>(model.layer_params()) / t;
  const double embedding = static_cast<double>(model.embedding_params()) / t;
  if (stage == 0) params += embedding;
  // The LM head: its own matrix when untied; tied, the last stage still keeps a copy when it is not stage 0.
  if (stage == pp - 1 && (!model.tied_embeddings || pp > 1)) params += embedding;
  return params;
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
  const double shard = training.zero1 ? static_cast<double>(layout.mesh.dp) * layout.mesh.cp : 1.0;
  const double state_bytes =
      states_per_parameter(training.optimizer) * state_bytes_per_element(training.optimizer_state);
  const double t = layout.mesh.tp;
  const double tokens = static_cast<double>(layout.micro_batch) * static_cast<double>(model.seq_len) / layout.mesh.cp;
  const double act_per_layer = saved_activation_bytes(model, costs, layout);
  // Full recomputation re-runs a layer's forward inside its backward: that layer's full activations are live.
  Layout no_recompute = layout;
  no_recompute.recompute = Recompute::kNone;
  const double working_layer =
      layout.recompute == Recompute::kFull ? saved_activation_bytes(model, costs, no_recompute) : 0.0;

  MemoryBreakdown best;
  for (int stage = 0; stage < layout.mesh.pp; ++stage) {
    MemoryBreakdown m;
    m.stage = stage;
    const double params = stage_parameters(model, layout, stage);
    m.weights = 2.0 * params;
    m.weight_copies = costs.quantized ? (costs.w_row + costs.w_col) * params : 0.0;
    m.master_weights = 4.0 * params / shard;
    m.gradients = static_cast<double>(training.gradient_bytes) * params;
    m.optimizer_states = state_bytes * params / shard;
    m.activations = act_per_layer * layers_in_flight(model, training, layout, stage) + working_layer;
    if (stage == layout.mesh.pp - 1) m.logits = tokens * static_cast<double>(model.vocab) / t * (2.0 + 4.0);
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
