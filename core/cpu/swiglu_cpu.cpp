#include "core/cpu/swiglu_cpu.h"

namespace nibble::core::cpu {
namespace {
// Below this many elements one thread does it all (waking the team costs more than the pass).
constexpr int64_t kParallelFrom = 1 << 15;
}  // namespace

void swiglu_forward(const float* g, const float* s, const float* u, float* y, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
  for (int64_t i = 0; i < n; ++i) y[i] = (g[i] * s[i]) * u[i];
}

void swiglu_backward(const float* dy, const float* g, const float* s, const float* u, float* dg, float* du,
                     int64_t n) {
  // One loop for both outputs: they may overwrite inputs, which a second loop would then read.
  if (dg && du) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
    for (int64_t i = 0; i < n; ++i) {
      const float dyi = dy[i], gi = g[i], si = s[i], ui = u[i];
      dg[i] = ((dyi * ui) * si) * (1.0f + gi * (1.0f - si));
      du[i] = (dyi * gi) * si;
    }
  } else if (dg) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
    for (int64_t i = 0; i < n; ++i) dg[i] = ((dy[i] * u[i]) * s[i]) * (1.0f + g[i] * (1.0f - s[i]));
  } else if (du) {
#pragma omp parallel for simd schedule(static) if (n >= kParallelFrom)
    for (int64_t i = 0; i < n; ++i) du[i] = (dy[i] * g[i]) * s[i];
  }
}

}  // namespace nibble::core::cpu
