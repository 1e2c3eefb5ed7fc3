#pragma once
// What a nibble recipe costs on a given GPU: which tensor-core rate each of a Linear's three GEMMs runs at, and
// how many bytes per element each quantized operand copy and each saved activation takes. Derived from
// nibble's own rules, not re-stated: core::recipe_preset (the operand specs), core::linear_gemm_paths (the
// GEMM path per device: native FP8 on sm_89+, MXFP8/NVFP4 on sm_100, everything else dequantized to BF16)
// and precision::copy_layout (data and scale bytes of a copy).
#include <string>

#include "plan/cluster.h"

namespace nibble::plan {

struct RecipeCosts {
  std::string recipe;
  GemmFormat fprop = GemmFormat::kBF16, dgrad = GemmFormat::kBF16, wgrad = GemmFormat::kBF16;
  std::string fprop_path;  // nibble's path name for fprop (core::gemm_path_name), for the report
  bool quantized = false;  // any operand quantized: quantization passes run
  bool dequantized = false;  // quantized operands decoded to BF16 before the GEMM (no native path on this GPU)
  // On a CPU the format slots hold a calibrated Linear's rate with quantizing its operands included (see
  // recipe_costs.cpp cpu_slot), so the step model does not add the quantization passes again.
  bool quantize_in_gemm_rate = false;
  // Bytes per element of each operand copy (2 = a BF16 operand).
  double x_row = 2, w_row = 2, dy_row = 2, w_col = 2, dy_col = 2, x_col = 2;
  // Saved for backward: a Linear keeps its input's columnwise copy (x_col) for wgrad; with compressed
  // activations (COAT, every preset but bf16) non-linear ops keep their inputs as FP8 1x16 groups.
  bool compress_activations = false;
  double compressed_activation_bytes = 2;  // per element of a non-linear op's saved input
};

// `cuda_sm` = 0: a CPU (nibble's BF16 emulation; each GEMM at its operands' format slot of a calibrated CPU
// description). Throws InvalidArgument for an unknown recipe.
RecipeCosts recipe_costs(const std::string& recipe, int cuda_sm);

}  // namespace nibble::plan
