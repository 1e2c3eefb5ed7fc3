#include "core/linear.h"

#include <ATen/Parallel.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <cmath>

#if NIBBLE_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "core/cuda/hadamard32_groups.h"
#endif

#include "core/gemm.h"
#include "core/cpu/hadamard32_lanes.h"
#include "core/linear_backward_base.h"
#include "core/linear_operands.h"
#include "core/quartet_rotation.h"
#include "core/quest_mask.h"
#include "core/saved_for_backward_meter.h"
#include "precision/error.h"

namespace nibble::core {
namespace {

using torch::autograd::variable_list;

std::shared_ptr<QuantizedTensor> quantize_one(const torch::Tensor& t2d, const OperandSpec& spec, bool rowwise,
                                              bool columnwise, const std::string& name, LinearState& state,
                                              precision::DelayedScaling* ds) {
  const precision::QuantizeOptions o = operand_options(spec, rowwise, columnwise, state, ds, name);
  auto q = std::make_shared<QuantizedTensor>(quantize(t2d, o, name));
  if (spec.delayed) ds->record(q->input_amax);
  record_operand_stats(state, spec, t2d, *q);
  return q;
}

QuantizedCopies quantize_copies(const torch::Tensor& t2d, const OperandSpec* row_spec, const OperandSpec* col_spec,
                                const std::string& name, LinearState& state, precision::DelayedScaling* ds) {
  QuantizedCopies c;
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
QuantizedCopies quantize_for(const torch::Tensor& t2d, const OperandSpec* row_spec, const OperandSpec* col_spec,
                             const std::string& name, LinearState& state, precision::DelayedScaling* ds,
                             const char* row_role, const char* col_role) {
  QuantizedCopies c = quantize_copies(t2d, row_spec, col_spec, name, state, ds);
  capture_copies(state, c, row_role, col_role);
  return c;
}

struct LinearBackward : public LinearBackwardBase {  // what it saves: core/linear_backward_base.h
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
    if (!r.dy_row.quantized || !r.dy_col.quantized) check_no_nan(dy2d, state->name + ": the output gradient");
    if (r.backward_hadamard) {
      rotated_backward(dy2d, need_dx, need_dw, out);
    } else {
      const QuantizedCopies dyq =
          quantize_for(dy2d, need_dx ? &r.dy_row : nullptr, need_dw ? &r.dy_col : nullptr, state->name + ".grad_output",
                       *state, state->ds_dy.get(), "dy_row", "dy_col");
      if (need_dx) {
        const GemmOperand a = r.dy_row.quantized ? GemmOperand::rowwise(*dyq.row) : GemmOperand::high_precision(dy2d);
        // (The transposes stay views: the GEMM reads a column-major operand tile by tile, core/gemm.h.)
        const GemmOperand b = r.w_col.quantized ? GemmOperand::columnwise(*w_col)
                                                : GemmOperand::high_precision(weight.contiguous().t());
        out[0] = dgrad(a, b);
      }
      if (need_dw) {
        const GemmOperand a = r.dy_col.quantized ? GemmOperand::columnwise(*dyq.col)
                                                 : GemmOperand::high_precision(dy2d.t());
        const GemmOperand b = r.x_col.quantized ? GemmOperand::columnwise(*x_col)
                                                : GemmOperand::high_precision(x_dense.contiguous().t());
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
    go.fp64_accumulation = state->recipe.reproducible_sums;
    // Under FP64 sums the QuEST mask's Hadamards run before the one rounding, as a tensor-parallel split has to
    // (it masks each rank's FP64 partial sum), so both round the same number.
    if (x_mask.defined() && go.fp64_accumulation) go.out_dtype = torch::kFloat64;
    torch::Tensor dx = gemm(a, b, go);
    if (x_mask.defined()) dx = through_quest_mask(dx, x_mask);
    return dx.to(x_dtype).reshape(x_shape);
  }

  torch::Tensor wgrad(const GemmOperand& a, const GemmOperand& b) {
    GemmOptions go;
    go.name = state->name + " wgrad";
    go.fp64_accumulation = state->recipe.reproducible_sums;
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

}  // namespace

uint64_t layer_seed(const std::string& name, uint64_t run_seed) {
  uint64_t h = 1469598103934665603ull ^ (run_seed * 0x9E3779B97F4A7C15ull);
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  return h;
}

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
  make_delayed_states();
}

void LinearState::set_recipe(Recipe r) {
  r.validate();
  recipe = std::move(r);
  make_delayed_states();
  cache_ptr = nullptr;
  cache_version = -1;
  w_row.reset();
  w_col.reset();
}

LinearState::Snapshot LinearState::snapshot() const {
  auto copy = [](const std::unique_ptr<precision::DelayedScaling>& ds) {
    return ds ? std::optional<precision::DelayedScaling>(*ds) : std::nullopt;
  };
  return {recipe, copy(ds_x), copy(ds_w),           copy(ds_dy), cache_ptr,     cache_version,
          w_row,  w_col,      weight_quantizations, sr_counter,  collect_stats, stats};
}

void LinearState::restore(const Snapshot& saved) {
  auto copy = [](const std::optional<precision::DelayedScaling>& ds) {
    return ds ? std::make_unique<precision::DelayedScaling>(*ds) : nullptr;
  };
  recipe = saved.recipe;
  ds_x = copy(saved.ds_x);
  ds_w = copy(saved.ds_w);
  ds_dy = copy(saved.ds_dy);
  cache_ptr = saved.cache_ptr;
  cache_version = saved.cache_version;
  w_row = saved.w_row;
  w_col = saved.w_col;
  weight_quantizations = saved.weight_quantizations;
  sr_counter = saved.sr_counter;
  collect_stats = saved.collect_stats;
  stats = saved.stats;
}

void LinearState::make_delayed_states() {
  ds_x.reset();
  ds_w.reset();
  ds_dy.reset();
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

namespace {

template <typename T>
torch::Tensor hadamard32_groups(const torch::Tensor& in) {
  torch::Tensor out = torch::empty_like(in);
#if NIBBLE_WITH_CUDA
  if (in.is_cuda()) {
    const c10::cuda::CUDAGuard guard(in.device());
    cuda::hadamard32_groups(in.data_ptr<T>(), out.data_ptr<T>(), in.numel() / 32,
                            c10::cuda::getCurrentCUDAStream(in.device().index()).stream());
    return out;
  }
#endif
  const T* src = in.data_ptr<T>();
  T* dst = out.data_ptr<T>();
  at::parallel_for(0, in.numel() / 32, 2048, [&](int64_t begin, int64_t end) {
    cpu::hadamard32_groups_lanes(src + begin * 32, dst + begin * 32, end - begin);  // hadamard32_butterfly's bits
  });
  return out;
}

}  // namespace

torch::Tensor hadamard32_last_dim(const torch::Tensor& x) {
  const auto shape = x.sizes().vec();
  if (shape.empty() || shape.back() % 32 != 0)
    throw InvalidArgument("hadamard32: last dimension must be a multiple of 32, got " +
                          (shape.empty() ? std::string("a 0-d tensor") : std::to_string(shape.back())));
  // A fast Walsh-Hadamard transform per group of 32, summed in FP64 and rounded once. Not a matmul: a BLAS
  // kernel's FP32 summation order depends on the matrix's row count, so a tensor-parallel shard (other row
  // counts) was rotated with other bits than the whole tensor. Here every group's result depends on its 32
  // inputs only. FP64 input stays FP64 (an unrounded tensor-parallel partial sum under reproducible sums, whose
  // QuEST mask is applied before the group adds it); anything else is computed from and returned as FP32.
  if (x.scalar_type() == torch::kFloat64) return hadamard32_groups<double>(x.contiguous()).reshape(shape);
  return hadamard32_groups<float>(x.to(torch::kFloat32).contiguous()).reshape(shape);
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
    if (!r.x_row.quantized) check_no_nan(x2d, who + ": the input");
    if (!r.w_row.quantized) check_no_nan(weight, who + ": the weight");
    refresh_weight_cache(weight, s, [&](const torch::Tensor& w, const OperandSpec* row, const OperandSpec* col) {
      return quantize_copies(w, row, col, s.name + ".weight", s, s.ds_w.get());
    });
    const bool rotated = r.backward_hadamard;
    const QuantizedCopies xq = quantize_for(x2d, &r.x_row, need_wgrad && !rotated ? &r.x_col : nullptr, who + ".input",
                                            s, s.ds_x.get(), "x_row", "x_col");
    const GemmOperand a = r.x_row.quantized ? GemmOperand::rowwise(*xq.row) : GemmOperand::high_precision(x2d);
    const GemmOperand b = r.w_row.quantized ? GemmOperand::rowwise(*s.w_row) : GemmOperand::high_precision(weight);
    GemmOptions go;
    go.name = who + " fprop";
    go.fp64_accumulation = r.reproducible_sums;
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

}  // namespace nibble::core
