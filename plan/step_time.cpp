// Step-time model (see plan/step_time.h for what is counted and why).
#include "plan/step_time.h"

#include <algorithm>
#include <vector>

#include "plan/activations.h"
#include "plan/collectives.h"
#include "plan/flops.h"
#include "plan/memory_model.h"
#include "plan/recipe_costs.h"

namespace nibble::plan {
namespace {

// Twice the layer's saved activations forward (written once, read once), twice that backward.
ElementwiseBytes elementwise_bytes(const LayerActivations& saved) {
  ElementwiseBytes e;
  e.forward = 2.0 * (saved.replicated + saved.tensor_parallel);
  e.backward = 2.0 * e.forward;
  return e;
}

// One pass (forward or backward) of one layer or stage extra, by cause, in seconds.
struct Pass {
  double gemm = 0, attention = 0, memory_bound = 0, remainder = 0, tp_comm = 0, cp_comm = 0, pp_comm = 0, recompute = 0;
  double total() const { return gemm + attention + memory_bound + remainder + tp_comm + cp_comm + pp_comm + recompute; }
  Pass& operator+=(const Pass& o) {
    gemm += o.gemm, attention += o.attention, memory_bound += o.memory_bound, remainder += o.remainder;
    tp_comm += o.tp_comm, cp_comm += o.cp_comm, pp_comm += o.pp_comm, recompute += o.recompute;
    return *this;
  }
};

struct Rates {
  const ClusterSpec& cluster;
  const Efficiency& eff;
  double flops(GemmFormat f) const {
    const double peak = cluster.peak_flops(f);
    return (peak > 0 ? peak : cluster.peak_flops(GemmFormat::kBF16)) * eff.gemm;
  }
  double hbm() const { return cluster.hbm_gbps * 1e9 * eff.hbm; }
  // The attention core: a calibrated CPU's measured rate for it (torch SDPA, FP32), else the BF16 GEMM rate.
  double attention() const {
    return cluster.attention_tflops > 0 ? cluster.attention_tflops * 1e12 * eff.gemm : flops(GemmFormat::kBF16);
  }
  // A layer's element-wise work in a recipe of this slot: a calibrated CPU's measured rate, else 0 (use hbm()).
  double elementwise(GemmFormat slot) const { return cluster.elementwise_gbps[static_cast<size_t>(slot)] * 1e9 * eff.hbm; }
  // The rest of a layer per token on a calibrated CPU (ClusterSpec::layer_remainder_ns_per_token), else 0.
  double remainder_seconds_per_token(GemmFormat slot) const {
    return cluster.layer_remainder_ns_per_token[static_cast<size_t>(slot)] * 1e-9;
  }
};

struct LayerPasses {
  Pass forward, backward;  // backward includes recomputation
};

LayerPasses layer_passes(const ModelSpec& model, const RecipeCosts& costs, const Layout& layout, const Rates& r) {
  const double t = layout.mesh.tp, c = layout.mesh.cp;
  const double b = static_cast<double>(layout.micro_batch);
  const double h = static_cast<double>(model.hidden), f = static_cast<double>(model.ffn_hidden());
  const double kv_dim = static_cast<double>(model.kv() * model.head_dim());
  const double tokens = b * static_cast<double>(model.seq_len) / c;  // this cp rank's tokens, before any tp split
  const LayerForwardFlops flops = layer_forward_flops(model, b);
  const double linear = flops.linear / (t * c);
  const double core = flops.attention_core / (t * c);

  LayerPasses p;
  Pass& fw = p.forward;
  Pass& bw = p.backward;
  fw.gemm = linear / r.flops(costs.fprop);
  bw.gemm = linear / r.flops(costs.dgrad) + linear / r.flops(costs.wgrad);

  const double attention = r.attention();
  if (model.attention == AttentionKind::kFlash) {
    fw.attention = 0.5 * core / attention;  // causal: half the square
    bw.attention = 2.5 * fw.attention;
  } else {
    const double scores = b * static_cast<double>(model.heads) / t * static_cast<double>(model.seq_len) / c *
                          static_cast<double>(model.seq_len);
    const double bytes = (model.dropout ? 13.0 : 8.0) * scores;
    fw.attention = core / attention + bytes / r.hbm();
    bw.attention = 2.0 * fw.attention;
  }

  // Norms, SwiGLU, residual adds: a calibrated CPU's measured rate for the recipe's slot (over the bf16 count,
  // layer_elementwise_bytes), else the memory bandwidth.
  const ElementwiseBytes elementwise = layer_elementwise_bytes(model, costs, layout, r.cluster);
  const double elementwise_rate = r.elementwise(costs.fprop) > 0 ? r.elementwise(costs.fprop) : r.hbm();
  fw.memory_bound = elementwise.forward / elementwise_rate;
  bw.memory_bound = elementwise.backward / elementwise_rate;
  if (costs.quantized && !costs.quantize_in_gemm_rate) {
    // Linear inputs (x) and output gradients (dy) per layer, in elements: QKV and MLP-in read the full (gathered)
    // activation, output projection and MLP-out their tp slice; dy the other way round.
    const double x = tokens * (h + h / t + h + f / t);
    const double dy = tokens * ((h + 2 * kv_dim) / t + h + (model.mlp_matrices() - 1) * f / t + h);
    fw.memory_bound += x * (2.0 + costs.x_row + costs.x_col) / r.hbm();
    bw.memory_bound += dy * (2.0 + costs.dy_row + costs.dy_col) / r.hbm();
    if (costs.dequantized) {  // no native path: each GEMM decodes its two operands to BF16 first
      const double w = static_cast<double>(model.layer_params()) / t;
      fw.memory_bound += (x * (costs.x_row + 2.0) + w * (costs.w_row + 2.0)) / r.hbm();
      bw.memory_bound += (dy * (costs.dy_row + costs.dy_col + 4.0) + x * (costs.x_col + 2.0) + w * (costs.w_col + 2.0)) /
                         r.hbm();
    }
  }

  // What a calibrated CPU measured of a 1-rank layer beyond the terms above (RoPE, permutes and copies,
  // autograd's per-op work), per token: on this rank's tokens, split over tp as the layer's tensors are, and a
  // third forward, two thirds backward, as its GEMMs.
  const double remainder = r.remainder_seconds_per_token(costs.fprop) * tokens / t;
  fw.remainder = remainder / 3.0;
  bw.remainder = 2.0 * remainder / 3.0;

  if (layout.mesh.tp > 1) {
    const LinkSpec link = link_for_group(r.cluster, 1, layout.mesh.tp);
    const double bytes = 2.0 * tokens * h;
    const double net = r.eff.network;
    if (layout.sequence_parallel) {
      // FP8 per-tensor recipes all-gather their 1-byte copy (docs/PARALLEL.md); the others gather BF16.
      const bool fp8_gather = costs.recipe == "fp8_current" || costs.recipe == "fp8_delayed";
      const double gather = fp8_gather ? tokens * h * costs.x_row : bytes;
      fw.tp_comm = 2.0 * (all_gather_seconds(gather, layout.mesh.tp, link, net) +
                          reduce_scatter_seconds(bytes, layout.mesh.tp, link, net));
      bw.tp_comm = 2.0 * (all_gather_seconds(bytes, layout.mesh.tp, link, net) +
                          reduce_scatter_seconds(bytes, layout.mesh.tp, link, net));
    } else {
      fw.tp_comm = 2.0 * all_reduce_seconds(bytes, layout.mesh.tp, link, r.eff.network);
      bw.tp_comm = fw.tp_comm;
    }
  }

  if (layout.mesh.cp > 1) {
    // Ring attention: this rank's K and V chunk (its tp share) travels cp-1 hops, each overlapped with the
    // previous chunk's attention; backward moves K, V and their gradients.
    const LinkSpec link = link_for_group(r.cluster, layout.mesh.tp, layout.mesh.cp);
    const double kv_bytes = 2.0 * tokens * 2.0 * kv_dim / t;
    const double ring = (c - 1) * p2p_seconds(kv_bytes, link, r.eff.network);
    fw.cp_comm = std::max(0.0, ring - fw.attention);
    bw.cp_comm = std::max(0.0, 2.0 * ring - bw.attention);
  }

  switch (layout.recompute) {
    case Recompute::kNone:
      break;
    case Recompute::kSelective:
      bw.recompute = model.attention == AttentionKind::kMaterialized ? fw.attention : 0.0;
      break;
    case Recompute::kFull:
      bw.recompute = fw.total();
      break;
  }
  return p;
}

}  // namespace

ElementwiseBytes calibrated_elementwise_bytes(const ModelSpec& model, const std::string& recipe, const Layout& layout,
                                              int cuda_sm) {
  (void)recipe_costs(recipe, cuda_sm);  // an unknown recipe throws; every known one is counted as bf16
  return elementwise_bytes(layer_activations(model, recipe_costs("bf16", cuda_sm), layout));
}

ElementwiseBytes layer_elementwise_bytes(const ModelSpec& model, const RecipeCosts& costs, const Layout& layout,
                                         const ClusterSpec& cluster) {
  if (cluster.elementwise_gbps[static_cast<size_t>(costs.fprop)] > 0)
    return calibrated_elementwise_bytes(model, costs.recipe, layout, cluster.cuda_sm);
  return elementwise_bytes(layer_activations(model, costs, layout));
}

StepTime estimate_step_time(const ModelSpec& model, const TrainingSpec& training, const Layout& layout,
                            const ClusterSpec& cluster, const Efficiency& efficiency) {
  const Rates r{cluster, efficiency};  // a rank's own device (or core); shared CPU cores are applied below
  const RecipeCosts costs = recipe_costs(training.recipe, cluster.cuda_sm);
  const RecipeCosts bf16 = recipe_costs("bf16", cluster.cuda_sm);
  const RecipeCosts head = recipe_costs(training.lm_head_recipe, cluster.cuda_sm);
  const LayerPasses low = layer_passes(model, costs, layout, r);
  const LayerPasses high = layer_passes(model, bf16, layout, r);

  const int p = layout.mesh.pp;
  const int64_t per_stage = model.layers / p;
  const double t = layout.mesh.tp;
  const double tokens = static_cast<double>(layout.micro_batch) * static_cast<double>(model.seq_len) / layout.mesh.cp;
  const double m = static_cast<double>(layout.microbatches(training));

  std::vector<Pass> stage_fw(static_cast<size_t>(p)), stage_bw(static_cast<size_t>(p));
  for (int k = 0; k < p; ++k) {
    Pass& fw = stage_fw[static_cast<size_t>(k)];
    Pass& bw = stage_bw[static_cast<size_t>(k)];
    for (int64_t i = k * per_stage; i < (k + 1) * per_stage; ++i) {
      const bool in_bf16 = training.bf16_layer(i, model.layers);
      fw += (in_bf16 ? high : low).forward;
      bw += (in_bf16 ? high : low).backward;
    }
    if (k == 0) {  // embedding lookup: write the activation forward, scatter-add its gradient backward
      fw.memory_bound += 2.0 * tokens * static_cast<double>(model.hidden) / r.hbm();
      bw.memory_bound += 3.0 * 2.0 * tokens * static_cast<double>(model.hidden) / r.hbm();
    }
    if (k == p - 1) {  // logits (vocab-parallel) and cross-entropy: BF16 logits, FP32 softmax read and written
      const double logits = logits_forward_flops(model, static_cast<double>(layout.micro_batch)) / (t * layout.mesh.cp);
      fw.gemm += logits / r.flops(head.fprop);
      bw.gemm += logits / r.flops(head.dgrad) + logits / r.flops(head.wgrad);
      const double elems = tokens * static_cast<double>(model.vocab) / t;
      fw.memory_bound += elems * (2.0 + 4.0) / r.hbm();
      bw.memory_bound += elems * (4.0 + 2.0) / r.hbm();
    }
    if (p > 1) {  // one activation and one gradient per micro-batch to the neighbouring stage (tp-sharded)
      const LinkSpec link = link_for_group(cluster, layout.mesh.tp * layout.mesh.cp * layout.mesh.dp, 2);
      const double bytes = 2.0 * tokens * static_cast<double>(model.hidden) / t;
      fw.pp_comm += p2p_seconds(bytes, link, efficiency.network);
      bw.pp_comm += p2p_seconds(bytes, link, efficiency.network);
    }
  }

  size_t slowest = 0;
  double sum = 0;
  for (size_t k = 0; k < stage_fw.size(); ++k) {
    const double tk = stage_fw[k].total() + stage_bw[k].total();
    sum += tk;
    if (tk > stage_fw[slowest].total() + stage_bw[slowest].total()) slowest = k;
  }
  Pass per_mb = stage_fw[slowest];
  per_mb += stage_bw[slowest];
  const double t_max = per_mb.total();
  const double v = training.pp_schedule == "interleaved" ? std::max(1, training.virtual_stages) : 1;
  double pipeline = m * t_max + (sum - t_max) / v;
  // Ranks that time-share fewer cores than they are (a calibrated CPU machine, ClusterSpec::rank_share): the
  // cores run every rank's work in turn, so the step is at least all of it over the cores -- and a stage idle
  // in the bubble hands its core to the others, so the pipeline term above is only the other bound.
  const double share = cluster.rank_share(layout.gpus());
  const double dedicated = pipeline;
  if (share < 1.0) {
    const double ranks_per_stage = static_cast<double>(layout.gpus()) / p;
    pipeline = std::max(pipeline, ranks_per_stage * m * sum / cluster.cores_per_node);
  }

  StepTime st;
  st.stage_seconds_max = t_max;
  st.gemm = m * per_mb.gemm;
  st.attention = m * per_mb.attention;
  st.memory_bound = m * per_mb.memory_bound;
  st.layer_remainder = m * per_mb.remainder;
  st.tp_comm = m * per_mb.tp_comm;
  st.cp_comm = m * per_mb.cp_comm;
  st.pp_comm = m * per_mb.pp_comm;
  st.recompute = m * per_mb.recompute;
  st.bubble = std::max(0.0, dedicated - m * t_max);
  st.shared_cores = pipeline - dedicated;

  // Per step, on the slowest stage's parameters.
  double params = 0;
  for (int k = 0; k < p; ++k) params = std::max(params, stage_parameters(model, layout, k));
  const int dp_group = layout.mesh.dp * layout.mesh.cp;
  const LinkSpec dp_link = link_for_group(cluster, layout.mesh.tp, dp_group);
  const double grad_bytes = params * training.gradient_bytes;
  double reduce = 0, gather = 0;
  if (training.zero1) {
    reduce = reduce_scatter_seconds(grad_bytes, dp_group, dp_link, efficiency.network);
    gather = all_gather_seconds(params * (training.zero_fp8_all_gather ? 1.0 : 2.0), dp_group, dp_link,
                                efficiency.network);
  } else {
    reduce = all_reduce_seconds(grad_bytes, dp_group, dp_link, efficiency.network);
  }
  const double hidden_behind = training.overlap_dp ? stage_bw[slowest].total() : 0.0;
  st.dp_comm = std::max(0.0, reduce - hidden_behind) + gather;

  const double shard = training.zero1 ? dp_group : 1.0;
  const double states = states_per_parameter(training.optimizer) * state_bytes_per_element(training.optimizer_state);
  // Read and write master weights and moments, read the gradient, write the BF16 weights.
  st.optimizer = params / shard * (8.0 + 2.0 * states + training.gradient_bytes + 2.0) / r.hbm();
  // The weights' copies, once per step (a calibrated CPU Linear's rate does not hold them: it reuses its cache).
  if (costs.quantized) st.optimizer += params * (2.0 + costs.w_row + costs.w_col) / r.hbm();

  st.optimizer /= share;  // every rank steps its optimizer at once
  st.total = pipeline + st.dp_comm + st.optimizer;
  const double gpus = static_cast<double>(layout.gpus());
  st.tokens_per_second = static_cast<double>(training.global_batch * model.seq_len) / st.total;
  const double model_flops = model_flops_per_step(model, training.global_batch);
  // Against the dense peak of the format the recipe's GEMMs run in here (BF16 where nibble dequantizes): an
  // FP8 run is judged against the FP8 peak, so MFU stays a fraction of what the GPU could do.
  const double peak = cluster.peak_flops(costs.fprop) > 0 ? cluster.peak_flops(costs.fprop)
                                                          : cluster.peak_flops(GemmFormat::kBF16);
  st.mfu = model_flops / (st.total * gpus * peak);
  double run_flops = model_flops;
  const LayerForwardFlops lf = layer_forward_flops(model, static_cast<double>(training.global_batch));
  if (layout.recompute == Recompute::kFull) run_flops += static_cast<double>(model.layers) * (lf.linear + lf.attention_core);
  if (layout.recompute == Recompute::kSelective && model.attention == AttentionKind::kMaterialized)
    run_flops += static_cast<double>(model.layers) * lf.attention_core;
  st.hardware_tflops_per_gpu = run_flops / (st.total * gpus) / 1e12;
  return st;
}

}  // namespace nibble::plan
