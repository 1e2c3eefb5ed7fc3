#pragma once
// Non-linear ops whose saved activations can be compressed (COAT): RMSNorm and SwiGLU. With compression on,
// the tensors backward needs are saved as FP8 E4M3 in 1x16 groups (fp8_block16) and backward runs the exact
// formulas on their dequantized values, so the gradients equal those of the uncompressed op evaluated at the
// dequantized activations.
#include <torch/torch.h>

#include <string>

namespace nibble::core {

// y = x / sqrt(mean(x^2, -1) + eps) * weight
torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps, bool compress,
                       const std::string& name = "rms_norm");

// y = silu(gate) * up
torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up, bool compress,
                     const std::string& name = "swiglu");

}  // namespace nibble::core
