#include "core/nan_check.h"

#include <algorithm>
#include <cstdint>

namespace nibble::core {
namespace {

// A NaN is a value whose bits without the sign exceed the infinity's. Per block of elements, the largest
// such magnitude as a signed int32 max (a reduction GCC vectorises; a float compare with an OR does not),
// then one comparison; the scan stops at the first block with a NaN.
constexpr int64_t kBlock = 1024;

// The float's bits read in place (may_alias: reading a float through this type is defined).
typedef uint32_t __attribute__((may_alias)) float_bits;

bool f32_has_nan(const float* p, int64_t n) {
  const float_bits* bits = reinterpret_cast<const float_bits*>(p);
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    int32_t largest = 0;
    for (int64_t i = b; i < e; ++i) largest = std::max(largest, static_cast<int32_t>(bits[i] & 0x7FFFFFFFu));
    if (largest > 0x7F800000) return true;
  }
  return false;
}

bool bf16_has_nan(const uint16_t* p, int64_t n) {
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    int32_t largest = 0;
    for (int64_t i = b; i < e; ++i) largest = std::max(largest, static_cast<int32_t>(p[i] & 0x7FFFu));
    if (largest > 0x7F80) return true;
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
