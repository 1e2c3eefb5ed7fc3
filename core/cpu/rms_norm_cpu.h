#pragma once
// RMSNorm's element-wise arithmetic on the CPU in fused passes over memory, given its row reductions (torch's
// mean, so the summation order is torch's own). Each element is computed with the same FP32 operations in
// the same order as the torch expressions they replace (core/activations.cpp), so the results are
// bit-identical to them: this file is compiled with -ffp-contract=off (no a*b+c as one FMA).
// Rows of d elements, row-major; r, r3 and m hold one value per row, w one per column.
#include <cstdint>

namespace nibble::core::cpu {

// y = (x * r) * w
void rms_norm_forward(const float* x, const float* r, const float* w, float* y, int64_t rows, int64_t d);

// gx = (dy * w) * x   (the row mean of gx is the backward's m)
void rms_norm_backward_gx(const float* dy, const float* x, const float* w, float* gx, int64_t rows, int64_t d);

// dx = r * (dy * w) - (x * r3) * m  (r3 = r^3),  t = (dy * x) * r  (summed over rows: the weight gradient);
// either output may be null (not computed).
void rms_norm_backward(const float* dy, const float* x, const float* w, const float* r, const float* r3,
                       const float* m, float* dx, float* t, int64_t rows, int64_t d);

}  // namespace nibble::core::cpu
