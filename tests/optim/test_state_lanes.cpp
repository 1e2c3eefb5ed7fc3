// The fused step's vector encoders against the scalar rules, bit for bit, over sweeps of the whole float range
// (every sign, exponent and rounding edge; NaN and Inf): the int8 bucket encoder (optim/cpu/dynamic_map_lanes.h)
// against dynamic_map_encode, and the bfloat16 lanes (optim/cpu/bf16_lanes.h) against encode_scalar under
// stochastic rounding and RNE. The Highway lanes (the int8 encode and decode, the E4M3 decode) again on every
// Highway target this CPU runs, forced one at a time. (tests/optim/test_fused_step.cpp checks whole steps against the scalar rules.)
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <vector>

#include "optim/cpu/bf16_lanes.h"
#include "optim/cpu/dynamic_map_buckets.h"
#include "optim/cpu/dynamic_map_hwy.h"
#include "optim/cpu/dynamic_map_lanes.h"
#include "optim/cpu/e4m3_decode_hwy.h"
#include "optim/dynamic_map.h"
#include "precision/cpu/simd_targets.h"
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

#if NIBBLE_HAVE_DYNAMIC_MAP_HWY && NIBBLE_HAVE_E4M3_DECODE_HWY
// Runs body(target name) once per Highway target this CPU runs, that target forced; at least two (AVX2 and
// below on any x86 machine Highway builds for).
template <class Body>
void on_every_target(Body body) {
  const std::vector<int64_t> targets = precision::simd::runnable_targets();
  EXPECT_GE(targets.size(), 2u);
  for (const int64_t target : targets) {
    precision::simd::force_target(target);
    ASSERT_EQ(precision::simd::current_target(), target);
    body(precision::simd::target_name(target));
    precision::simd::force_target(0);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

// Lengths that leave every tail length of every target's vectors (1..15 lanes past whole vectors).
constexpr size_t kTailLengths[] = {0, 1, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100};

TEST(StateLanes, Int8HwyEncoderEqualsTheBinarySearchOnEveryTarget) {
  std::vector<uint32_t> bits = bit_sweep(4999);
  for (uint32_t special : {0x00000000u, 0x80000000u, 0x00000001u, 0x807FFFFFu, 0x7F800000u, 0xFF800000u,
                           0x7FC00000u, 0xFFC00001u, 0x7F800001u, 0x3F800000u, 0xBF800000u, 0x7F7FFFFFu})
    bits.push_back(special);
  std::vector<float> x(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) x[i] = std::bit_cast<float>(bits[i]);
  for (bool is_signed : {true, false}) {
    const float* threshold = dynamic_map(is_signed).threshold;
    std::vector<float> near;  // at and next to every threshold (a tie takes the lower code)
    for (int j = 0; j < 255; ++j)
      for (float t : {threshold[j], std::nextafter(threshold[j], -2.0f), std::nextafter(threshold[j], 2.0f)})
        near.push_back(t);
    const uint32_t* words = dynamic_map_buckets::words(is_signed);
    on_every_target([&](const char* target) {
      for (float norm : {1.0f, 0.75f, 3.0e-39f}) {  // 3e-39: a subnormal norm, so quotients overflow to Inf
        for (const std::vector<float>* in : {&x, &near}) {
          std::vector<uint8_t> codes(in->size());
          dynamic_map_encode_hwy(in->data(), in->size(), norm, words, codes.data());
          for (size_t i = 0; i < in->size(); ++i)
            ASSERT_EQ(codes[i], dynamic_map_encode((*in)[i] / norm, threshold))
                << target << " signed " << is_signed << " norm " << norm << " bits 0x" << std::hex
                << std::bit_cast<uint32_t>((*in)[i]);
        }
      }
      for (size_t n : kTailLengths) {  // tails: nothing past n is written
        std::vector<uint8_t> codes(n + 1, 0xAB);
        dynamic_map_encode_hwy(x.data() + 5, n, 0.75f, words, codes.data());
        for (size_t i = 0; i < n; ++i) ASSERT_EQ(codes[i], dynamic_map_encode(x[5 + i] / 0.75f, threshold)) << target;
        ASSERT_EQ(codes[n], 0xAB) << target << " n " << n;
      }
    });
  }
}

TEST(StateLanes, Int8HwyDecoderEqualsTheTableOnEveryTarget) {
  std::vector<uint8_t> codes;
  for (int rep = 0; rep < 3; ++rep)
    for (int c = 0; c < 256; ++c) codes.push_back(static_cast<uint8_t>(rep == 1 ? 255 - c : (c * 37 + rep) & 0xFF));
  for (bool is_signed : {true, false}) {
    const float* value = dynamic_map(is_signed).value;
    on_every_target([&](const char* target) {
      for (float absmax : {1.0f, 0.3f, 1.0e-40f, 3.0e38f, 0.0f, INFINITY, NAN}) {
        for (size_t n : kTailLengths) {
          const size_t len = n == 0 ? codes.size() : n;
          std::vector<float> out(len + 1, -7.0f);
          dynamic_map_decode_hwy(codes.data() + (n == 0 ? 0 : 3), len, absmax, value, out.data());
          for (size_t i = 0; i < len; ++i)
            ASSERT_EQ(std::bit_cast<uint32_t>(out[i]),
                      std::bit_cast<uint32_t>(value[codes[i + (n == 0 ? 0 : 3)]] * absmax))
                << target << " signed " << is_signed << " absmax " << absmax << " i " << i;
          ASSERT_EQ(out[len], -7.0f) << target;
        }
      }
    });
  }
}

TEST(StateLanes, E4M3HwyDecodeEqualsDecodeScalarOnEveryTarget) {
  std::vector<uint8_t> codes;
  for (int rep = 0; rep < 2; ++rep)
    for (int c = 0; c < 256; ++c) codes.push_back(static_cast<uint8_t>(rep == 1 ? 255 - c : c));
  on_every_target([&](const char* target) {
    for (size_t n : kTailLengths) {
      const size_t len = n == 0 ? codes.size() : n, offset = n == 0 ? 0 : 121;  // 121: NaN, 0x7F, in the tails
      std::vector<float> out(len + 1, -7.0f);
      decode_e4m3_hwy(codes.data() + offset, len, out.data());
      for (size_t i = 0; i < len; ++i) {
        const uint8_t c = codes[offset + i];
        ASSERT_EQ(std::bit_cast<uint32_t>(out[i]),
                  std::bit_cast<uint32_t>(precision::decode_scalar(c, precision::formats::kE4M3)))
            << target << " code 0x" << std::hex << int{c};
      }
      ASSERT_EQ(out[len], -7.0f) << target;
    }
  });
}
#endif

}  // namespace
}  // namespace nibble::optim
