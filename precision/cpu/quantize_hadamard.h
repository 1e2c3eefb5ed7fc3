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
// fails for Inf and NaN) and otherwise compute the reference's own index-order sums (hadamard_index_order below,
// the same operations with the signs from a table). The index-order sum starts at +0.0 and so never
// yields -0; adding +0.0 to the butterfly's result does the same. The final scaling (x 0.25, x 1/sqrt(32)
// in float64) and the rounding to float32 are the reference's own operations on the same value.
#include <array>
#include <bit>
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

// The definitions' final factors (precision/hadamard.h): rht16's 1/4 and hadamard32_normalised's 1/sqrt(32), the
// correctly rounded float64 it multiplies by.
inline constexpr double kRht16Scale = 0.25;
inline constexpr double kHadamard32Scale = 0.17677669529663687;

// The Sylvester matrix's signs as float64 sign bits: kHadamardSignBits<N>[i][j] is the sign bit where H[i][j] = -1.
template <int N>
inline constexpr auto kHadamardSignBits = [] {
  std::array<std::array<uint64_t, N>, N> bits{};
  for (int i = 0; i < N; ++i)
    for (int j = 0; j < N; ++j) bits[i][j] = (std::popcount(static_cast<uint32_t>(i & j)) & 1) ? 1ull << 63 : 0;
  return bits;
}();

// y[j] = float((sum_i ±g_i) * post) with precision/hadamard.h's own float64 operations: acc starts at +0.0 and
// adds sign_i H[i][j] g_i (as g_i or -g_i: a sign flip, here an XOR of the sign bit) for i = 0, 1, ..., N - 1,
// one chain per output, then one multiply and one rounding: rht16 (post 0.25) and hadamard32_normalised (post
// 1/sqrt(32)) bit for bit for every input (a NaN for a NaN: which NaN an add of two returns is the compiler's
// and the CPU's choice, not the definition's). The N chains run side by side, branch-free, in vectors; the
// reference recomputes each sign's parity bit by bit and branches on it per term, 30-45 ns an element on Zen 4
// where the butterfly takes ~1, which is what every group outside the butterfly's bound cost.
template <int N>
inline void hadamard_index_order(const float* __restrict g, uint32_t sign_mask, double post, float* __restrict y) {
  // Generic vectors of 4 (GCC, Clang), so the chains run in vector lanes whatever the caller's target: left to
  // the auto-vectoriser, this loop stayed scalar inside the Highway kernels that call it.
  typedef uint64_t u64x4 __attribute__((vector_size(32)));
  typedef double f64x4 __attribute__((vector_size(32)));
  f64x4 acc[N / 4] = {};
  for (int i = 0; i < N; ++i) {
    const uint64_t flip = static_cast<uint64_t>((sign_mask >> i) & 1u) << 63;
    const uint64_t d = std::bit_cast<uint64_t>(static_cast<double>(g[i])) ^ flip;
    const u64x4 dv = {d, d, d, d};
    for (int q = 0; q < N / 4; ++q) {
      u64x4 flips;
      std::memcpy(&flips, &kHadamardSignBits<N>[i][4 * q], sizeof flips);
      acc[q] += reinterpret_cast<f64x4>(dv ^ flips);
    }
  }
  for (int q = 0; q < N / 4; ++q)
    for (int k = 0; k < 4; ++k) y[4 * q + k] = static_cast<float>(acc[q][k] * post);
}

// rht16 of precision/hadamard.h, bit for bit.
inline void rht16_fast(const float* g, uint32_t sign_mask, float* y) {
  if (!hadamard_butterfly_exact<16>(g, sign_mask, kRht16Scale, y))
    hadamard_index_order<16>(g, sign_mask, kRht16Scale, y);
}

// hadamard32_normalised of precision/hadamard.h, bit for bit.
inline void hadamard32_fast(const float* g, float* h) {
  if (!hadamard_butterfly_exact<32>(g, 0u, kHadamard32Scale, h)) hadamard_index_order<32>(g, 0u, kHadamard32Scale, h);
}

}  // namespace nibble::precision
