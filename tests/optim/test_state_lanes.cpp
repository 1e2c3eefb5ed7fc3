// The fused step's vector encoders against the scalar rules, bit for bit, over sweeps of the whole float range
// (every sign, exponent and rounding edge; NaN and Inf): the int8 bucket encoder (optim/cpu/dynamic_map_lanes.h)
// against dynamic_map_encode, and the bfloat16 lanes (optim/cpu/bf16_lanes.h) against encode_scalar under
// stochastic rounding and RNE. (tests/optim/test_fused_step.cpp checks whole steps against the scalar rules.)
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "optim/cpu/bf16_lanes.h"
#include "optim/cpu/dynamic_map_lanes.h"
#include "optim/dynamic_map.h"
#include "precision/format.h"

namespace nibble::optim {
namespace {

// Every 2^32 / stride-th bit pattern, offset so both halves of the low 16 bits are reached, plus the edges of
// every 2^16-aligned bucket of bits (what the int8 buckets and the bf16 rounding turn on) on both signs.
std::vector<uint32_t> bit_sweep(uint32_t stride) {
  std::vector<uint32_t> bits;
  for (uint64_t u = 0; u < (uint64_t{1} << 32); u += stride) bits.push_back(static_cast<uint32_t>(u) ^ 0x5A5Au);
  for (uint32_t high = 0; high < 0x10000u; ++high)
    for (uint32_t low : {0x0000u, 0x0001u, 0x7FFFu, 0x8000u, 0x8001u, 0xFFFEu, 0xFFFFu})
      bits.push_back(high << 16 | low);
  return bits;
}

TEST(StateLanes, Int8BucketEncoderEqualsTheBinarySearchOnEveryFloat) {
  const std::vector<uint32_t> bits = bit_sweep(997);
  std::vector<float> x(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) x[i] = std::bit_cast<float>(bits[i]);
  std::vector<uint8_t> codes(x.size());
  for (bool is_signed : {true, false}) {
    const float* threshold = dynamic_map(is_signed).threshold;
    // norm 1: x / norm is x itself (values past 1, Inf and NaN included: the encoder must not assume |x| <= 1);
    // norm 0.75: a division that rounds.
    for (float norm : {1.0f, 0.75f}) {
      dynamic_map_encode_span(x.data(), static_cast<int>(x.size()), norm, is_signed, codes.data());
      for (size_t i = 0; i < x.size(); ++i)
        ASSERT_EQ(codes[i], dynamic_map_encode(x[i] / norm, threshold))
            << "signed " << is_signed << " norm " << norm << " bits 0x" << std::hex << bits[i];
    }
    // Exactly at and next to every threshold (a tie takes the lower code).
    std::vector<float> near;
    for (int j = 0; j < 255; ++j)
      for (float t : {threshold[j], std::nextafter(threshold[j], -2.0f), std::nextafter(threshold[j], 2.0f)})
        near.push_back(t);
    std::vector<uint8_t> near_codes(near.size());
    dynamic_map_encode_span(near.data(), static_cast<int>(near.size()), 1.0f, is_signed, near_codes.data());
    for (size_t i = 0; i < near.size(); ++i)
      ASSERT_EQ(near_codes[i], dynamic_map_encode(near[i], threshold)) << near[i];
  }
}

TEST(StateLanes, Bf16LanesEqualEncodeScalarOnEveryFloat) {
  const std::vector<uint32_t> bits = bit_sweep(251);
  std::vector<float> x(bits.size());
  std::vector<uint16_t> random(bits.size()), sr(bits.size()), rne(bits.size());
  uint32_t state = 7;
  for (size_t i = 0; i < bits.size(); ++i) {
    x[i] = std::bit_cast<float>(bits[i]);
    state = state * 1664525u + 1013904223u;
    // Random fields that decide the edges: 0, the largest, and ones that carry exactly or just not.
    const uint16_t low = static_cast<uint16_t>(bits[i] & 0xFFFFu);
    switch (i % 5) {
      case 0:
        random[i] = 0;
        break;
      case 1:
        random[i] = 0xFFFF;
        break;
      case 2:
        random[i] = static_cast<uint16_t>(0x10000u - low);
        break;  // the sum reaches 2^16 exactly
      case 3:
        random[i] = static_cast<uint16_t>(0xFFFFu - low);
        break;  // one short of it
      default:
        random[i] = static_cast<uint16_t>(state >> 16);
    }
  }
  const int n = static_cast<int>(x.size());
  encode_bf16_stochastic(x.data(), n, random.data(), sr.data());
  encode_bf16_nearest(x.data(), n, rne.data());
  // The portable loops (what builds without AVX-512 run, and the lanes' tails) over the whole sweep too.
  std::vector<uint16_t> sr_loop(bits.size()), rne_loop(bits.size());
  encode_bf16_stochastic_loop(x.data(), n, random.data(), sr_loop.data());
  encode_bf16_nearest_loop(x.data(), n, rne_loop.data());
  EXPECT_EQ(sr_loop, sr);
  EXPECT_EQ(rne_loop, rne);
  using precision::Rounding;
  for (int i = 0; i < n; ++i) {
    ASSERT_EQ(sr[i], precision::encode_scalar(x[i], precision::formats::kBF16, Rounding::kStochastic,
                                              precision::RandomBits{random[i], 16}))
        << "bits 0x" << std::hex << bits[i] << " random 0x" << random[i];
    ASSERT_EQ(rne[i], precision::encode_scalar(x[i], precision::formats::kBF16, Rounding::kNearestEven))
        << "bits 0x" << std::hex << bits[i];
  }
}

}  // namespace
}  // namespace nibble::optim
