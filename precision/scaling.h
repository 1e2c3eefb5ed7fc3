#pragma once
// Scale rules of the block-scaled formats (docs/QUANTIZATION.md, NUMERICS.md), shared by CPU and CUDA.
#include <cfloat>
#include <cmath>
#include <cstring>
#include <cstdint>

#include "precision/format.h"

namespace nibble::precision {

// TE's compute_scale_from_amax: the encode multiplier that maps amax onto fmax.
NIBBLE_HOST_DEVICE float compute_scale(float amax, float fmax, float epsilon, bool pow2, float value_for_inf) {
  const float a = amax > epsilon ? amax : epsilon;
  if (a == 0.0f || !(a < INFINITY)) return 1.0f;  // zero, Inf or NaN amax: identity scale
  float scale = fmax / a;
  if (!(scale < INFINITY)) scale = value_for_inf;
  if (pow2) scale = bits_float(float_bits(scale) & 0xFF800000u);  // round down to a power of two
  return scale;
}

// TE's float_to_e8m0: the biased exponent of 2^ceil(log2 v) (the hardware cvt.rp.satfinite.ue8m0).
NIBBLE_HOST_DEVICE uint32_t float_to_e8m0_ceil(float v) {
  const uint32_t u = float_bits(v);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return 0xFFu;
  if ((u & 0x7FFFFFFFu) == 0x7F800000u) return 0xFEu;
  uint32_t exponent = (u >> 23) & 0xFFu;
  const uint32_t mantissa = u & 0x7FFFFFu;
  if (mantissa > 0 && exponent != 0xFEu && !(exponent == 0 && mantissa <= 0x400000u)) ++exponent;
  return exponent;
}

// The OCP MX rule: floor(log2 amax) - emax_elem, biased and clamped to the E8M0 range [0, 254].
NIBBLE_HOST_DEVICE uint32_t e8m0_floor_scale(float amax, int emax_elem) {
  const int e = static_cast<int>((float_bits(amax) >> 23) & 0xFFu) - emax_elem;
  return static_cast<uint32_t>(e < 0 ? 0 : (e > 254 ? 254 : e));
}

// 2^(127 - e) as an exact FP32 (the element multiplier for E8M0 exponent e; 2^-127 is an FP32 subnormal).
NIBBLE_HOST_DEVICE float e8m0_encode_multiplier(uint32_t e) {
  const int p = 127 - static_cast<int>(e);  // in [-127, 127]
  if (p >= -126) return bits_float(static_cast<uint32_t>(p + 127) << 23);
  return bits_float(0x00400000u);  // 2^-127
}

// 2^(e - 127): the decode multiplier of an E8M0 code.
NIBBLE_HOST_DEVICE float e8m0_decode_multiplier(uint32_t e) { return decode_scalar(e, formats::kE8M0); }

// NVFP4 two-level scaling (TE NVFP4BlockScaling, docs/QUANTIZATION.md scheme 5).
NIBBLE_HOST_DEVICE float nvfp4_global_encode_scale(float global_amax) {
  float s = 2688.0f / global_amax;  // 448 * 6
  if (s > FLT_MAX) s = FLT_MAX;
  if (global_amax == 0.0f || s == 0.0f) s = 1.0f;
  return s;
}

// The UE4M3 code of a block's decode scale.
NIBBLE_HOST_DEVICE uint32_t nvfp4_block_scale_code(float block_amax, float global_encode_scale) {
  float v = block_amax * (global_encode_scale * (1.0f / 6.0f));
  if (v > FLT_MAX) v = FLT_MAX;
  return encode_scalar(v, formats::kE4M3, Rounding::kNearestEven);
}

// The element multiplier of a block with decode scale code `code`.
NIBBLE_HOST_DEVICE float nvfp4_block_encode_multiplier(uint32_t code, float global_decode_scale) {
  float enc = 1.0f / (decode_scalar(code, formats::kE4M3) * global_decode_scale);
  if (enc > FLT_MAX) enc = FLT_MAX;
  return enc;
}

// QuEST (Quartet forward): E8M0 code of 2^floor(log2(0.48708 * sigma + 1e-8)), sigma in float64.
NIBBLE_HOST_DEVICE uint32_t quest_scale_code(double sigma) {
  const double v = 0.48708 * sigma + 1e-8;
  // floor(log2 v) for v > 0 read from the float64 exponent bits (exact; v is never subnormal here).
  uint64_t bits;
#if defined(__CUDA_ARCH__)
  bits = static_cast<uint64_t>(__double_as_longlong(v));
#else
  std::memcpy(&bits, &v, sizeof bits);
#endif
  int e = static_cast<int>((bits >> 52) & 0x7FF) - 1023;
  if (e < -127) e = -127;
  if (e > 127) e = 127;
  return static_cast<uint32_t>(e + 127);
}

// The QuEST E8M0 code of a group of 32 transformed values from their float64 sums (sum and sum of squares, each
// added in index order): sigma is the population standard deviation.
NIBBLE_HOST_DEVICE uint32_t quest_code_from_sums(double sum, double sum_sq) {
  const double mean = sum / 32.0;
  const double v = sum_sq / 32.0 - mean * mean;
  return quest_scale_code(sqrt(v < 0.0 ? 0.0 : v));
}

}  // namespace nibble::precision
