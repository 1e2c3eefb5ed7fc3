#pragma once
// SwiGLU's element-wise arithmetic on the CPU in one pass over memory, given the gate's sigmoid (torch's, so
// the transcendental is torch's own). Each element is computed with the same FP32 operations in the same
// order as the torch expressions they replace (core/activations.cpp), so the results are bit-identical to
// them: this file is compiled with -ffp-contract=off, which keeps a*b+c from becoming one FMA.
#include <cstdint>

namespace nibble::core::cpu {

// y = (g * s) * u
void swiglu_forward(const float* g, const float* s, const float* u, float* y, int64_t n);

// dg = ((dy * u) * s) * (1 + g * (1 - s)),  du = (dy * g) * s   (either output may be null: not computed)
void swiglu_backward(const float* dy, const float* g, const float* s, const float* u, float* dg, float* du,
                     int64_t n);

}  // namespace nibble::core::cpu
