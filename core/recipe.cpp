#include "core/recipe.h"

#include "precision/error.h"
#include "precision/format_names.h"

namespace nibble::core {
namespace {

using precision::Rounding;
using precision::Scheme;
namespace formats = precision::formats;

OperandSpec spec(Scheme scheme, precision::Format element, Rounding rounding = Rounding::kNearestEven,
                 bool rht = false) {
  OperandSpec s;
  s.quantized = true;
  s.options = precision::default_options(scheme);
  s.options.element = element;
  s.options.rounding = rounding;
  s.options.rht = rht;
  return s;
}

void set_all(Recipe& r, const OperandSpec& fwd, const OperandSpec& grad) {
  r.x_row = r.w_row = r.w_col = r.x_col = fwd;
  r.dy_row = r.dy_col = grad;
}

void check(const OperandSpec& s, const std::string& operand, const std::string& recipe) {
  if (!s.quantized) return;
  const auto& o = s.options;
  const std::string who = "recipe '" + recipe + "', operand " + operand + ": ";
  const bool fp4_scheme = o.scheme == Scheme::kNVFP4 || o.scheme == Scheme::kNVFP4_2D || o.scheme == Scheme::kMXFP4 ||
                          o.scheme == Scheme::kMXFP4Quest;
  if (fp4_scheme && o.element != formats::kE2M1)
    throw InvalidArgument(who + precision::scheme_name(o.scheme) + " needs e2m1 elements, got " +
                          precision::format_name(o.element));
  if (o.rht && o.scheme != Scheme::kNVFP4)
    throw InvalidArgument(who + "the RHT is defined for nvfp4 only");
  const bool columnwise_operand = operand == "x_col" || operand == "dy_col" || operand == "w_col";
  if (o.rht && !columnwise_operand)
    throw InvalidArgument(who + "the RHT applies to the wgrad operands (x_col, dy_col), whose transforms cancel in "
                          "dyᵀx; on " + operand + " it would change the product");
  if (s.delayed && o.scheme != Scheme::kFP8Tensor)
    throw InvalidArgument(who + "delayed scaling is defined for per-tensor FP8 (fp8_tensor) only");
  if (o.scheme == Scheme::kMXFP4Quest && columnwise_operand)
    throw InvalidArgument(who + "QuEST (Hadamard domain) is a forward scheme; its transform would not cancel in "
                          "the backward GEMMs");
}

}  // namespace

void Recipe::validate() const {
  check(x_row, "x_row", name);
  check(w_row, "w_row", name);
  check(dy_row, "dy_row", name);
  check(w_col, "w_col", name);
  check(dy_col, "dy_col", name);
  check(x_col, "x_col", name);
  // The two operands of each GEMM must live in the same domain: a Hadamard transform on one side only
  // would silently change the product.
  const bool xq = x_row.quantized && x_row.options.scheme == Scheme::kMXFP4Quest;
  const bool wq = w_row.quantized && w_row.options.scheme == Scheme::kMXFP4Quest;
  if (xq != wq)
    throw InvalidArgument("recipe '" + name + "': fprop operands x_row and w_row must both use mxfp4_quest (the "
                          "Hadamard cancels only when both sides are transformed)");
  // A BF16 copy is never rotated, so a rotated partner would meet it in another domain (the weight gradient
  // would be (R·dy_col)ᵀ·x_col instead of (R·dy_col)ᵀ·(R·x_col), and training diverges: a BF16 x with nvfp4's
  // dy did).
  const bool x_rotated = x_col.quantized && x_col.options.rht;
  const bool dy_rotated = dy_col.quantized && dy_col.options.rht;
  if (x_rotated != dy_rotated) {
    const char* with = x_rotated ? "x_col" : "dy_col";
    const char* without = x_rotated ? "dy_col" : "x_col";
    const bool bf16 = !(x_rotated ? dy_col : x_col).quantized;
    throw InvalidArgument("recipe '" + name +
                          "': the RHT must be on both wgrad operands (x_col and dy_col) or neither; " + with +
                          " has it and " + without + (bf16 ? " is BF16 (never rotated)" : " has not") + ": set " +
                          with + ".rht=false too");
  }
  if (backward_hadamard) {
    for (const auto& [spec, role] : {std::pair{&dy_row, "dy_row"}, std::pair{&w_col, "w_col"},
                                     std::pair{&dy_col, "dy_col"}, std::pair{&x_col, "x_col"}})
      if (!spec->quantized || spec->delayed || spec->options.rht ||
          spec->options.scheme == Scheme::kMXFP4Quest)
        throw InvalidArgument("recipe '" + name + "': backward_hadamard rotates every backward operand, so " + role +
                              " must be quantized with current scaling, without its own RHT and not with QuEST");
  }
  if (amax_history_len < 1) throw InvalidArgument("recipe '" + name + "': amax_history_len must be >= 1");
}

bool Recipe::any_delayed() const {
  return x_row.delayed || w_row.delayed || dy_row.delayed || w_col.delayed || dy_col.delayed || x_col.delayed;
}

std::vector<std::string> recipe_preset_names() {
  return {"bf16", "fp8_delayed", "fp8_current", "fp8_block", "mxfp8", "nvfp4", "mxfp4", "mxfp4_quartet"};
}

Recipe recipe_preset(const std::string& name) {
  Recipe r;
  r.name = name;
  if (name == "bf16") {
    // all operands high precision
  } else if (name == "fp8_current" || name == "fp8_delayed") {
    // HYBRID: E4M3 forward, E5M2 gradients (TE's default format).
    set_all(r, spec(Scheme::kFP8Tensor, formats::kE4M3), spec(Scheme::kFP8Tensor, formats::kE5M2));
    if (name == "fp8_delayed") {
      for (OperandSpec* s : {&r.x_row, &r.w_row, &r.dy_row, &r.w_col, &r.dy_col, &r.x_col}) s->delayed = true;
    }
  } else if (name == "fp8_block") {
    // DeepSeek-style: 1x128 activations and gradients, 128x128 weights, power-of-two FP32 scales, E4M3.
    set_all(r, spec(Scheme::kFP8Block128, formats::kE4M3), spec(Scheme::kFP8Block128, formats::kE4M3));
    r.w_row = r.w_col = spec(Scheme::kFP8Block128x128, formats::kE4M3);
  } else if (name == "mxfp8") {
    set_all(r, spec(Scheme::kMXFP8, formats::kE4M3), spec(Scheme::kMXFP8, formats::kE4M3));
  } else if (name == "nvfp4") {
    // TE NVFP4BlockScaling: 1-D inputs, 2-D weights, RHT on the wgrad operands, SR on gradients.
    r.x_row = spec(Scheme::kNVFP4, formats::kE2M1);
    r.x_col = spec(Scheme::kNVFP4, formats::kE2M1, Rounding::kNearestEven, true);
    r.w_row = r.w_col = spec(Scheme::kNVFP4_2D, formats::kE2M1);
    r.dy_row = spec(Scheme::kNVFP4, formats::kE2M1, Rounding::kStochastic);
    r.dy_col = spec(Scheme::kNVFP4, formats::kE2M1, Rounding::kStochastic, true);
  } else if (name == "mxfp4") {
    set_all(r, spec(Scheme::kMXFP4, formats::kE2M1), spec(Scheme::kMXFP4, formats::kE2M1, Rounding::kStochastic));
  } else if (name == "mxfp4_quartet") {
    // Quartet: QuEST forward (Hadamard-32, sigma scale, clip mask for the straight-through estimator);
    // backward: random-sign Hadamard-32 along each GEMM's inner dimension, absmax MXFP4, stochastic rounding.
    set_all(r, spec(Scheme::kMXFP4, formats::kE2M1, Rounding::kStochastic),
            spec(Scheme::kMXFP4, formats::kE2M1, Rounding::kStochastic));
    r.x_row = r.w_row = spec(Scheme::kMXFP4Quest, formats::kE2M1);
    r.backward_hadamard = true;
  } else if (name.rfind("exmy:", 0) == 0) {
    const precision::Format f = precision::parse_format(name.substr(5));
    if (f.bits() > 8)
      throw InvalidArgument("recipe '" + name + "': research formats for GEMM operands must have at most 8 bits");
    OperandSpec s = spec(Scheme::kMXFP8, f);
    set_all(r, s, s);
    r.dy_row.options.rounding = r.dy_col.options.rounding = Rounding::kStochastic;
  } else {
    std::string valid;
    for (const auto& n : recipe_preset_names()) valid += (valid.empty() ? "" : ", ") + n;
    throw InvalidArgument("unknown recipe '" + name + "'; valid: " + valid + ", or exmy:<format> (e.g. exmy:e3m2)");
  }
  r.compress_activations = name != "bf16";
  r.validate();
  return r;
}

}  // namespace nibble::core
