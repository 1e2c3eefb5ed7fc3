#pragma once
// Low-precision GEMM: C = A · Bᵀ (the "TN" layout: both operands have K as their contiguous last dim),
// FP32 accumulation. Operands are quantized copies of any scheme (mixed formats allowed, e.g. E4M3 x E5M2)
// or high-precision tensors (rounded to BF16, the "bf16" recipe). Which copy feeds which GEMM of a Linear
// layer is DESIGN.md's table: fprop x·Wᵀ (x row, W row), dgrad dy·W (dy row, W col), wgrad dyᵀ·x (dy col, x col).
#include <torch/torch.h>

#include <optional>
#include <string>

#include "core/quantized_tensor.h"

namespace nibble::core {

struct GemmOperand {
  const QuantizedCopyTensor* copy = nullptr;  // quantized operand (rows, K) ...
  precision::QuantizeOptions options;         // ... and how it was quantized
  torch::Tensor dense;                        // or a float32 / bfloat16 (rows, K) tensor, row- or column-major

  static GemmOperand quantized(const QuantizedCopyTensor& copy, const precision::QuantizeOptions& options);
  static GemmOperand high_precision(const torch::Tensor& x);
  // A quantized tensor's rowwise / columnwise copy (the copy must exist and outlive the operand).
  static GemmOperand rowwise(const QuantizedTensor& q) { return quantized(*q.rowwise, q.options); }
  static GemmOperand columnwise(const QuantizedTensor& q) { return quantized(*q.columnwise, q.options); }
  int64_t rows() const;
  int64_t k() const;
  std::string describe() const;
};

struct GemmOptions {
  std::optional<torch::Tensor> bias;        // (N,) added to every row
  std::optional<torch::Tensor> accumulate;  // (M, N) float32: the result is added into it, in place
  // float32 or bfloat16; float64 (only with fp64_accumulation) returns the FP64 sums unrounded -- a
  // tensor-parallel partial sum that the group adds before rounding once.
  torch::ScalarType out_dtype = torch::kFloat32;
  // FP64 accumulation (a recipe's reproducible_sums, nibble-train's parallel.reproducible_sums): the products
  // are summed in FP64 instead of FP32. The products of BF16 and of dequantized 4/8-bit operands (alpha, the
  // per-tensor factor, applied after the sum) have at most 16 significant bits, so the FP64 sums are exact
  // whatever their order unless the terms span more than ~2^37 in magnitude, and the result rounds to FP32
  // once. A K split across tensor-parallel ranks (row-parallel partial sums, column-parallel dgrads, added in
  // FP64 by the group) then gives bit for bit the single-rank result. Costs the FP32/BF16 kernels' speed: a
  // mode for checking layouts against one rank and for reproducible research runs, not for throughput.
  bool fp64_accumulation = false;
  std::string name = "gemm";                // used in error messages
};

// Returns (M, N) = A (M, K) · B (N, K)ᵀ, or the `accumulate` tensor after adding into it.
torch::Tensor gemm(const GemmOperand& a, const GemmOperand& b, const GemmOptions& options = {});

}  // namespace nibble::core
