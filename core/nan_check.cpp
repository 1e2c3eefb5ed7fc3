#include "core/nan_check.h"

#include <algorithm>
#include <cstdint>

namespace nibble::core {
namespace {

// A NaN is a value whose bits without the sign exceed the infinity's. Per block of elements, the largest
// such magnitude as a signed int32 max (a reduction GCC vectorises; a float compare with an OR does not),
// then one comparison; the scan stops at the first block with a NaN. Bits: uint32_t for float32 (read in
// place through a may_alias type, which is defined), uint16_t for bfloat16.
constexpr int64_t kBlock = 1024;
typedef uint32_t __attribute__((may_alias)) float_bits;

template <class Bits>
bool has_nan_bits(const Bits* p, int64_t n, uint32_t magnitude_mask, int32_t infinity) {
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    int32_t largest = 0;
    for (int64_t i = b; i < e; ++i) largest = std::max(largest, static_cast<int32_t>(p[i] & magnitude_mask));
    if (largest > infinity) return true;
  }
  return false;
}

}  // namespace

bool contains_nan(const torch::Tensor& t) {
  if (t.device().is_cpu() && t.is_contiguous()) {
    if (t.scalar_type() == torch::kFloat32)
      return has_nan_bits(reinterpret_cast<const float_bits*>(t.data_ptr()), t.numel(), 0x7FFFFFFFu, 0x7F800000);
    if (t.scalar_type() == torch::kBFloat16)
      return has_nan_bits(reinterpret_cast<const uint16_t*>(t.data_ptr()), t.numel(), 0x7FFFu, 0x7F80);
  }
  return torch::isnan(t).any().item<bool>();
}

}  // namespace nibble::core
