#pragma once
// Whether a tensor holds a NaN, for the input checks of the Linear, RMSNorm and SwiGLU functions. They run
// on every activation and gradient of every step: on a contiguous CPU float32/bfloat16 tensor this is one
// read of the memory with no temporary (torch's isnan(t).any() writes a bool tensor and reduces it, ~3% of
// a training step measured on nibble-train); anything else goes through torch.
#include <torch/torch.h>

namespace nibble::core {

bool contains_nan(const torch::Tensor& t);

}  // namespace nibble::core
