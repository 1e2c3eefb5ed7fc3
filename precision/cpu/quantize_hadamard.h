#pragma once
// Fast, bit-exact Hadamard groups for the CPU quantizers (RHT16 for NVFP4's columnwise copies, the
// normalised Hadamard-32 of MXFP4 QuEST).
//
// precision/hadamard.h defines each output as a float64 sum in index order (O(N^2) adds, the reference).
// A Walsh-Hadamard butterfly (O(N log N)) adds the same terms in another order, which in general rounds
// differently. But when every partial sum is exact in float64 the order cannot matter: the terms are
// float32 values v_i = m_i 2^(e_i - 23); with E the largest and e the smallest exponent of a nonzero term,
// every partial sum of N <= 32 terms is a multiple of 2^(e - 23) below 2^(E + 6), i.e. fits 53 bits when
// E - e <= 24. We take the butterfly only when max|g| < min|g != 0| * 2^24 (which implies that bound, and
// fails for Inf and NaN) and otherwise call the reference. The index-order sum starts at +0.0 and so never
// yields -0; adding +0.0 to the butterfly's result does the same. The final scaling (x 0.25, x 1/sqrt(32)
// in float64) and the rounding to float32 are the reference's own operations on the same value.
#include <cmath>
#include <cstdint>
#include <cstring>

#include "precision/hadamard.h"

namespace nibble::precision {

// y[j] = float((sum_i g_i sign_i H[i][j] + 0.0) * post) by butterfly, if that provably equals the
// index-order float64 sum; returns false (y untouched) when it does not.
template <int N>
inline bool hadamard_butterfly_exact(const float* __restrict g, uint32_t sign_mask, double post,
                                     float* __restrict y) {
  static_assert(N == 16 || N == 32, "the exactness bound above is derived for N <= 32");
  // On the bits of |g| (as the vector kernels' column_bound, butterfly_lanes-inl.h): as unsigned integers the
  // non-negative floats order as their values and NaN above Inf, so a NaN makes max_abs NaN and fails the
  // bound (its group takes the reference, NaN for NaN); |g| - 1 wraps a zero to the largest integer, so
  // min(|g| - 1) + 1 is the smallest nonzero |g| (+Inf when there is none).
  uint32_t max_bits = 0, min_m1 = 0xFFFFFFFFu;
  for (int i = 0; i < N; ++i) {
    uint32_t a;
    std::memcpy(&a, &g[i], sizeof a);
    a &= 0x7FFFFFFFu;
    max_bits = a > max_bits ? a : max_bits;
    min_m1 = a - 1u < min_m1 ? a - 1u : min_m1;
  }
  float max_abs, min_nonzero = INFINITY;
  std::memcpy(&max_abs, &max_bits, sizeof max_abs);
  if (min_m1 != 0xFFFFFFFFu) {
    const uint32_t min_bits = min_m1 + 1u;
    std::memcpy(&min_nonzero, &min_bits, sizeof min_nonzero);
  }
  if (!(max_abs < min_nonzero * 16777216.0f)) return false;
  double v[N];
  for (int i = 0; i < N; ++i) {
    const double d = g[i];
    v[i] = ((sign_mask >> i) & 1u) ? -d : d;
  }
  for (int h = 1; h < N; h *= 2)
    for (int i = 0; i < N; i += 2 * h)
      for (int j = i; j < i + h; ++j) {
        const double a = v[j], b = v[j + h];
        v[j] = a + b;
        v[j + h] = a - b;
      }
  for (int j = 0; j < N; ++j) y[j] = static_cast<float>((v[j] + 0.0) * post);
  return true;
}

// rht16 of precision/hadamard.h, bit for bit.
inline void rht16_fast(const float* g, uint32_t sign_mask, float* y) {
  if (!hadamard_butterfly_exact<16>(g, sign_mask, 0.25, y)) rht16(g, sign_mask, y);
}

// hadamard32_normalised of precision/hadamard.h, bit for bit.
inline void hadamard32_fast(const float* g, float* h) {
  if (!hadamard_butterfly_exact<32>(g, 0u, 0.17677669529663687, h)) hadamard32_normalised(g, h);
}

}  // namespace nibble::precision
