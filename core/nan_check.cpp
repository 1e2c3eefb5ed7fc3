#include "core/nan_check.h"

#include <cstdint>
#include <algorithm>
#include <cstring>

namespace nibble::core {
namespace {

// Blocks of elements whose comparisons the compiler turns into vector compares and an OR, without an early
// exit per element; the scan stops at the first block with a NaN.
constexpr int64_t kBlock = 1024;

bool f32_has_nan(const float* p, int64_t n) {
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    bool any = false;
    for (int64_t i = b; i < e; ++i) any |= p[i] != p[i];
    if (any) return true;
  }
  return false;
}

bool bf16_has_nan(const uint16_t* p, int64_t n) {
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    bool any = false;
    for (int64_t i = b; i < e; ++i) any |= (p[i] & 0x7FFFu) > 0x7F80u;  // exponent all ones, mantissa nonzero
    if (any) return true;
  }
  return false;
}

}  // namespace

bool contains_nan(const torch::Tensor& t) {
  if (t.device().is_cpu() && t.is_contiguous()) {
    if (t.scalar_type() == torch::kFloat32) return f32_has_nan(t.data_ptr<float>(), t.numel());
    if (t.scalar_type() == torch::kBFloat16)
      return bf16_has_nan(reinterpret_cast<const uint16_t*>(t.data_ptr()), t.numel());
  }
  return torch::isnan(t).any().item<bool>();
}

}  // namespace nibble::core
