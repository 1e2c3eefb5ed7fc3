#pragma once
// SwiGLU's element-wise arithmetic on the CPU in one pass over memory, given the gate's sigmoid (torch's, so
// the transcendental is torch's own). Each element is computed with the same FP32 operations in the same
// order as the torch expressions they replace (core/activations.cpp), so the results are bit-identical to
// them: this file is compiled with -ffp-contract=off, which keeps a*b+c from becoming one FMA.
#include <cstdint>

namespace nibble::core::cpu {

// Each element's outputs are written after all of its inputs are read, so an output may be one of the inputs'
// buffers (activations.cpp writes into its own scratch copies instead of allocating more FP32 tensors: at
// ffn 1376 x 2048 tokens each is 11 MiB, and SwiGLU's backward is where a step's memory peaks).

// y = (g * s) * u   (y may be g, s or u)
void swiglu_forward(const float* g, const float* s, const float* u, float* y, int64_t n);

// dg = ((dy * u) * s) * (1 + g * (1 - s)),  du = (dy * g) * s   (either output may be null: not computed; dg and
// du may each be any input's buffer, but not the same one)
void swiglu_backward(const float* dy, const float* g, const float* s, const float* u, float* dg, float* du,
                     int64_t n);

}  // namespace nibble::core::cpu
