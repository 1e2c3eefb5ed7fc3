#pragma once
// RoPE's rotation on the CPU in one pass over memory, forward and backward (core/model/rope.cpp). The torch
// expression y = x * cos + cat(-x2, x1) * sin takes five passes and four temporaries forward and, through
// autograd, about eight more backward (zero-padded narrow gradients summed into x's); this is one each. Every
// element gets the same FP32 operations in the same order as that expression and its autograd, so the same
// values (compiled with -ffp-contract=off: no FMA contraction). Halves: x1 = x[..., :d/2], x2 = x[..., d/2:].
//   forward:  y1 = x1 * cos1 - x2 * sin1            y2 = x2 * cos2 + x1 * sin2
//   backward: dx1 = dy1 * cos1 + dy2 * sin2          dx2 = dy2 * cos2 - dy1 * sin1
// (a + (-b) is a - b exactly, and autograd's extra additions of zero padding change at most a zero's sign.)
#include <cstdint>

namespace nibble::core::cpu {

// A [batch, heads, seq, d] view with unit stride along d and any strides elsewhere (the QKV projection's
// output, permuted), and cos/sin [seq, d] contiguous.
struct RopeShape {
  int64_t batch = 0, heads = 0, seq = 0, d = 0;
  int64_t stride_batch = 0, stride_heads = 0, stride_seq = 0;
};

// y (contiguous [batch, heads, seq, d]) = rotate(x).
void rope_forward(const float* x, const RopeShape& shape, const float* cos, const float* sin, float* y);

// dx (contiguous) from dy (contiguous): the rotation's transpose.
void rope_backward(const float* dy, const RopeShape& shape, const float* cos, const float* sin, float* dx);

}  // namespace nibble::core::cpu
