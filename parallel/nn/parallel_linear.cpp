#include "parallel/nn/parallel_linear.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "core/gemm.h"
#include "core/saved_bytes.h"
#include "parallel/nn/group_quantize.h"
#include "parallel/nn/torch_collectives.h"
#include "precision/error.h"

namespace nibble::parallel {
namespace {

using nn::GemmOperand;
using nn::QuantizedTensor;
using torch::autograd::variable_list;

GemmOperand rowwise_operand(const std::shared_ptr<QuantizedTensor>& q) {
  return GemmOperand::quantized(*q->rowwise, q->options);
}
GemmOperand columnwise_operand(const std::shared_ptr<QuantizedTensor>& q) {
  return GemmOperand::quantized(*q->columnwise, q->options);
}

void check_finite(const torch::Tensor& t, const std::string& what) {
  if (torch::isnan(t).any().item<bool>()) throw InvalidArgument(what + " contains NaN");
}

void remember(nn::LinearState& s, const QuantizedCopies& c, const char* row_role, const char* col_role) {
  if (!s.capture) return;
  if (c.row) s.captured[row_role] = c.row;
  if (c.col) s.captured[col_role] = c.col;
}

struct ParallelLinearBackward : public torch::autograd::Node {
  std::shared_ptr<nn::LinearState> state;
  Communicator* comm = nullptr;
  ParallelLinearOptions options;
  std::shared_ptr<QuantizedTensor> x_col, w_col;
  torch::Tensor x_dense, weight;
  std::vector<int64_t> full_x_shape;  // x's shape after the gather (= x's shape without one)
  torch::ScalarType x_dtype = torch::kFloat32, w_dtype = torch::kFloat32;
  bool has_bias = false;

  std::string name() const override { return "nibble::ParallelLinearBackward(" + state->name + ")"; }

  void release_variables() override {
    x_col.reset();
    w_col.reset();
    x_dense.reset();
    weight.reset();
  }

  variable_list apply(variable_list&& grads) override {
    torch::NoGradGuard no_grad;
    const nn::Recipe& r = state->recipe;
    variable_list out(3);
    const torch::Tensor& dy = grads[0];
    if (!dy.defined()) return out;
    const torch::Tensor dy2d = dy.reshape({-1, dy.size(-1)}).contiguous();
    const bool need_dx = task_should_compute_output(0), need_dw = task_should_compute_output(1);
    if (!r.dy_row.quantized || !r.dy_col.quantized) check_finite(dy2d, state->name + ": the output gradient");
    const QuantizedCopies dyq =
        quantize_with_group_amax(dy2d, need_dx ? &r.dy_row : nullptr, need_dw ? &r.dy_col : nullptr,
                                 options.reduce_dy_amax ? comm : nullptr, *state, state->name + ".grad_output",
                                 state->ds_dy.get());
    remember(*state, dyq, "dy_row", "dy_col");
    if (need_dx) {
      const GemmOperand a = r.dy_row.quantized ? rowwise_operand(dyq.row) : GemmOperand::high_precision(dy2d);
      const GemmOperand b =
          r.w_col.quantized ? columnwise_operand(w_col) : GemmOperand::high_precision(weight.t().contiguous());
      nn::GemmOptions go;
      go.name = state->name + " dgrad";
      torch::Tensor dx = nn::gemm(a, b, go).to(x_dtype).reshape(full_x_shape);
      // Sequence parallel: every rank holds a partial dgrad of all tokens; each keeps the sum of its slice.
      if (options.gather_input) dx = reduce_scatter_dim0(dx, *comm, state->name + " dgrad reduce-scatter");
      out[0] = dx;
    }
    if (need_dw) {
      const GemmOperand a =
          r.dy_col.quantized ? columnwise_operand(dyq.col) : GemmOperand::high_precision(dy2d.t().contiguous());
      const GemmOperand b =
          r.x_col.quantized ? columnwise_operand(x_col) : GemmOperand::high_precision(x_dense.t().contiguous());
      nn::GemmOptions go;
      go.name = state->name + " wgrad";
      out[1] = nn::gemm(a, b, go).to(w_dtype);
    }
    if (has_bias && task_should_compute_output(2)) out[2] = dy2d.to(torch::kFloat32).sum(0).to(w_dtype);
    return out;
  }
};

// The weight shard's quantized copies, cached in the LinearState like core/linear.cpp's cache, with the
// group amax: every rank refreshes at the same forward (the optimizer writes all shards in the same step).
void refresh_weight_cache(const torch::Tensor& weight, nn::LinearState& s, Communicator& comm) {
  const nn::Recipe& r = s.recipe;
  if (!r.w_row.quantized && !r.w_col.quantized) return;
  const int64_t version = weight._version();
  if (s.cache_ptr == weight.data_ptr() && s.cache_version == version && (s.w_row || s.w_col)) return;
  const QuantizedCopies wq =
      quantize_with_group_amax(weight.contiguous(), &r.w_row, &r.w_col, &comm, s, s.name + ".weight", s.ds_w.get());
  remember(s, wq, "w_row", "w_col");
  s.w_row = wq.row;
  s.w_col = wq.col;
  s.cache_ptr = weight.data_ptr();
  s.cache_version = version;
  ++s.weight_quantizations;
}

}  // namespace

void check_tensor_parallel_recipe(const nn::Recipe& r, const std::string& who) {
  if (r.backward_hadamard)
    throw InvalidArgument(who + ": recipe '" + r.name +
                          "' rotates its backward operands (Quartet), which the tensor-parallel Linear does not "
                          "support yet; use bf16, fp8_current, fp8_block, mxfp8, nvfp4 or mxfp4");
  for (const nn::OperandSpec* s : {&r.x_row, &r.w_row, &r.dy_row, &r.w_col, &r.dy_col, &r.x_col})
    if (s->quantized && s->options.scheme == precision::Scheme::kMXFP4Quest)
      throw InvalidArgument(who + ": recipe '" + r.name + "' uses QuEST (mxfp4_quest), which the tensor-parallel "
                            "Linear does not support yet");
}

torch::Tensor parallel_linear(const torch::Tensor& x, const torch::Tensor& weight,
                              const std::optional<torch::Tensor>& bias, const std::shared_ptr<nn::LinearState>& state,
                              Communicator& comm, const ParallelLinearOptions& options) {
  nn::LinearState& s = *state;
  const std::string& who = s.name;
  const nn::Recipe& r = s.recipe;
  check_tensor_parallel_recipe(r, who);
  if (weight.dim() != 2) throw InvalidArgument(who + ": weight shard must be 2-D (out_features, in_features)");
  const int64_t n = weight.size(0), k = weight.size(1);
  if (x.dim() < 2 && options.gather_input)
    throw InvalidArgument(who + ": a sequence-parallel input needs a token dim and a feature dim, got shape " +
                          c10::str(x.sizes()));
  if (x.dim() < 1 || x.size(-1) != k)
    throw InvalidArgument(who + ": input has shape " + c10::str(x.sizes()) +
                          " but the weight shard takes in_features = " + std::to_string(k) + " in its last dimension");
  for (const auto& [t, what] : {std::pair{x, "input"}, std::pair{weight, "weight"}})
    if (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kBFloat16)
      throw InvalidArgument(who + ": " + what + " dtype " + std::string(c10::toString(t.scalar_type())) +
                            " is not supported; use float32 or bfloat16");
  if (bias && (bias->dim() != 1 || bias->size(0) != n))
    throw InvalidArgument(who + ": bias must have shape (" + std::to_string(n) + "), got " + c10::str(bias->sizes()));
  const bool need_grad =
      torch::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() || (bias && bias->requires_grad()));
  const bool need_wgrad = need_grad && weight.requires_grad();
  const bool gather = options.gather_input && comm.size() > 1;

