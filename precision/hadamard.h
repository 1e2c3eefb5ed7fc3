#pragma once
// Hadamard transforms used by the FP4 recipes: TE's 16-point random Hadamard transform (RHT) for the NVFP4
// wgrad operands, and Quartet's normalised 32-point Hadamard for MXFP4 QuEST. Sums run in float64 in index
// order and are rounded to FP32 once, so an independent reference reproduces them bit for bit.
#include <cstdint>

#include "precision/format.h"
#include "precision/philox.h"

namespace nibble::precision {

// Sylvester Hadamard entry H[i][j] = (-1)^popcount(i & j).
NIBBLE_HOST_DEVICE int hadamard_sign(uint32_t i, uint32_t j) {
  uint32_t v = i & j;
  int parity = 0;
  while (v) {
    parity ^= 1;
    v &= v - 1;
  }
  return parity ? -1 : 1;
}

// TE's fixed RHT sign vector [1,1,1,-1,1,-1,-1,-1,-1,-1,-1,1,-1,1,-1,-1] as a mask: bit i set = -1.
inline constexpr uint32_t kTeRhtSignMask = (1u << 3) | (1u << 5) | (1u << 6) | (1u << 7) | (1u << 8) | (1u << 9) |
                                           (1u << 10) | (1u << 12) | (1u << 14) | (1u << 15);

// The RHT sign mask: TE's fixed vector for seed 0, else 16 bits of Philox word 0 for (seed, 0, 0).
NIBBLE_HOST_DEVICE uint32_t rht_sign_mask(uint64_t seed) {
  if (seed == 0) return kTeRhtSignMask;
  return philox_block(seed, 0, 0).v[0] & 0xFFFFu;
}

// y = g @ (diag(sign) H16 / 4): y_j = 0.25 * sum_i g_i sign_i H16[i][j].
NIBBLE_HOST_DEVICE void rht16(const float* g, uint32_t sign_mask, float* y) {
  for (uint32_t j = 0; j < 16; ++j) {
    double acc = 0.0;
    for (uint32_t i = 0; i < 16; ++i) {
      const int s = hadamard_sign(i, j) * (((sign_mask >> i) & 1u) ? -1 : 1);
      acc += s > 0 ? static_cast<double>(g[i]) : -static_cast<double>(g[i]);
    }
    y[j] = static_cast<float>(acc * 0.25);
  }
}

// IEEE round-to-nearest-even to BF16 (Inf stays Inf, overflow becomes Inf; NaN unchanged): what TE's
// tensor-core RHT output does to a bfloat16 input's transform, unlike nibble's satfinite element casts.
NIBBLE_HOST_DEVICE float round_to_bf16_ieee(float v) {
  const uint32_t u = float_bits(v);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return v;  // NaN
  return bits_float(((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16) << 16);
}

// h = H32 g / sqrt(32) (normalised Sylvester Hadamard of size 32).
NIBBLE_HOST_DEVICE void hadamard32_normalised(const float* g, float* h) {
  const double inv_sqrt32 = 0.17677669529663687;  // 1 / sqrt(32), correctly rounded float64
  for (uint32_t j = 0; j < 32; ++j) {
    double acc = 0.0;
    for (uint32_t i = 0; i < 32; ++i)
      acc += hadamard_sign(i, j) > 0 ? static_cast<double>(g[i]) : -static_cast<double>(g[i]);
    h[j] = static_cast<float>(acc * inv_sqrt32);
  }
}

}  // namespace nibble::precision
