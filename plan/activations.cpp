// Saved activations per layer (see plan/activations.h).
#include "plan/activations.h"

namespace nibble::plan {

LayerActivations layer_activations(const ModelSpec& model, const RecipeCosts& costs, const Layout& layout) {
  const double t = layout.mesh.tp;
  const double s_local = static_cast<double>(model.seq_len) / layout.mesh.cp;  // queries on this cp rank
  const double sbh = static_cast<double>(layout.micro_batch) * s_local * static_cast<double>(model.hidden);
  const double h = static_cast<double>(model.hidden);
  const double f_over_h = static_cast<double>(model.ffn_hidden()) / h;
  const double kv_over_h = static_cast<double>(model.kv() * model.head_dim()) / h;
  const double act = model.activation_bytes;  // the hidden states' bytes per element (nibble: FP32)
  const double nonlinear = costs.compress_activations ? costs.compressed_activation_bytes : act;
  const double linear_in = costs.x_col;  // a Linear's saved input (its columnwise copy; 2 in BF16)
  const double mask = model.dropout ? 1.0 : 0.0;  // one byte per element per dropout mask
  // Linears whose input is a norm's output: QKV and the MLP's first; nibble's SwiGLU has separate gate and up
  // Linears, each keeping its own copy of that input.
  const double column_inputs = model.mlp == MlpKind::kSwiGlu ? 3.0 : 2.0;

  LayerActivations a;
  // Outside the tp regions: both norms' inputs, the inputs of the column-parallel Linears (the norms' outputs),
  // the dropout masks after the attention and MLP blocks.
  a.replicated = sbh * (2 * nonlinear + column_inputs * linear_in + 2 * mask);
  // Inside: Q, K, V (the attention core's inputs), the row-parallel Linears' inputs, the MLP's activation-function
  // inputs. Fused attention also keeps its output for backward (shared storage with the out-proj input when
  // that Linear keeps its input as is).
  double core = (1 + 2 * kv_over_h) * act;  // Q, K, V: the core's backward needs them
  if (model.attention == AttentionKind::kFlash && linear_in != act) core += act;
  double inside = core;
  inside += linear_in;                                                       // out-proj input
  inside += (model.mlp == MlpKind::kSwiGlu ? 2.0 : 1.0) * f_over_h * nonlinear;  // GELU input / SwiGLU gate, up
  inside += f_over_h * linear_in;                                            // down-proj (fc2) input
  a.tensor_parallel = sbh * inside / t;
  a.attention_core = sbh * core / t;
  if (model.attention == AttentionKind::kMaterialized) {
    // softmax output (2 bytes), and with dropout its mask (1) and output (2): 5as^2b, or 2as^2b without dropout.
    const double per_score = 2.0 + (model.dropout ? 3.0 : 0.0);
    a.attention_scores = per_score * static_cast<double>(model.heads) * s_local * static_cast<double>(model.seq_len) *
                         static_cast<double>(layout.micro_batch) / t;
  }
  if (layout.sequence_parallel) a.replicated /= t;
  return a;
}

double saved_activation_bytes(const ModelSpec& model, const RecipeCosts& costs, const Layout& layout) {
  const LayerActivations a = layer_activations(model, costs, layout);
  switch (layout.recompute) {
    case Recompute::kNone:
      return a.total();
    case Recompute::kSelective:
      return a.replicated + a.tensor_parallel;
    case Recompute::kFull: {
      const double input = model.activation_bytes * static_cast<double>(layout.micro_batch) *
                           static_cast<double>(model.seq_len) / layout.mesh.cp * static_cast<double>(model.hidden);
      return layout.sequence_parallel ? input / layout.mesh.tp : input;
    }
  }
  return a.total();
}

}  // namespace nibble::plan