  auto full_shape = x.sizes().vec();
  if (gather) full_shape[0] *= comm.size();
  torch::Tensor y;
  auto node = need_grad ? c10::make_intrusive<ParallelLinearBackward>()
                        : c10::intrusive_ptr<ParallelLinearBackward>();
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor x2d = x.reshape({-1, k}).contiguous();
    if (!r.x_row.quantized) check_finite(x2d, who + ": the input");
    if (!r.w_row.quantized) check_finite(weight, who + ": the weight");
    refresh_weight_cache(weight, s, comm);
    // Quantize the local rows with the group's per-tensor factors, then gather the quantized copies.
    QuantizedCopies xq = quantize_with_group_amax(x2d, &r.x_row, need_wgrad ? &r.x_col : nullptr,
                                                  options.reduce_x_amax || gather ? &comm : nullptr, s, who + ".input",
                                                  s.ds_x.get());
    if (gather) xq = all_gather_rows(xq, comm, who + ".input");
    remember(s, xq, "x_row", "x_col");
    // High-precision operands (bf16 recipe, or a recipe leaving x unquantized) are gathered as they are.
    const bool dense_needed = !r.x_row.quantized || (need_wgrad && !r.x_col.quantized);
    torch::Tensor x_full;
    if (dense_needed) x_full = gather ? all_gather_dim0(x2d, comm, who + ".input") : x2d;
    const GemmOperand a = r.x_row.quantized ? rowwise_operand(xq.row) : GemmOperand::high_precision(x_full);
    const GemmOperand b = r.w_row.quantized ? rowwise_operand(s.w_row) : GemmOperand::high_precision(weight);
    nn::GemmOptions go;
    go.name = who + " fprop";
    if (bias) go.bias = bias->detach();
    go.out_dtype = x.scalar_type();
    auto out_shape = full_shape;
    out_shape.back() = n;
    y = nn::gemm(a, b, go).reshape(out_shape);

    if (need_grad) {
      int64_t saved = 0;
      node->state = state;
      node->comm = &comm;
      node->options = options;
      node->options.gather_input = gather;
      node->full_x_shape = full_shape;
      node->x_dtype = x.scalar_type();
      node->w_dtype = weight.scalar_type();
      node->has_bias = bias.has_value();
      if (need_wgrad) {
        if (r.x_col.quantized) {
          node->x_col = xq.col;
          saved += xq.col->columnwise->bytes();
        } else {
          node->x_dense = x_full.to(torch::kBFloat16);
          saved += node->x_dense.numel() * 2;
        }
      }
      if (r.w_col.quantized) {
        node->w_col = s.w_col;
      } else {
        node->weight = weight.detach();
      }
      nn::add_saved_bytes(saved);
    }
  }
  if (need_grad) {
    node->set_next_edges(torch::autograd::collect_next_edges(x, weight, bias ? *bias : torch::Tensor()));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace nibble::parallel
