#pragma once
// FP8 optimizer states with Dynamic Range Expansion (COAT, NUMERICS.md "Optimizer states"), per group of
// 128 contiguous elements. The scalar rules only; the fused step (CPU) and the CUDA kernel compute the group
// reductions their own way and call these. C++17: shared with .cu files.
//
// Why: E4M3 spans 448 / 2^-9 ~ 2.3e5, but the values that matter in an Adam moment group can span less (m)
// or much more (v, and m near sign changes). Expanding x -> (|x|/g)^k with g the group's geometric centre
// stretches (k > 1) or squeezes (k < 1) the group onto R = 448^2/2 before the cast, so the group uses the
// whole E4M3 range; decoding takes the k-th root, which divides E4M3's relative error by k.
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "optim/portable_math.h"
#include "precision/format.h"

namespace nibble::optim {

inline constexpr int kDreGroupSize = 128;
inline constexpr float kDreTiny = 1e-30f;             // COAT's +1e-30 on max and min
inline constexpr float kDreLog2Target = 16.6147098f;  // log2(R), R = 448^2 / 2 = 100352
inline constexpr float kDreKGrid = 16.0f;             // k is a multiple of 1/16 (COAT expand_min)
// Upper guard on k for near-constant groups (max/min within ~1.1%). COAT's k = log2 R / log2(max/min)
// grows without bound as the group narrows (to Inf at max = min); in FP32 the rounding of |x|/g (~1 ulp)
// is then multiplied by k in the exponent and the group's smallest elements can underflow to code 0 —
// a v element decoding to 0 turns m/(sqrt(v)+eps) into m/eps. At k = 1024 that error stays below 2^-13
// in the exponent, and E4M3's 6% step divided by k is already < 1e-4.
inline constexpr float kDreMaxK = 1024.0f;

// The per-group side data: encode multiplier inverse s, expansion k and centre g.
struct DreGroup {
  float scale = 1.0f;
  float expansion = 1.0f;
  float centre = 1.0f;
};

// The group's parameters from its max |x| and its smallest nonzero |x| (pass FLT_MAX or Inf when the group
// has no nonzero element). clamp_k_to_one is NUMERICS.md's option: never compress (k >= 1).
NIBBLE_HOST_DEVICE DreGroup dre_group(float max_abs, float min_nonzero_abs, bool clamp_k_to_one) {
  const float mx = max_abs + kDreTiny;
  // An all-zero group has no nonzero minimum: treat it as constant (k = 1); every code is then 0.
  const float mn = min_nonzero_abs < FLT_MAX ? min_nonzero_abs + kDreTiny : mx;
  DreGroup grp;
  grp.centre = sqrtf(mx) * sqrtf(mn);
  const float ratio = mx / mn;
  // A group spanning more than FP32's range (max/min overflows) takes its log-ratio from the two logs.
  const float l2ratio = ratio < INFINITY ? log2_portable(ratio) : log2_portable(mx) - log2_portable(mn);
  float k = 1.0f;  // constant, all-zero and single-element groups: ratio == 1 would give k = Inf
  if (ratio > 1.0f) k = portable_detail::floor32(kDreKGrid * kDreLog2Target / l2ratio) / kDreKGrid;
  k = k < kDreMaxK ? k : kDreMaxK;
  if (clamp_k_to_one && k < 1.0f) k = 1.0f;
  grp.expansion = k;
  // s = (max/min)^(k/2) / 448: the group maximum then encodes to 448.
  grp.scale = (ratio > 1.0f ? exp2_portable((0.5f * k) * l2ratio) : 1.0f) / 448.0f;
  return grp;
}

// The value DRE hands to the E4M3 cast: sign(x) * (|x|/g)^k / s (0 for x = 0).
// (Scalar arguments: GCC does not vectorise a loop that passes the struct.)
NIBBLE_HOST_DEVICE float dre_expand(float x, float expansion, float centre, float scale) {
  const float a = fabsf(x);
  const float y = exp2_portable(expansion * log2_portable(a / centre)) / scale;
  return a == 0.0f ? 0.0f : (x < 0.0f ? -y : y);
}
NIBBLE_HOST_DEVICE float dre_expand(float x, DreGroup grp) {
  return dre_expand(x, grp.expansion, grp.centre, grp.scale);
}

// E4M3 code of x: RNE, satfinite, of dre_expand(x). Zero encodes to +0.
NIBBLE_HOST_DEVICE uint32_t dre_encode(float x, DreGroup grp) {
  return precision::encode_scalar(dre_expand(x, grp), precision::formats::kE4M3, precision::Rounding::kNearestEven);
}

// Decode: sign(q s) * |q s|^(1/k) * g, from the E4M3 value q (decoded by the caller: a table on CPU).
NIBBLE_HOST_DEVICE float dre_decode(float q, float expansion, float centre, float scale) {
  const float t = q * scale;
  const float a = exp2_portable(log2_portable(fabsf(t)) / expansion) * centre;
  return t == 0.0f ? 0.0f : (t < 0.0f ? -a : a);
}
NIBBLE_HOST_DEVICE float dre_decode(float q, DreGroup grp) {
  return dre_decode(q, grp.expansion, grp.centre, grp.scale);
}

// "fp8_plain" (COAT without expansion, the ablation): per-group absmax scale, s = (absmax + 1e-20) / 448.
NIBBLE_HOST_DEVICE float plain_fp8_scale(float max_abs) {
  return (max_abs + 1e-20f) / 448.0f;
}
NIBBLE_HOST_DEVICE uint32_t plain_fp8_encode(float x, float scale) {
  return precision::encode_scalar(x / scale, precision::formats::kE4M3, precision::Rounding::kNearestEven);
}
NIBBLE_HOST_DEVICE float plain_fp8_decode(float q, float scale) {
  return q * scale;
}

}  // namespace nibble::optim
