#include "core/linear.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <cmath>

#include "core/gemm.h"
#include "core/linear_saved.h"
#include "core/quartet_pieces.h"
#include "core/saved_bytes.h"
#include "precision/error.h"

namespace nibble::nn {
namespace {

using torch::autograd::variable_list;

bool same_quantization(const OperandSpec& a, const OperandSpec& b) {
  const auto &x = a.options, &y = b.options;
  return a.quantized == b.quantized && a.delayed == b.delayed && x.scheme == y.scheme && x.element == y.element &&
         x.rounding == y.rounding && x.rht == y.rht && x.rht_seed == y.rht_seed && x.pow2_scale == y.pow2_scale &&
         x.amax_epsilon == y.amax_epsilon && x.mx_rule == y.mx_rule;
}

// A tensor's quantized copies for one or two operand roles: `row` holds the rowwise copy, `col` the
// columnwise one (the same object when one quantize call produced both).
struct Copies {
  std::shared_ptr<QuantizedTensor> row, col;
};

std::shared_ptr<QuantizedTensor> quantize_one(const torch::Tensor& t2d, const OperandSpec& spec, bool rowwise,
                                              bool columnwise, const std::string& name, LinearState& state,
                                              precision::DelayedScaling* ds) {
  precision::QuantizeOptions o = spec.options;
  o.rowwise = rowwise;
  o.columnwise = columnwise;
  o.seed = state.seed;
  if (o.rounding == precision::Rounding::kStochastic || o.rht) o.offset = state.sr_counter++;
  if (spec.delayed) {
    o.use_fixed_scale = true;
    o.fixed_scale = ds->scale();
  }
  auto q = std::make_shared<QuantizedTensor>(quantize(t2d, o, name));
  if (spec.delayed) ds->record(q->input_amax);
  return q;
}

Copies quantize_copies(const torch::Tensor& t2d, const OperandSpec* row_spec, const OperandSpec* col_spec,
                       const std::string& name, LinearState& state, precision::DelayedScaling* ds) {
  Copies c;
  const bool row = row_spec && row_spec->quantized, col = col_spec && col_spec->quantized;
  if (row && col && same_quantization(*row_spec, *col_spec)) {
    c.row = c.col = quantize_one(t2d, *row_spec, true, true, name, state, ds);  // one pass, both copies
    return c;
  }
  if (row) c.row = quantize_one(t2d, *row_spec, true, false, name, state, ds);
  if (col) c.col = quantize_one(t2d, *col_spec, false, true, name, state, ds);
  return c;
}

// Quantizes for the given roles and, when the state captures, remembers the copies under the role names.
Copies quantize_for(const torch::Tensor& t2d, const OperandSpec* row_spec, const OperandSpec* col_spec,
                    const std::string& name, LinearState& state, precision::DelayedScaling* ds, const char* row_role,
                    const char* col_role) {
  Copies c = quantize_copies(t2d, row_spec, col_spec, name, state, ds);
  if (state.capture) {
    if (c.row) state.captured[row_role] = c.row;
    if (c.col) state.captured[col_role] = c.col;
  }
  return c;
}

void check_finite(const torch::Tensor& t, const std::string& what) {
  if (torch::isnan(t).any().item<bool>()) throw InvalidArgument(what + " contains NaN");
}

struct LinearBackward : public LinearBackwardBase {  // what it saves: core/linear_saved.h
  std::vector<int64_t> x_shape;

  std::string name() const override { return "nibble::LinearBackward(" + state->name + ")"; }

  variable_list apply(variable_list&& grads) override {
    torch::NoGradGuard no_grad;
    const Recipe& r = state->recipe;
    const torch::Tensor& dy = grads[0];
    variable_list out(3);  // x, weight, bias (undefined when there is none)
    if (!dy.defined()) return out;
    BackwardCounters counters(*state, backward_counter);
    const int64_t n = dy.size(-1);
    const torch::Tensor dy2d = dy.reshape({-1, n}).contiguous();
    const bool need_dx = task_should_compute_output(0), need_dw = task_should_compute_output(1);
    if (!r.dy_row.quantized || !r.dy_col.quantized) check_finite(dy2d, state->name + ": the output gradient");
    if (r.backward_hadamard) {
      rotated_backward(dy2d, need_dx, need_dw, out);
    } else {
      const Copies dyq = quantize_for(dy2d, need_dx ? &r.dy_row : nullptr, need_dw ? &r.dy_col : nullptr,
                                      state->name + ".grad_output", *state, state->ds_dy.get(), "dy_row", "dy_col");
      if (need_dx) {
        const GemmOperand a = r.dy_row.quantized ? GemmOperand::rowwise(*dyq.row) : GemmOperand::high_precision(dy2d);
        const GemmOperand b = r.w_col.quantized ? GemmOperand::columnwise(*w_col)
                                                : GemmOperand::high_precision(weight.t().contiguous());
        out[0] = dgrad(a, b);
      }
      if (need_dw) {
        const GemmOperand a = r.dy_col.quantized ? GemmOperand::columnwise(*dyq.col)
                                                 : GemmOperand::high_precision(dy2d.t().contiguous());
        const GemmOperand b = r.x_col.quantized ? GemmOperand::columnwise(*x_col)
                                                : GemmOperand::high_precision(x_dense.t().contiguous());
        out[1] = wgrad(a, b);
      }
    }
    if (has_bias && task_should_compute_output(2)) out[2] = dy2d.to(torch::kFloat32).sum(0).to(w_dtype);
    counters.check();
    return out;
  }

