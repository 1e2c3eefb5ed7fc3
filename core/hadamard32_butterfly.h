#pragma once
// One group of 32 of Quartet's backward rotation and QuEST mask (core/quartet_rotation.h, quest_mask.h): the
// Walsh-Hadamard butterflies in FP64, in Sylvester order (entry (i, j) of H is (-1)^popcount(i & j), the matrix
// QuEST and Quartet use), normalised by 1/sqrt(32) and rounded once. Every result depends on its 32 inputs only,
// in a fixed order, so the CPU loop (core/linear.cpp) and the CUDA kernel (core/cuda/hadamard32_groups.cu)
// give the same bits, and a tensor-parallel shard rotates its rows as the whole tensor does.
#include <cmath>

#include "precision/host_device.h"

namespace nibble::core {

template <typename T>
NIBBLE_HOST_DEVICE void hadamard32_butterfly(const T* in, T* out) {
  double v[32];
  for (int i = 0; i < 32; ++i) v[i] = static_cast<double>(in[i]);
  for (int len = 1; len < 32; len *= 2)
    for (int i = 0; i < 32; i += 2 * len)
      for (int j = i; j < i + len; ++j) {
        const double a = v[j], b = v[j + len];
        v[j] = a + b;
        v[j + len] = a - b;
      }
  const double norm = 1.0 / sqrt(32.0);
  for (int i = 0; i < 32; ++i) out[i] = static_cast<T>(v[i] * norm);
}

}  // namespace nibble::core
