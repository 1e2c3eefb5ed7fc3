#include "core/cpu/rope_cpu.h"

namespace nibble::core::cpu {
namespace {
// Below this many rows one thread does it all.
constexpr int64_t kParallelFromRows = 256;

// Every (batch, head, position) row of d channels, read from `in` at its strides, written contiguous to `out`.
// Forward rotates by +angle, backward by -angle (the transpose); (-a) * b is -(a * b) and a + (-b) is a - b
// exactly, so these are the torch expression's operations (core/cpu/rope_cpu.h).
template <bool kBackward>
void rotate_rows(const float* in, const RopeShape& s, int64_t stride_batch, int64_t stride_heads, int64_t stride_seq,
                 const float* cos, const float* sin, float* out) {
  const int64_t rows = s.batch * s.heads * s.seq, half = s.d / 2;
#pragma omp parallel for schedule(static) if (rows >= kParallelFromRows)
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t t = r % s.seq, h = (r / s.seq) % s.heads, b = r / (s.seq * s.heads);
    const float* a = in + b * stride_batch + h * stride_heads + t * stride_seq;
    const float* c = cos + t * s.d;
    const float* sn = sin + t * s.d;
    float* o = out + r * s.d;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      const float a1 = a[i], a2 = a[i + half];
      if constexpr (kBackward) {
        o[i] = a1 * c[i] + a2 * sn[i + half];
        o[i + half] = a2 * c[i + half] - a1 * sn[i];
      } else {
        o[i] = a1 * c[i] - a2 * sn[i];
        o[i + half] = a2 * c[i + half] + a1 * sn[i + half];
      }
    }
  }
}

}  // namespace

void rope_forward(const float* x, const RopeShape& s, const float* cos, const float* sin, float* y) {
  rotate_rows<false>(x, s, s.stride_batch, s.stride_heads, s.stride_seq, cos, sin, y);
}

void rope_backward(const float* dy, const RopeShape& s, const float* cos, const float* sin, float* dx) {
  rotate_rows<true>(dy, s, s.heads * s.seq * s.d, s.seq * s.d, s.d, cos, sin, dx);
}

}  // namespace nibble::core::cpu