  torch::Tensor dgrad(const GemmOperand& a, const GemmOperand& b) {
    GemmOptions go;
    go.name = state->name + " dgrad";
    // Under FP64 sums the QuEST mask's Hadamards run before the one rounding, as a tensor-parallel split has to
    // (it masks each rank's FP64 partial sum), so both round the same number.
    if (x_mask.defined() && fp64_accumulation()) go.out_dtype = torch::kFloat64;
    torch::Tensor dx = gemm(a, b, go);
    if (x_mask.defined()) dx = through_quest_mask(dx, x_mask);
    return dx.to(x_dtype).reshape(x_shape);
  }

  torch::Tensor wgrad(const GemmOperand& a, const GemmOperand& b) {
    GemmOptions go;
    go.name = state->name + " wgrad";
    torch::Tensor dw = gemm(a, b, go);
    if (w_mask.defined()) dw = through_quest_mask(dw, w_mask);
    return dw.to(w_dtype);
  }

  // Quartet: dgrad dx = (dy·Q)(Wᵀ·Q)ᵀ with Q drawn now along N; wgrad dW = (dyᵀ·Q')(xᵀ·Q')ᵀ with Q' the
  // rotation along the tokens that x_col was quantized in at forward time. Every operand is a rowwise copy
  // (blocks along the rotated inner dimension), captured under its role name.
  void rotated_backward(const torch::Tensor& dy2d, bool need_dx, bool need_dw, variable_list& out) {
    LinearState& s = *state;
    const Recipe& r = s.recipe;
    auto quantized_rows = [&](const torch::Tensor& t, const OperandSpec& spec, const char* role) {
      auto q = quantize_one(t, spec, true, false, s.name + "." + role, s, nullptr);
      if (s.capture) s.captured[role] = q;
      return q;
    };
    if (need_dx) {
      const InnerRotation rot = next_rotation(dy2d.size(1), s);
      const auto dyq = quantized_rows(rotate_inner(dy2d, rot), r.dy_row, "dy_row");
      const auto wq = quantized_rows(rotate_inner(weight.t(), rot), r.w_col, "w_col");
      if (s.capture) s.captured_rotations["dgrad"] = rotation_signs(rot);
      out[0] = dgrad(GemmOperand::rowwise(*dyq), GemmOperand::rowwise(*wq));
    }
    if (need_dw) {
      const auto dyq = quantized_rows(rotate_inner(dy2d.t(), wgrad_rotation), r.dy_col, "dy_col");
      if (s.capture) s.captured_rotations["wgrad"] = rotation_signs(wgrad_rotation);
      out[1] = wgrad(GemmOperand::rowwise(*dyq), GemmOperand::rowwise(*x_col));
    }
  }
};

void refresh_weight_cache(const torch::Tensor& weight, LinearState& s) {
  const Recipe& r = s.recipe;
  if (!r.w_row.quantized && (!r.w_col.quantized || r.backward_hadamard)) return;
  const int64_t version = weight._version();
  if (s.cache_ptr == weight.data_ptr() && s.cache_version == version && (s.w_row || s.w_col)) return;
  // Under backward_hadamard the dgrad copy of W is rotated afresh in every backward: nothing to cache for it.
  const OperandSpec* col = r.backward_hadamard ? nullptr : &r.w_col;
  const Copies wq =
      quantize_for(weight.contiguous(), &r.w_row, col, s.name + ".weight", s, s.ds_w.get(), "w_row", "w_col");
  s.w_row = wq.row;
  s.w_col = wq.col;
  s.cache_ptr = weight.data_ptr();
  s.cache_version = version;
  ++s.weight_quantizations;
}

}  // namespace

uint64_t reserve_backward_counters(LinearState& s) {
  const uint64_t first = s.sr_counter;
  s.sr_counter += kBackwardCounters;
  return first;
}

BackwardCounters::BackwardCounters(LinearState& s, uint64_t first) : s_(s), first_(first), resume_(s.sr_counter) {
  s_.sr_counter = first;
}

BackwardCounters::~BackwardCounters() { s_.sr_counter = resume_; }

void BackwardCounters::check() const {
  if (s_.sr_counter - first_ > kBackwardCounters)
    throw Error(s_.name + ": a backward drew " + std::to_string(s_.sr_counter - first_) +
                " stochastic-rounding counter values, more than the " + std::to_string(kBackwardCounters) +
                " its forward reserved (raise kBackwardCounters in core/linear.h)");
}

LinearState::LinearState(Recipe r, std::string n, uint64_t s) : recipe(std::move(r)), name(std::move(n)), seed(s) {
  recipe.validate();
  const bool fwd_delayed = recipe.x_row.delayed || recipe.x_col.delayed || recipe.w_row.delayed || recipe.w_col.delayed;
  auto make = [&](precision::Format f) {
    return std::make_unique<precision::DelayedScaling>(recipe.amax_history_len, recipe.amax_algo, recipe.margin, f);
  };
  if (fwd_delayed) {
    ds_x = make(recipe.x_row.options.element);
    ds_w = make(recipe.w_row.options.element);
  }
  if (recipe.dy_row.delayed || recipe.dy_col.delayed) ds_dy = make(recipe.dy_row.options.element);
}

void LinearState::end_step() {
  for (auto* ds : {ds_x.get(), ds_w.get(), ds_dy.get()})
    if (ds) ds->update();
  // The weight's delayed scale may have changed: requantize at the next forward.
  if (ds_w) cache_version = -1;
}

torch::Tensor hadamard32_last_dim(const torch::Tensor& x) {
  static const torch::Tensor h = [] {
    torch::Tensor m = torch::empty({32, 32}, torch::TensorOptions().dtype(torch::kFloat32));
    auto a = m.accessor<float, 2>();
    for (int i = 0; i < 32; ++i)
      for (int j = 0; j < 32; ++j) a[i][j] = (__builtin_popcount(i & j) % 2 ? -1.0f : 1.0f) / std::sqrt(32.0f);
    return m;
  }();
  const auto shape = x.sizes().vec();
  if (shape.back() % 32 != 0)
    throw InvalidArgument("hadamard32: last dimension must be a multiple of 32, got " + std::to_string(shape.back()));
  return torch::matmul(x.to(torch::kFloat32).reshape({-1, 32}), h).reshape(shape);
}

torch::Tensor linear_forward(const torch::Tensor& x, const torch::Tensor& weight,
                             const std::optional<torch::Tensor>& bias, const std::shared_ptr<LinearState>& state) {
  LinearState& s = *state;
  const std::string& who = s.name;
  if (weight.dim() != 2) throw InvalidArgument(who + ": weight must be 2-D (out_features, in_features)");
  const int64_t n = weight.size(0), k = weight.size(1);
  if (x.dim() < 1 || x.size(-1) != k)
    throw InvalidArgument(who + ": input has shape " + c10::str(x.sizes()) + " but the layer takes in_features = " +
                          std::to_string(k) + " in its last dimension");
  for (const auto& [t, what] : {std::pair{x, "input"}, std::pair{weight, "weight"}})
    if (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kBFloat16)
      throw InvalidArgument(who + ": " + what + " dtype " + std::string(c10::toString(t.scalar_type())) +
                            " is not supported; use float32 or bfloat16");
  if (bias && (bias->dim() != 1 || bias->size(0) != n))
    throw InvalidArgument(who + ": bias must have shape (" + std::to_string(n) + "), got " + c10::str(bias->sizes()));
  const Recipe& r = s.recipe;
  const bool grad_mode = torch::GradMode::is_enabled();
  const bool need_grad = grad_mode && (x.requires_grad() || weight.requires_grad() || (bias && bias->requires_grad()));
  const bool need_wgrad = need_grad && weight.requires_grad();

  torch::Tensor y;
  auto node = need_grad ? c10::make_intrusive<LinearBackward>() : c10::intrusive_ptr<LinearBackward>();
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor x2d = x.reshape({-1, k}).contiguous();
    if (!r.x_row.quantized) check_finite(x2d, who + ": the input");
    if (!r.w_row.quantized) check_finite(weight, who + ": the weight");
    refresh_weight_cache(weight, s);
    const bool rotated = r.backward_hadamard;
    const Copies xq = quantize_for(x2d, &r.x_row, need_wgrad && !rotated ? &r.x_col : nullptr, who + ".input", s,
                                   s.ds_x.get(), "x_row", "x_col");
    const GemmOperand a = r.x_row.quantized ? GemmOperand::rowwise(*xq.row) : GemmOperand::high_precision(x2d);
    const GemmOperand b = r.w_row.quantized ? GemmOperand::rowwise(*s.w_row) : GemmOperand::high_precision(weight);
    GemmOptions go;
    go.name = who + " fprop";
    if (bias) go.bias = bias->detach();
    go.out_dtype = x.scalar_type();
    auto out_shape = x.sizes().vec();
    out_shape.back() = n;
    y = gemm(a, b, go).reshape(out_shape);

    if (need_grad) {
      node->x_shape = x.sizes().vec();
      add_saved_bytes(node->save_for_backward(
          state, x2d, x.scalar_type(), xq.row, xq.col, weight, bias.has_value(), need_wgrad,
          [&](const torch::Tensor& rotated_xt) {
            return quantize_one(rotated_xt, r.x_col, true, false, who + ".input", s, nullptr);
          }));
    }
  }
  if (need_grad) {
    node->set_next_edges(torch::autograd::collect_next_edges(x, weight, bias ? *bias : torch::Tensor()));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace nibble::nn
