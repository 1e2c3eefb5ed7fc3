#pragma once
// Recipes: which quantization each GEMM operand of a Linear layer gets (DESIGN.md's table), plus the
// delayed-scaling settings and whether activations saved by non-linear ops are compressed (COAT).
//
// A Linear layer's three GEMMs read six operand copies: fprop x_row·w_rowᵀ, dgrad dy_row·w_colᵀ, wgrad
// dy_col·x_colᵀ. Each copy has its own spec, so recipes whose forward and backward differ (Quartet's QuEST
// forward and absmax + stochastic-rounding backward) are expressed without special cases.
#include <string>
#include <vector>

#include "precision/delayed_scaling.h"
#include "precision/quantize.h"

namespace nibble::core {

struct OperandSpec {
  bool quantized = false;              // false: high precision (the operand is rounded to BF16)
  precision::QuantizeOptions options;  // scheme, element format, rounding, RHT; rowwise/columnwise unused
  bool delayed = false;                // fp8_tensor with a DelayedScaling state instead of the current amax
};

struct Recipe {
  std::string name = "bf16";
  OperandSpec x_row, w_row;   // fprop
  OperandSpec dy_row, w_col;  // dgrad
  OperandSpec dy_col, x_col;  // wgrad
  bool compress_activations = false;  // save non-linear ops' inputs as FP8 1x16 groups (COAT)
  // Quartet's backward: both operands of dgrad and of wgrad get a random-sign Hadamard-32 along that GEMM's
  // inner dimension before they are quantized (rowwise, along the inner dim), signs redrawn every backward.
  bool backward_hadamard = false;
  int amax_history_len = 1024;
  precision::AmaxAlgo amax_algo = precision::AmaxAlgo::kMax;
  int margin = 0;
  // Every GEMM of a Linear with this recipe sums in FP64 (core/gemm.h GemmOptions::fp64_accumulation), and a
  // tensor-parallel split adds its partial sums in FP64 before rounding once: tp runs equal one rank bit for
  // bit. A property of the layer (its LinearState holds the recipe), never of the process.
  bool reproducible_sums = false;

  // Throws InvalidArgument naming the first operand whose spec cannot work and why.
  void validate() const;
  bool any_delayed() const;
};

// Presets: bf16, fp8_delayed, fp8_current, fp8_block, mxfp8, nvfp4, mxfp4, mxfp4_quartet. Any name of
// the form "exmy:<fmt>" (e.g. "exmy:e3m2", "exmy:e2m3") quantizes every operand to that research element
// format with MX-style 1x32 power-of-two block scales (emulation).
Recipe recipe_preset(const std::string& name);
std::vector<std::string> recipe_preset_names();

}  // namespace nibble::core
