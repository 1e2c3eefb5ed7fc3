#include "core/linear_operands.h"

#include "core/nan_check.h"
#include "precision/error.h"

namespace nibble::core {

precision::QuantizeOptions operand_options(const OperandSpec& spec, bool rowwise, bool columnwise, LinearState& s,
                                           precision::DelayedScaling* ds, const std::string& name) {
  precision::QuantizeOptions o = spec.options;
  if (spec.delayed) {
    if (!ds) throw Error(name + ": a delayed-scaling operand has no DelayedScaling state in its LinearState");
    o.use_fixed_scale = true;
    o.fixed_scale = ds->scale();
  }
  o.rowwise = rowwise;
  o.columnwise = columnwise;
  o.seed = s.seed;
  if (o.rounding == precision::Rounding::kStochastic || o.rht) o.offset = s.sr_counter++;
  return o;
}

bool same_quantization(const OperandSpec& a, const OperandSpec& b) {
  const auto &x = a.options, &y = b.options;
  return a.quantized == b.quantized && a.delayed == b.delayed && x.scheme == y.scheme && x.element == y.element &&
         x.rounding == y.rounding && x.rht == y.rht && x.rht_seed == y.rht_seed && x.pow2_scale == y.pow2_scale &&
         x.amax_epsilon == y.amax_epsilon && x.mx_rule == y.mx_rule;
}

void check_no_nan(const torch::Tensor& t, const std::string& what) {
  if (contains_nan(t)) throw InvalidArgument(what + " contains NaN");
}

void capture_copies(LinearState& s, const QuantizedCopies& c, const char* row_role, const char* col_role) {
  if (!s.capture) return;
  if (c.row) s.captured[row_role] = c.row;
  if (c.col) s.captured[col_role] = c.col;
}

void record_operand_stats(LinearState& s, const OperandSpec& spec, const torch::Tensor& source,
                          const QuantizedTensor& q) {
  if (!s.collect_stats) return;
  const Recipe& r = s.recipe;
  const std::pair<const OperandSpec*, const char*> roles[] = {{&r.x_row, "x_row"},   {&r.x_col, "x_col"},
                                                              {&r.w_row, "w_row"},   {&r.w_col, "w_col"},
                                                              {&r.dy_row, "dy_row"}, {&r.dy_col, "dy_col"}};
  const char* role = nullptr;
  for (const auto& [candidate, name] : roles)
    if (candidate == &spec) role = name;
  if (!role) throw Error(s.name + ": quantization statistics for an operand spec that is not this layer's recipe's");
  const std::string role_name(role), operand = role_name.substr(0, role_name.find('_'));
  const bool both = q.rowwise && q.columnwise;
  if (q.rowwise)
    s.stats[both ? operand + "_row" : role_name].add(measure_copy(source, *q.rowwise, q.options, false));
  if (q.columnwise)
    s.stats[both ? operand + "_col" : role_name].add(measure_copy(source, *q.columnwise, q.options, true));
}

void refresh_weight_cache(const torch::Tensor& weight, LinearState& s, const QuantizeWeight& quantize) {
  const Recipe& r = s.recipe;
  if (!r.w_row.quantized && (!r.w_col.quantized || r.backward_hadamard)) return;
  const int64_t version = weight._version();
  if (s.cache_ptr == weight.data_ptr() && s.cache_version == version && (s.w_row || s.w_col)) return;
  const QuantizedCopies wq = quantize(weight.contiguous(), &r.w_row, r.backward_hadamard ? nullptr : &r.w_col);
  capture_copies(s, wq, "w_row", "w_col");
  s.w_row = wq.row;
  s.w_col = wq.col;
  s.cache_ptr = weight.data_ptr();
  s.cache_version = version;
  ++s.weight_quantizations;
}

}  // namespace nibble::core
