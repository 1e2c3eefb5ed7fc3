// The GEMM's FP32 -> BF16 operand rounding (core/cpu/f32_to_bf16.h, a loop the compiler vectorises) against
// precision::encode_scalar to kBF16 with round-to-nearest-even, the rule it implements, and the scalar form of
// the same rule: every exponent with mantissas at and around the rounding ties, ±0, subnormals, the overflow
// boundary, ±Inf, NaNs of both signs and random bits, at every length around the vector widths.
#include <gtest/gtest.h>

#include <bit>
#include <cstdint>
#include <random>
#include <vector>

#include "core/cpu/f32_to_bf16.h"
#include "precision/bf16_bits.h"
#include "precision/format.h"

namespace nibble::core::cpu {
namespace {

std::vector<uint32_t> interesting_bits() {
  std::vector<uint32_t> bits;
  for (uint32_t sign : {0u, 0x80000000u})
    for (uint32_t exponent = 0; exponent < 256; ++exponent)
      for (uint32_t low : {0u, 1u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFFu, 0x18000u, 0x17FFFu, 0x7F8000u, 0x7FFFFFu,
                           0x400000u, 0x7F7FFFu})
        bits.push_back(sign | (exponent << 23) | low);
  std::mt19937 gen(5);
  for (int i = 0; i < 100000; ++i) bits.push_back(gen());
  return bits;
}

TEST(F32ToBf16, EqualsEncodeScalar) {
  const std::vector<uint32_t> bits = interesting_bits();
  std::vector<float> in(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) in[i] = std::bit_cast<float>(bits[i]);
  std::vector<uint16_t> out(in.size());
  f32_to_bf16_row(in.data(), static_cast<int64_t>(in.size()), out.data());
  for (size_t i = 0; i < in.size(); ++i) {
    const auto expected = static_cast<uint16_t>(
        precision::encode_scalar(in[i], precision::formats::kBF16, precision::Rounding::kNearestEven));
    ASSERT_EQ(out[i], expected) << "bits 0x" << std::hex << bits[i];
  }
}

TEST(F32ToBf16, EveryLengthAroundTheVectorWidths) {
  std::vector<float> in(70);
  for (size_t i = 0; i < in.size(); ++i) in[i] = 1.0f + static_cast<float>(i) * 0.0078125f + 3e-5f;
  for (int64_t n = 0; n <= 70; ++n) {
    std::vector<uint16_t> out(71, 0xABCD);
    f32_to_bf16_row(in.data(), n, out.data());
    for (int64_t k = 0; k < n; ++k)
      ASSERT_EQ(out[static_cast<size_t>(k)], precision::bf16_code_nearest(std::bit_cast<uint32_t>(in[static_cast<size_t>(k)])))
          << n << " " << k;
    EXPECT_EQ(out[static_cast<size_t>(n)], 0xABCD) << "wrote past " << n;
  }
}

}  // namespace
}  // namespace nibble::core::cpu
