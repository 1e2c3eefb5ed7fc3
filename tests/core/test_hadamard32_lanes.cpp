// core/cpu/hadamard32_lanes.h against core/hadamard32_butterfly.h (the reference loop the CUDA kernel also
// runs), bit for bit, FP32 and FP64 groups: random normals, values across the whole exponent range (the FP64
// sums then round), zeros of both signs, subnormals, ±Inf, NaNs, and group counts 0..9.
//
// NaN for NaN, not payload for payload: when both operands of an add are NaNs, IEEE 754 leaves which payload
// survives to the implementation, and the compiler may swap the operands of the reference's own a + b (it
// does: GCC 12 compiles the scalar loop with some adds commuted), as the CUDA kernel's compiler may. NUMERICS.md
// defines no payloads; a NaN anywhere in a gradient skips the step whatever its bits.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/cpu/hadamard32_lanes.h"
#include "core/hadamard32_butterfly.h"

namespace nibble::core::cpu {
namespace {

template <typename T, typename Bits>
std::vector<T> inputs(int64_t groups, uint32_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<double> normal;
  std::uniform_int_distribution<int> kind(0, 9), exponent(-140, 120);
  std::vector<T> v(static_cast<size_t>(groups) * 32);
  for (auto& x : v) {
    switch (kind(gen)) {
      case 0: x = static_cast<T>(std::ldexp(normal(gen), exponent(gen))); break;  // wide ranges: rounded sums
      case 1: x = (gen() & 1) ? T(0) : -T(0); break;
      case 2: x = static_cast<T>(std::numeric_limits<T>::denorm_min() * static_cast<T>(gen() % 1000)); break;
      case 3: {  // random bits: NaNs with payloads and signs, Infs, anything
        x = std::bit_cast<T>(static_cast<Bits>(gen()));
        break;
      }
      default: x = static_cast<T>(normal(gen));
    }
  }
  return v;
}

template <typename T, typename Bits>
void expect_same_bits(int64_t groups, uint32_t seed) {
  const std::vector<T> in = inputs<T, Bits>(groups, seed);
  std::vector<T> got(in.size()), want(in.size());
  hadamard32_groups_lanes(in.data(), got.data(), groups);
  for (int64_t g = 0; g < groups; ++g) hadamard32_butterfly(in.data() + g * 32, want.data() + g * 32);
  for (size_t i = 0; i < in.size(); ++i) {
    if (std::isnan(want[i])) {
      ASSERT_TRUE(std::isnan(got[i])) << "group " << i / 32 << " element " << i % 32 << ", seed " << seed;
      continue;
    }
    ASSERT_EQ(std::bit_cast<Bits>(got[i]), std::bit_cast<Bits>(want[i]))
        << "group " << i / 32 << " element " << i % 32 << " of " << groups << " groups, seed " << seed;
  }
}

TEST(Hadamard32Lanes, Fp32GroupsEqualTheButterflyBitForBit) {
  for (int64_t groups = 0; groups <= 9; ++groups) expect_same_bits<float, uint32_t>(groups, 11 + groups);
  for (uint32_t seed = 0; seed < 20; ++seed) expect_same_bits<float, uint32_t>(500, seed);
}

TEST(Hadamard32Lanes, Fp64GroupsEqualTheButterflyBitForBit) {
  for (int64_t groups = 0; groups <= 9; ++groups) expect_same_bits<double, uint64_t>(groups, 31 + groups);
  for (uint32_t seed = 0; seed < 20; ++seed) expect_same_bits<double, uint64_t>(500, 100 + seed);
}

// Two NaNs at every pair of positions, and Infs of both signs (whose sums give NaN where they meet): NaN
// wherever the reference has NaN, the same bits everywhere else.
TEST(Hadamard32Lanes, NansAndInfsWhereTheReferenceHasThem) {
  for (int i = 0; i < 32; ++i)
    for (int j = 0; j < 32; ++j) {
      if (i == j) continue;
      std::vector<float> in(32, 1.0f), got(32), want(32);
      in[i] = std::bit_cast<float>(0x7FC00001u);
      in[j] = std::bit_cast<float>(0xFFC00002u);
      hadamard32_groups_lanes(in.data(), got.data(), 1);
      hadamard32_butterfly(in.data(), want.data());
      for (int k = 0; k < 32; ++k) {
        if (std::isnan(want[k])) {
          ASSERT_TRUE(std::isnan(got[k])) << i << " " << j << " " << k;
          continue;
        }
        ASSERT_EQ(std::bit_cast<uint32_t>(got[k]), std::bit_cast<uint32_t>(want[k])) << i << " " << j << " " << k;
      }
      in[i] = INFINITY;
      in[j] = -INFINITY;
      hadamard32_groups_lanes(in.data(), got.data(), 1);
      hadamard32_butterfly(in.data(), want.data());
      for (int k = 0; k < 32; ++k) {
        ASSERT_EQ(std::isnan(got[k]), std::isnan(want[k])) << i << " " << j << " " << k;
        if (!std::isnan(want[k])) {
          ASSERT_EQ(std::bit_cast<uint32_t>(got[k]), std::bit_cast<uint32_t>(want[k])) << i << " " << j << " " << k;
        }
      }
    }
}

}  // namespace
}  // namespace nibble::core::cpu
