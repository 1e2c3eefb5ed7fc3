#pragma once
// encode_scalar(x, kBF16, rounding) as integer arithmetic on x's bits, for loops that vectorise (GCC at -O3, any
// vector unit): the optimizer's bf16 states and model copies (optim/cpu/bf16_lanes.h) and the GEMM's dense
// operands (core/cpu/f32_to_bf16.h).
//
// Why it equals encode_scalar: BF16 keeps float32's 8 exponent bits and bias, so every finite x drops exactly the
// low 16 bits of |x|'s bits a (float32 subnormals included: they land on BF16's subnormals, also 16 bits down),
// and the kept exponent/mantissa is a >> 16. Rounding up is a carry out of the low 16 bits:
//  - stochastic with 16 random bits r: frac + r * 2^-16 reaches a step when (a & 0xFFFF) + r >= 2^16, so the code
//    is (a + r) >> 16;
//  - RNE: (a + 0x7FFF + ((a >> 16) & 1)) >> 16 (above half, or exactly half with an odd kept part).
// A carry out of the mantissa moves into the exponent, as in the code. Then satfinite (Inf and everything
// rounding past the largest finite value 0x7F7F give 0x7F7F), the sign bit ORed in, and NaN gives the canonical
// NaN 0x7FC0. Checked against encode_scalar in tests/optim/test_state_lanes.cpp and tests/core/test_f32_to_bf16.cpp.
#include <algorithm>
#include <cstdint>

namespace nibble::precision {

// The code of the float with bits u, given what is added below its kept 16 bits before they are dropped
// (a + add cannot wrap: a < 2^31 and add < 2^17).
inline uint16_t bf16_code(uint32_t u, uint32_t add) {
  const uint32_t a = u & 0x7FFFFFFFu;
  const uint32_t code = std::min((a + add) >> 16, 0x7F7Fu) | ((u >> 16) & 0x8000u);
  return static_cast<uint16_t>(a > 0x7F800000u ? 0x7FC0u : code);
}

// Round to nearest even.
inline uint16_t bf16_code_nearest(uint32_t u) { return bf16_code(u, 0x7FFFu + ((u >> 16) & 1u)); }

}  // namespace nibble::precision
