#pragma once
// The gradient-clipping coefficient: the one rule every clipping caller uses (the trainer, global clipping over
// process groups, ZeRO-1, the optimizer's own clipping, the CUDA step's decide kernel, Python's clip_grad_norm_
// and ZeroAdamW), so that a run clips identically whichever path it takes. C++17: shared with .cu files.
#include <cfloat>

#include "precision/host_device.h"

namespace nibble::optim {

// torch.nn.utils.clip_grad_norm_'s rule: min(1, max_norm / (norm + 1e-6)), in double, rounded once to float.
// At norm == max_norm the coefficient is already below 1 (the 1e-6 guard), as in torch.
// A non-finite norm gives 0 (a NaN/Inf gradient: nothing may move; the step is skipped anyway).
// max_norm <= 0 (or NaN) means "no clipping" and gives 1: configs spell "off" as 0.
NIBBLE_HOST_DEVICE float clip_coefficient(double norm, double max_norm) {
  if (!(max_norm > 0.0)) return 1.0f;
  if (!(norm <= DBL_MAX)) return 0.0f;  // +inf or NaN (a norm is never negative); no libm call on the device
  const double c = max_norm / (norm + 1e-6);
  return c < 1.0 ? static_cast<float>(c) : 1.0f;
}

}  // namespace nibble::optim
