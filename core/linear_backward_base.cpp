#include "core/linear_backward_base.h"

namespace nibble::core {

void LinearBackwardBase::release_variables() {
  x_col.reset();
  w_col.reset();
  x_dense.reset();
  weight.reset();
  x_mask.reset();
  w_mask.reset();
}

int64_t LinearBackwardBase::save_for_backward(const std::shared_ptr<LinearState>& layer, const torch::Tensor& x_tokens,
                                              torch::ScalarType input_dtype,
                                              const std::shared_ptr<QuantizedTensor>& x_row,
                                              const std::shared_ptr<QuantizedTensor>& x_col_copy,
                                              const torch::Tensor& w, bool bias, bool need_wgrad,
                                              const QuantizeRotatedX& quantize_rotated_x) {
  LinearState& s = *layer;
  const Recipe& r = s.recipe;
  const bool rotated = r.backward_hadamard;
  int64_t saved = 0;
  state = layer;
  x_dtype = input_dtype;
  w_dtype = w.scalar_type();
  has_bias = bias;
  // Before anything below draws from the layer's counter: the backward replays exactly these values.
  backward_counter = reserve_backward_counters(s);
  if (need_wgrad && rotated) {
    wgrad_rotation = next_rotation(x_tokens.size(0), s);
    x_col = quantize_rotated_x(rotate_inner(x_tokens.t(), wgrad_rotation));
    if (s.capture) s.captured["x_col"] = x_col;
    saved += x_col->rowwise->bytes();
  } else if (need_wgrad) {
    if (r.x_col.quantized) {
      x_col = x_col_copy;
      saved += x_col->columnwise->bytes();
    } else {
      x_dense = x_tokens.to(torch::kBFloat16);
      saved += x_dense.numel() * 2;
    }
  }
  if (r.w_col.quantized && !rotated) {
    w_col = s.w_col;  // the cached copy (not counted: it lives with the weight, not the activation)
  } else {
    weight = w.detach();
  }
  if (r.x_row.quantized && r.x_row.options.scheme == precision::Scheme::kMXFP4Quest) {
    x_mask = pack_mask(x_row->rowwise->mask);
    saved += x_mask.numel();
  }
  if (r.w_row.quantized && r.w_row.options.scheme == precision::Scheme::kMXFP4Quest)
    w_mask = pack_mask(s.w_row->rowwise->mask);
  return saved;
}

}  // namespace nibble::core
