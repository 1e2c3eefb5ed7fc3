#pragma once
// The per-element FP32 update rules (AdamW with decoupled weight decay, SGD with momentum) and the per-step
// scalars they need. Operation order follows torch.optim's single-tensor implementations, so an "fp32"
// state run tracks torch.optim.AdamW / SGD to rounding. C++17: shared with .cu files.
#include <cmath>
#include <cstdint>

#include "precision/host_device.h"

namespace nibble::optim {

struct AdamWHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

struct SgdHyper {
  double lr = 1e-2, momentum = 0.9, dampening = 0.0, weight_decay = 0.0;
  bool nesterov = false;
};

// beta^t by binary powering: plain IEEE double products, the same bits on CPU and GPU (pow() is not).
NIBBLE_HOST_DEVICE double power_int(double beta, int64_t t) {
  double result = 1.0, base = beta;
  for (; t > 0; t >>= 1) {
    if (t & 1) result *= base;
    base *= base;
  }
  return result;
}

// What one AdamW step of one tensor needs, from the hyper-parameters and the tensor's step t (>= 1).
struct AdamWScalars {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
  float decay;                  // 1 - lr * weight_decay (decoupled)
  float step_size;              // lr / (1 - beta1^t)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^t)
};

NIBBLE_HOST_DEVICE AdamWScalars adamw_scalars(const AdamWHyper& h, int64_t t, double lr_factor) {
  const double lr = h.lr * lr_factor;
  AdamWScalars s;
  s.beta1 = static_cast<float>(h.beta1);
  s.beta2 = static_cast<float>(h.beta2);
  s.one_minus_beta1 = static_cast<float>(1.0 - h.beta1);
  s.one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
  s.eps = static_cast<float>(h.eps);
  s.decay = static_cast<float>(1.0 - lr * h.weight_decay);
  s.step_size = static_cast<float>(lr / (1.0 - power_int(h.beta1, t)));
  s.bias_correction2_sqrt = static_cast<float>(sqrt(1.0 - power_int(h.beta2, t)));
  return s;
}

// One element: p, m, v in FP32, g already scaled by the clip coefficient.
NIBBLE_HOST_DEVICE void adamw_element(float& p, float& m, float& v, float g, const AdamWScalars& s) {
  p = p * s.decay;
  // torch's lerp: m + w (g - m) for w < 0.5, else g - (g - m)(1 - w)
  m = s.one_minus_beta1 < 0.5f ? m + s.one_minus_beta1 * (g - m) : g - (g - m) * s.beta1;
  v = v * s.beta2 + s.one_minus_beta2 * g * g;
  const float denom = sqrtf(v) / s.bias_correction2_sqrt + s.eps;
  p = p + (-s.step_size) * m / denom;
}

struct SgdScalars {
  float lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov, first_step, has_momentum;
};

NIBBLE_HOST_DEVICE SgdScalars sgd_scalars(const SgdHyper& h, int64_t t, double lr_factor) {
  SgdScalars s;
  s.lr = static_cast<float>(h.lr * lr_factor);
  s.momentum = static_cast<float>(h.momentum);
  s.one_minus_dampening = static_cast<float>(1.0 - h.dampening);
  s.weight_decay = static_cast<float>(h.weight_decay);
  s.nesterov = h.nesterov;
  s.first_step = t <= 1;
  s.has_momentum = h.momentum != 0.0;
  return s;
}

// torch.optim.SGD: d = g + wd p; buf = d on the first step, else momentum buf + (1 - dampening) d;
// d = d + momentum buf (Nesterov) or buf; p -= lr d.
NIBBLE_HOST_DEVICE void sgd_element(float& p, float& buf, float g, const SgdScalars& s) {
  float d = s.weight_decay != 0.0f ? g + s.weight_decay * p : g;
  if (s.has_momentum) {
    buf = s.first_step ? d : buf * s.momentum + s.one_minus_dampening * d;
    d = s.nesterov ? d + s.momentum * buf : buf;
  }
  p = p + (-s.lr) * d;
}

}  // namespace nibble::optim
