#pragma once
// What a Linear's forward keeps for its backward, shared by the two autograd nodes: core/linear.cpp's
// (single rank) and parallel/nn/parallel_linear.cpp's (tensor parallel). They differ in their communication,
// not in what they save, and the tests compare them bit for bit, so the saving is one implementation.
#include <torch/csrc/autograd/function.h>
#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "core/linear.h"
#include "core/quantized_tensor.h"
#include "core/quartet_rotation.h"
#include "core/quest_mask.h"

namespace nibble::core {

struct LinearBackwardBase : public torch::autograd::Node {
  std::shared_ptr<LinearState> state;
  std::shared_ptr<QuantizedTensor> x_col, w_col;  // quantized wgrad / dgrad operands
  torch::Tensor x_dense;                          // high-precision x, bf16 (a recipe's unquantized wgrad operand)
  torch::Tensor weight;  // the parameter itself: dense dgrad operand, or rotated afresh in every backward (Quartet)
  torch::Tensor x_mask, w_mask;   // QuEST clip masks, bit-packed (straight-through estimator)
  InnerRotation wgrad_rotation;   // backward_hadamard: the rotation along the tokens x_col was quantized in
  uint64_t backward_counter = 0;  // first of the SR counter values reserved for this backward (core/linear.h)
  torch::ScalarType x_dtype = torch::kFloat32, w_dtype = torch::kFloat32;
  bool has_bias = false;

  void release_variables() override;

  // Quartet's wgrad copy of x: xᵀ rotated along the tokens, quantized rowwise with the recipe's x_col spec
  // (blocks along the tokens). The caller quantizes it: alone, or with its tensor-parallel group's amax.
  using QuantizeRotatedX = std::function<std::shared_ptr<QuantizedTensor>(const torch::Tensor& rotated_xt)>;

  // Called by forward after its GEMM: reserves the backward's SR counters, then keeps what backward reads.
  // x_tokens is x as [all tokens, in_features] (after any gather), read only for Quartet's rotated copy or an
  // unquantized wgrad operand (it may be undefined otherwise); x_dtype the input's dtype; x_row / x_col_copy
  // the quantized copies forward made (either may be null). Returns the activation bytes kept
  // (core/saved_for_backward_meter.h).
  int64_t save_for_backward(const std::shared_ptr<LinearState>& state, const torch::Tensor& x_tokens,
                            torch::ScalarType x_dtype, const std::shared_ptr<QuantizedTensor>& x_row,
                            const std::shared_ptr<QuantizedTensor>& x_col_copy, const torch::Tensor& weight,
                            bool has_bias, bool need_wgrad, const QuantizeRotatedX& quantize_rotated_x);
};

}  // namespace nibble::core
