#pragma once
// QuEST's straight-through estimator (Quartet's forward): the clip mask of a quantized operand, kept one bit per
// element from forward to backward, and the gradient passed through it. Used by both Linear nodes
// (core/linear.cpp, parallel/nn/parallel_linear.cpp), which the tests compare bit for bit.
#include <torch/torch.h>

namespace nibble::core {

// QuEST clip masks kept one bit per element (the last dim is a multiple of 32, so of 8), and back.
torch::Tensor pack_mask(const torch::Tensor& mask);
torch::Tensor unpack_mask(const torch::Tensor& packed);
// QuEST's straight-through estimator: the gradient passes through the Hadamard domain, zeroed where the
// forward clipped.
torch::Tensor through_quest_mask(const torch::Tensor& grad, const torch::Tensor& packed_mask);

}  // namespace nibble::core
