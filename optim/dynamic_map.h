#pragma once
// The 8-bit "dynamic" code of bitsandbytes' blockwise optimizers (Dettmers et al., "8-bit Optimizers via
// Block-wise Quantization", 2022; the code itself from Dettmers 2015, "8-Bit Approximations for
// Parallelism in Deep Learning"), built here from that description:
//   a code is sign | a run of e zero bits | an indicator 1 | a linear fraction; its value is
//   10^-e * (a bin midpoint of [0.1, 1] at the fraction's resolution).
// With 7 bits after the sign, e = 6 - i for i = 0..6 leaves i fraction bits: 2^i bins in decade 10^(i-6),
// 127 magnitudes, mirrored for negatives, plus 0 and 1 (256 codes). The unsigned code (second moment) uses
// the sign bit as one more fraction bit: 2^(i+1) bins per decade, 254 values plus 0 and 1.
// Values are normalised by their block's absmax and take the nearest code. C++17: shared with .cu files.
#include <cstdint>

#include "precision/host_device.h"

namespace nibble::optim {

inline constexpr int kInt8BlockSize = 256;

// A sorted code table and the 255 decision thresholds between neighbours (plus +Inf), for the nearest-code
// search. Index = code.
struct DynamicMap {
  float value[256];
  float threshold[256];  // threshold[j] = midpoint of value[j], value[j+1]; threshold[255] = +Inf
};

// The signed (first moment, momentum) or unsigned (second moment) table; built once, immutable.
const DynamicMap& dynamic_map(bool is_signed);

// Nearest code of x (x already divided by the block absmax): the number of thresholds below x, found by an
// 8-step branch-free binary search. A tie (x exactly on a threshold) takes the lower code.
// Written out step by step: a loop body without an inner loop, which the CPU compiler vectorises (gathers).
NIBBLE_HOST_DEVICE uint32_t dynamic_map_encode(float x, const float* threshold) {
  uint32_t idx = 0;
  idx += (x > threshold[idx + 127]) ? 128u : 0u;
  idx += (x > threshold[idx + 63]) ? 64u : 0u;
  idx += (x > threshold[idx + 31]) ? 32u : 0u;
  idx += (x > threshold[idx + 15]) ? 16u : 0u;
  idx += (x > threshold[idx + 7]) ? 8u : 0u;
  idx += (x > threshold[idx + 3]) ? 4u : 0u;
  idx += (x > threshold[idx + 1]) ? 2u : 0u;
  idx += (x > threshold[idx]) ? 1u : 0u;
  return idx;
}

}  // namespace nibble::optim
