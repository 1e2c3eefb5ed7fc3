#pragma once
// The local half of every gradient norm in nibble: one read of a list of torch gradients giving their FP64 sum
// of squares (fixed order, thread-count independent: optim/grad_check.h) and the first NaN/Inf. The optimizer's
// own step, its clipping, ZeRO-1's shards and the global norm over process groups (parallel/nn/global_clip.h)
// all start from these sums, so no two paths square and add gradients differently.
#include <torch/torch.h>

#include <string>
#include <vector>

#include "optim/grad_check.h"

namespace nibble::optim {

// Gradients: float32 or bfloat16 CPU or CUDA tensors (any strides: read through a contiguous copy where needed);
// undefined tensors are skipped (parameters without a gradient). first_nonfinite indexes `grads`. `names`
// (empty, or one per gradient) names a gradient in errors.
GradientReport check_gradient_tensors(const std::vector<torch::Tensor>& grads,
                                      const std::vector<std::string>& names = {});

// The FP64 sum of squares of `grads`; +inf when any element is NaN/Inf, so that a norm reduced over ranks is
// non-finite on every rank and every rank clips (coefficient 0) or skips alike.
double grad_sum_squares(const std::vector<torch::Tensor>& grads);

}  // namespace nibble::optim
