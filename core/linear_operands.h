#pragma once
// What both Linear implementations do the same way around their GEMMs -- core/linear.cpp (single rank) and
// parallel/nn/parallel_linear.cpp (tensor parallel, through parallel/nn/group_quantize.h): the options an
// operand is quantized with, the NaN check of an unquantized operand, the quantized-weight cache and the
// capture of operands for tests. The tests compare the two Linears bit for bit, so each is one implementation.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>

#include "core/linear.h"
#include "core/quantized_tensor.h"
#include "core/recipe.h"
#include "precision/delayed_scaling.h"
#include "precision/quantize.h"

namespace nibble::core {

// A tensor's quantized copies for the rowwise and columnwise roles (one object when one call made both).
struct QuantizedCopies {
  std::shared_ptr<QuantizedTensor> row, col;
};

// The options a Linear quantizes an operand with: the spec's, for the requested copies, keyed by the layer's
// seed and, for stochastic rounding or RHT, by the next value of its counter (so every quantization of a
// gradient draws fresh bits and a run is reproducible from its seed). A delayed-scaling spec uses ds's scale;
// throws Error naming `name` when it has none.
precision::QuantizeOptions operand_options(const OperandSpec& spec, bool rowwise, bool columnwise, LinearState& s,
                                           precision::DelayedScaling* ds, const std::string& name);

// Whether two specs quantize alike, so one call can make both copies.
bool same_quantization(const OperandSpec& a, const OperandSpec& b);

// Throws InvalidArgument "<what> contains NaN". For operands a recipe leaves unquantized (the quantizers check
// their own inputs), so a NaN fails in the layer that met it, with its name, not later in the loss.
void check_no_nan(const torch::Tensor& t, const std::string& what);

// When the state captures (tests, debugging), keeps the copies under their role names (x_row, w_col, ...).
void capture_copies(LinearState& s, const QuantizedCopies& c, const char* row_role, const char* col_role);

// When the state collects statistics, measures the copies of `q` (made from `source` under `spec`, one of the
// state's recipe's operand specs) and adds them under their role names: a one-pass pair as <operand>_row and
// <operand>_col, a single copy under the spec's role (Quartet's rotated rowwise copy of W for dgrad is w_col).
void record_operand_stats(LinearState& s, const OperandSpec& spec, const torch::Tensor& source,
                          const QuantizedTensor& q);

// Makes the weight's copies for `row_spec` and `col_spec` (col_spec may be null).
using QuantizeWeight = std::function<QuantizedCopies(const torch::Tensor& weight, const OperandSpec* row_spec,
                                                     const OperandSpec* col_spec)>;

// Keeps s.w_row / s.w_col current: calls `quantize` only when the weight's storage or version changed since the
// last call (the optimizer wrote it), so micro-batches of one step share one quantization. Under the recipe's
// backward_hadamard the dgrad copy of W is rotated afresh in every backward: nothing is cached for it.
void refresh_weight_cache(const torch::Tensor& weight, LinearState& s, const QuantizeWeight& quantize);

}  // namespace nibble::core
