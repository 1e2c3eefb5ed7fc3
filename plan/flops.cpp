// FLOP counts (see plan/flops.h).
#include "plan/flops.h"

namespace nibble::plan {

double narayanan_flops(const ModelSpec& model, int64_t batch, bool full_recompute) {
  const double B = static_cast<double>(batch), s = static_cast<double>(model.seq_len);
  const double l = static_cast<double>(model.layers), h = static_cast<double>(model.hidden);
  const double V = static_cast<double>(model.vocab);
  if (full_recompute) return 96.0 * B * s * l * h * h * (1.0 + s / (6.0 * h) + V / (16.0 * l * h));
  return 72.0 * B * s * l * h * h * (1.0 + s / (6.0 * h) + V / (12.0 * l * h));
}

LayerForwardFlops layer_forward_flops(const ModelSpec& model, double sequences) {
  const double s = static_cast<double>(model.seq_len), h = static_cast<double>(model.hidden);
  LayerForwardFlops f;
  f.linear = 2.0 * sequences * s * static_cast<double>(model.layer_params());
  f.attention_core = 4.0 * sequences * s * s * h;
  return f;
}

double logits_forward_flops(const ModelSpec& model, double sequences) {
  return 2.0 * sequences * static_cast<double>(model.seq_len) * static_cast<double>(model.hidden) *
         static_cast<double>(model.vocab);
}

double model_flops_per_step(const ModelSpec& model, int64_t batch) {
  const LayerForwardFlops layer = layer_forward_flops(model, static_cast<double>(batch));
  const double forward = static_cast<double>(model.layers) * (layer.linear + layer.attention_core) +
                         logits_forward_flops(model, static_cast<double>(batch));
  return 3.0 * forward;
}

}  // namespace nibble::plan
