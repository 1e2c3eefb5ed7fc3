#pragma once
// Where stochastic rounding's random bits come from (NUMERICS.md "Stochastic rounding").
//
// Element i of a tensor rounded with (seed, offset) and r random bits per element reads its bits from
// Philox4x32-10 keyed by `seed`, counter (offset, subsequence). One Philox call yields four 32-bit words;
// a word serves k = 32 / r consecutive elements when r divides 32 (k = 4 for r = 8, as the hardware
// cvt.rs.e2m1x4 consumes one word per four FP4 values), otherwise one element. Hence
//   subsequence = i / (4k),  word = (i / k) mod 4,  field = i mod k,  bits = word >> (field * r).
// With r = 32 / 1 = one word per element this is the plain "subsequence = i / 4" rule.
// The mapping is a pure function of (seed, offset, i): CPU, GPU and any thread count agree bit for bit.
#include <cstdint>

#include "precision/format.h"
#include "precision/philox.h"

namespace nibble::precision {

// Elements served by one 32-bit word for r random bits each.
NIBBLE_HOST_DEVICE constexpr int elements_per_random_word(int r) { return (32 % r == 0) ? 32 / r : 1; }

// Elements served by one Philox call.
NIBBLE_HOST_DEVICE constexpr int elements_per_philox_call(int r) { return 4 * elements_per_random_word(r); }

// The r random bits of element `index`.
NIBBLE_HOST_DEVICE uint32_t stochastic_bits(uint64_t seed, uint64_t offset, uint64_t index, int r) {
  const int k = elements_per_random_word(r);
  const Philox4x32Output out = philox_block(seed, offset, index / (4u * k));
  const uint32_t word = out.v[(index / k) % 4u];
  const uint32_t field = static_cast<uint32_t>(index % k);
  const uint32_t mask = r >= 32 ? 0xFFFFFFFFu : ((1u << r) - 1u);
  return (word >> (field * r)) & mask;
}

// The default number of random bits: 8 for formats of at most 8 bits (the hardware cvt.rs width),
// 16 for wider ones (BF16, FP16, research formats past 8 bits).
NIBBLE_HOST_DEVICE constexpr int default_random_bit_count(Format fmt) { return fmt.bits() <= 8 ? 8 : 16; }

}  // namespace nibble::precision
