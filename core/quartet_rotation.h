#pragma once
// Quartet's backward rotation, used by both Linear nodes: core/linear.cpp (single rank) and
// parallel/nn/parallel_linear.cpp (tensor parallel), which the tests compare bit for bit, so it must be one
// implementation. QuEST's forward clip masks are core/quest_mask.h.
//
// Rotation Q = diag(s)·H32 (s random ±1, H32 the normalised Hadamard, block-diagonal over groups of 32): applied
// to both operands of a GEMM along its inner dimension it cancels, (A·Q)(B·Q)ᵀ = A·Bᵀ, while spreading each
// block's outliers so the MXFP4 quantization error is smaller and decorrelated. The inner dimension is
// zero-padded to a multiple of 32 (zeros add nothing to the product).
#include <torch/torch.h>

#include <cstdint>

#include "core/linear.h"

namespace nibble::core {

struct InnerRotation {
  int64_t inner = 0, padded = 0;
  uint64_t seed = 0, offset = 0;  // Philox key and counter of the signs: kept instead of the signs themselves
  // Index of the first sign within the whole inner dimension: a tensor-parallel shard of the output features
  // rotates its features with the signs the unsharded Linear draws for them.
  int64_t first = 0;
};

// A fresh rotation: the layer's seed and the next value of its counter, so every backward draws new signs and a
// run is reproducible from its seed.
InnerRotation next_rotation(int64_t inner, LinearState& s);
// The signs: one Philox bit per inner index first + i (128 indices per Philox block), +1 for 0 and -1 for 1.
torch::Tensor rotation_signs(const InnerRotation& r);
// t2d: [rows, inner] -> [rows, padded] = pad(t2d)·Q, float32.
torch::Tensor rotate_inner(const torch::Tensor& t2d, const InnerRotation& r);

}  // namespace nibble::core
