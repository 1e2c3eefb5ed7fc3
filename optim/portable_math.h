#pragma once
// log2 / exp2 / pow / cos(pi x) written out in plain IEEE arithmetic, so the CPU and the CUDA kernels compute
// the same bits. The C library's powf/log2f (glibc) and CUDA's differ in the last ulps, and DRE (COAT) calls
// pow twice per element per moment: with library calls a GPU step could not be checked bit for bit against
// the CPU step. Every product-sum here is an explicit fmaf (fused on both sides); nibble_optim compiles with
// -ffp-contract=off and its CUDA kernels with --fmad=false so nothing else gets fused differently.
// C++17: shared with .cu files.
#include <cmath>
#include <cstdint>

#include "precision/format.h"
#include "precision/host_device.h"

namespace nibble::optim {

namespace portable_detail {
NIBBLE_HOST_DEVICE float fma32(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return __fmaf_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}
NIBBLE_HOST_DEVICE float floor32(float x) {
#if defined(__CUDA_ARCH__)
  return floorf(x);
#else
  return std::floor(x);
#endif
}
// 2^n for integer n in [-126, 127], exact.
NIBBLE_HOST_DEVICE float pow2i(int n) {
  return precision::bits_float(static_cast<uint32_t>(n + 127) << 23);
}
}  // namespace portable_detail

// log2(x) for finite x > 0 (subnormals included), within about 2 ulp, with small *relative* error near
// x = 1 (DRE raises |x|/g, which is close to 1 for narrow groups, to large powers k). x <= 0 gives a finite
// meaningless value: callers select zeros out themselves (branch-free, so loops vectorise).
NIBBLE_HOST_DEVICE float log2_portable(float x) {
  using namespace portable_detail;
  const bool subnormal = precision::float_bits(x) < 0x00800000u;
  const uint32_t u = precision::float_bits(subnormal ? x * 8388608.0f : x);  // * 2^23
  int e = static_cast<int>(u >> 23) - 127 - (subnormal ? 23 : 0);
  float m = precision::bits_float((u & 0x007FFFFFu) | 0x3F800000u);  // [1, 2)
  const bool upper = m > 1.41421356f;                                // fold to [sqrt(1/2), sqrt(2))
  m = upper ? m * 0.5f : m;
  e += upper ? 1 : 0;
  // ln(m) = 2 atanh(f), f = (m-1)/(m+1), |f| <= 0.172: the odd series to f^11 is below 2^-25 relative.
  const float f = (m - 1.0f) / (m + 1.0f);
  const float f2 = f * f;
  float p = fma32(f2, 1.0f / 11.0f, 1.0f / 9.0f);
  p = fma32(f2, p, 1.0f / 7.0f);
  p = fma32(f2, p, 1.0f / 5.0f);
  p = fma32(f2, p, 1.0f / 3.0f);
  const float cf = 2.88539008f * f;  // 2 / ln 2
  return static_cast<float>(e) + fma32(cf, f2 * p, cf);
}

// 2^t within about 2 ulp; t beyond [-252, 254] saturates to 0 / Inf (2^t itself does not fit FP32 there).
NIBBLE_HOST_DEVICE float exp2_portable(float t) {
  using namespace portable_detail;
  t = t < -252.0f ? -252.0f : (t > 254.0f ? 254.0f : t);
  // n = t rounded to the nearest integer (ties to even) by the 1.5·2^23 trick, exact for |t| < 2^22. Not
  // floorf(t + 0.5f): GCC does not vectorise floorf under the default -ftrapping-math, and this function sits
  // in the optimizer's innermost loops. (Both sides compile this same expression, so CPU and GPU agree.)
  const float n = (t + 12582912.0f) - 12582912.0f;
  const float r = t - n;  // exact, |r| <= 0.5
  // Taylor coefficients ln2^i / i!; degree 7 leaves < 1e-8 relative on |r| <= 0.5.
  float p = fma32(r, 1.52527338e-5f, 1.54035304e-4f);
  p = fma32(r, p, 1.33335581e-3f);
  p = fma32(r, p, 9.61812911e-3f);
  p = fma32(r, p, 5.55041087e-2f);
  p = fma32(r, p, 2.40226507e-1f);
  p = fma32(r, p, 6.93147181e-1f);
  p = fma32(r, p, 1.0f);
  // Two exact power-of-two factors: the first keeps the value normal, the second rounds once (subnormals).
  const int ni = static_cast<int>(n);
  const int n1 = ni / 2;
  return (p * pow2i(n1)) * pow2i(ni - n1);
}

// |x|^p for x > 0 as exp2(p * log2 x).
NIBBLE_HOST_DEVICE float pow_portable(float x, float p) {
  return exp2_portable(p * log2_portable(x));
}

// cos(pi * x) for x in [0, 1] in double (cosine LR decay), by symmetry onto [0, pi/2] and the Taylor series
// to x^22 (below 1e-16 there).
NIBBLE_HOST_DEVICE double cos_pi_portable(double x) {
  x = x < 0.0 ? 0.0 : (x > 1.0 ? 1.0 : x);
  const bool upper = x > 0.5;
  const double a = (upper ? 1.0 - x : x) * 3.14159265358979323846;
  const double a2 = a * a;
  double s = 1.0;
  // Horner from the x^22 term down: cos a = sum (-1)^i a^(2i) / (2i)!.
  for (int i = 11; i >= 1; --i) s = 1.0 - a2 / static_cast<double>((2 * i) * (2 * i - 1)) * s;
  return upper ? -s : s;
}

}  // namespace nibble::optim
