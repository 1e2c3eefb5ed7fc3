#include "core/cpu/rms_norm_cpu.h"

namespace nibble::core::cpu {
namespace {
// Below this many elements one thread does it all (waking the team costs more than the pass).
constexpr int64_t kParallelFrom = 1 << 15;
}  // namespace

void rms_norm_forward(const float* x, const float* r, const float* w, float* y, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelFrom)
  for (int64_t i = 0; i < rows; ++i) {
    const float ri = r[i];
    const float* xi = x + i * d;
    float* yi = y + i * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) yi[j] = (xi[j] * ri) * w[j];
  }
}

void rms_norm_backward_gx(const float* dy, const float* x, const float* w, float* gx, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelFrom)
  for (int64_t i = 0; i < rows; ++i) {
    const float* dyi = dy + i * d;
    const float* xi = x + i * d;
    float* gi = gx + i * d;
#pragma omp simd
    for (int64_t j = 0; j < d; ++j) gi[j] = (dyi[j] * w[j]) * xi[j];
  }
}

void rms_norm_backward(const float* dy, const float* x, const float* w, const float* r, const float* r3,
                       const float* m, float* dx, float* t, int64_t rows, int64_t d) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelFrom)
  for (int64_t i = 0; i < rows; ++i) {
    const float ri = r[i], r3i = r3[i], mi = m[i];
    const float* dyi = dy + i * d;
    const float* xi = x + i * d;
    if (dx) {
      float* dxi = dx + i * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) dxi[j] = ri * (dyi[j] * w[j]) - (xi[j] * r3i) * mi;
    }
    if (t) {
      float* ti = t + i * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) ti[j] = (dyi[j] * xi[j]) * ri;
    }
  }
}

}  // namespace nibble::core::cpu
