#pragma once
// Philox4x32-10 (Salmon, Moraes, Dror, Shaw: "Parallel random numbers: as easy as 1, 2, 3", SC 2011).
// Counter-based: the output is a pure function of (key, counter), so every element's random bits can be
// computed independently, in any order, on any thread, on CPU or GPU, and always agree.
#include <cstdint>

#include "precision/host_device.h"

namespace nibble::precision {

struct Philox4x32Output {
  uint32_t v[4];
};

namespace philox_detail {
constexpr uint32_t kMul0 = 0xD2511F53u;
constexpr uint32_t kMul1 = 0xCD9E8D57u;
constexpr uint32_t kWeyl0 = 0x9E3779B9u;  // golden ratio
constexpr uint32_t kWeyl1 = 0xBB67AE85u;  // sqrt(3) - 1

NIBBLE_HOST_DEVICE void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}
}  // namespace philox_detail

// Ten rounds of the Philox4x32 bijection of `counter` under `key`.
NIBBLE_HOST_DEVICE Philox4x32Output philox4x32_10(const uint32_t counter[4], const uint32_t key[2]) {
  using namespace philox_detail;
  uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
  uint32_t k0 = key[0], k1 = key[1];
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kMul0, c0, hi0, lo0);
    mulhilo(kMul1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return Philox4x32Output{{c0, c1, c2, c3}};
}

// nibble's keying (NUMERICS.md "Stochastic rounding"): key = seed; counter = (offset, subsequence), each a
// 64-bit value split low word first, the layout curand's Philox uses for (offset, subsequence).
NIBBLE_HOST_DEVICE Philox4x32Output philox_block(uint64_t seed, uint64_t offset, uint64_t subsequence) {
  const uint32_t key[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  const uint32_t counter[4] = {static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                               static_cast<uint32_t>(subsequence), static_cast<uint32_t>(subsequence >> 32)};
  return philox4x32_10(counter, key);
}

}  // namespace nibble::precision
