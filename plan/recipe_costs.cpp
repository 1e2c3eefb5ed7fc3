// Recipe costs from nibble's recipe presets and GEMM-path rules (see plan/recipe_costs.h).
#include "plan/recipe_costs.h"

#include "core/gemm_path.h"
#include "core/recipe.h"
#include "precision/quantize.h"

namespace nibble::plan {
namespace {

// Bytes per element of one quantized copy, scales (and QuEST's mask) included, measured on a square tile
// large enough that edge blocks do not matter.
double copy_bytes(const core::OperandSpec& spec) {
  if (!spec.quantized) return 2.0;
  constexpr int64_t n = 4096;
  const precision::CopyLayout l = precision::copy_layout(spec.options, n, n);
  const double scale_bytes = l.scale_storage == precision::ScaleStorage::kFloat32 ? 4.0 : 1.0;
  const double total = static_cast<double>(l.rows * l.data_row_bytes) +
                       static_cast<double>(l.scale_rows * l.scale_cols) * scale_bytes +
                       (l.has_mask ? static_cast<double>(l.rows * l.cols) : 0.0);
  return total / static_cast<double>(n * n);
}

GemmFormat format_of(core::GemmPath path) {
  switch (path) {
    case core::GemmPath::kFP8Tensor:
    case core::GemmPath::kFP8Block:
      return GemmFormat::kFP8;
    case core::GemmPath::kMXFP8:
      return GemmFormat::kMXFP8;
    case core::GemmPath::kNVFP4:
      return GemmFormat::kNVFP4;
    case core::GemmPath::kCpuEmulation:
    case core::GemmPath::kDequantizeBf16:
      return GemmFormat::kBF16;
  }
  return GemmFormat::kBF16;
}

// nibble's CPU emulation decodes every format to BF16 values, so its speed is not BF16's: quantizing and
// decoding cost per element, differently per format. A calibrated CPU description (plan/calibrate.py) holds,
// in each format's slot, a measured Linear's rate in that format, quantization included; this picks the slot.
GemmFormat cpu_slot(const core::OperandSpec& spec) {
  if (!spec.quantized) return GemmFormat::kBF16;
  switch (spec.options.scheme) {
    case precision::Scheme::kFP8Tensor:
    case precision::Scheme::kFP8Block128:
    case precision::Scheme::kFP8Block16:
    case precision::Scheme::kFP8Block128x128:
      return GemmFormat::kFP8;
    case precision::Scheme::kMXFP8:
      return GemmFormat::kMXFP8;
    case precision::Scheme::kNVFP4:
    case precision::Scheme::kNVFP4_2D:
      return GemmFormat::kNVFP4;
    case precision::Scheme::kMXFP4:
    case precision::Scheme::kMXFP4Quest:
      return GemmFormat::kMXFP4;
  }
  return GemmFormat::kBF16;
}

}  // namespace

RecipeCosts recipe_costs(const std::string& recipe, int cuda_sm) {
  const core::Recipe r = core::recipe_preset(recipe);
  const core::LinearGemmPaths paths = core::linear_gemm_paths(r, core::GemmDevice{cuda_sm});
  RecipeCosts c;
  c.recipe = recipe;
  c.fprop = format_of(paths.fprop);
  c.dgrad = format_of(paths.dgrad);
  c.wgrad = format_of(paths.wgrad);
  c.fprop_path = core::gemm_path_name(paths.fprop);
  if (cuda_sm == 0) {
    c.fprop = cpu_slot(r.x_row);
    c.dgrad = cpu_slot(r.dy_row);
    c.wgrad = cpu_slot(r.dy_col);
  }
  c.x_row = copy_bytes(r.x_row);
  c.w_row = copy_bytes(r.w_row);
  c.dy_row = copy_bytes(r.dy_row);
  c.w_col = copy_bytes(r.w_col);
  c.dy_col = copy_bytes(r.dy_col);
  c.x_col = copy_bytes(r.x_col);
  c.quantized = r.x_row.quantized || r.w_row.quantized || r.dy_row.quantized || r.w_col.quantized ||
                r.dy_col.quantized || r.x_col.quantized;
  c.dequantized = c.quantized && cuda_sm > 0 &&
                  (paths.fprop == core::GemmPath::kDequantizeBf16 || paths.dgrad == core::GemmPath::kDequantizeBf16 ||
                   paths.wgrad == core::GemmPath::kDequantizeBf16);
  c.quantize_in_gemm_rate = c.quantized && cuda_sm == 0;
  c.compress_activations = r.compress_activations;
  if (c.compress_activations) {
    core::OperandSpec coat;
    coat.quantized = true;
    coat.options = precision::default_options(precision::Scheme::kFP8Block16);
    c.compressed_activation_bytes = copy_bytes(coat);
  }
  return c;
}

}  // namespace nibble::plan
