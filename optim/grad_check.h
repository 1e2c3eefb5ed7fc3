#pragma once
// One read of every gradient before a step: the squared global norm (for clipping) and the first tensor
// holding NaN/Inf (the step is then skipped and that tensor named). Deterministic: per-chunk partial sums in
// double, added in chunk order, whatever the thread count.
#include <cstdint>
#include <span>

#include "optim/tensor_slot.h"

namespace nibble::optim {

struct GradientView {
  const void* data = nullptr;
  ElementType type = ElementType::kFloat32;
  int64_t numel = 0;
};

struct GradientReport {
  double sum_squares = 0.0;        // over all finite gradients (meaningless when first_nonfinite >= 0)
  int64_t first_nonfinite = -1;    // index into the span of the first gradient with NaN/Inf, or -1
  int64_t nonfinite_element = -1;  // the first bad element's index inside that gradient
};

GradientReport check_gradients(std::span<const GradientView> grads);

}  // namespace nibble::optim
