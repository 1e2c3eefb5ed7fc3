#include "parallel/nn/parallel_linear.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "core/gemm.h"
#include "core/linear_backward_base.h"
#include "core/quartet_rotation.h"
#include "core/quest_mask.h"
#include "core/saved_for_backward_meter.h"
#include "parallel/nn/group_quantize.h"
#include "parallel/nn/torch_collectives.h"
#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

using core::GemmOperand;
using torch::autograd::variable_list;

using core::capture_copies;
using core::check_no_nan;

bool is_quest(const core::OperandSpec& s) {
  return s.quantized && s.options.scheme == precision::Scheme::kMXFP4Quest;
}

// Which dimension of a tensor this rank holds a slice of (the rest of the tensor lives on the other ranks).
enum class Slice : uint8_t { kWhole, kRows, kCols };

// t2d's place in the tensor a single rank quantizes, for stochastic rounding (group_quantize.h).
precision::SrIndexMap place_of(const torch::Tensor& t2d, Slice slice, const Communicator& comm) {
  const int64_t rows = t2d.size(0), cols = t2d.size(1);
  if (slice == Slice::kRows) return row_slice_of(rows, cols, comm.rank(), comm.size());
  if (slice == Slice::kCols) return col_slice_of(rows, cols, comm.rank(), comm.size());
  return {};
}

// Quartet's rotation and QuEST's masks: core/quartet_rotation.h (one implementation for both Linears).
using core::InnerRotation;
using core::next_rotation;
using core::rotate_inner;
using core::rotation_signs;
using core::through_quest_mask;

struct ParallelLinearBackward : public core::LinearBackwardBase {  // what it saves: core/linear_backward_base.h
  Communicator* comm = nullptr;
  ParallelLinearOptions options;
  std::vector<int64_t> full_x_shape;  // x's shape after the gather (= x's shape without one)

  // dy [tokens, out_features] is a column slice under a column-parallel split.
  Slice dy_slice() const { return options.split == WeightSplit::kOutputFeatures ? Slice::kCols : Slice::kWhole; }

  std::string name() const override { return "nibble::ParallelLinearBackward(" + state->name + ")"; }

  // The sequence-parallel row Linear's choice for the output gradient: gather its quantized copies when every
  // copy the GEMMs read is quantized, the gather is exact (gathers_exactly) and it moves fewer bytes than the
  // gradient itself (MXFP8 needs both copies, 2.06 bytes an element: more than BF16). The inputs of the choice
  // (recipe, shapes, dtype, which gradients autograd wants) are the same on every rank, so ranks agree.
  bool quantized_dy_gather(const torch::Tensor& dy_local, const core::OperandSpec* row_spec,
                           const core::OperandSpec* col_spec) const {
    if (!row_spec && !col_spec) return false;
    for (const core::OperandSpec* s : {row_spec, col_spec})
      if (s && !s->quantized) return false;
    if (!gathers_exactly(row_spec, col_spec, dy_local.size(0), nullptr)) return false;
    return quantized_gather_bytes(row_spec, col_spec, dy_local.size(0), dy_local.size(1)) <
           dy_local.numel() * static_cast<int64_t>(dy_local.element_size());
  }

  variable_list apply(variable_list&& grads) override {
    torch::NoGradGuard no_grad;
    const core::Recipe& r = state->recipe;
    variable_list out(3);
    const torch::Tensor& dy = grads[0];
    if (!dy.defined()) return out;
    core::BackwardCounters counters(*state, backward_counter);
    const bool need_dx = task_should_compute_output(0), need_dw = task_should_compute_output(1);
    const core::OperandSpec* row_spec = need_dx ? &r.dy_row : nullptr;
    const core::OperandSpec* col_spec = need_dw ? &r.dy_col : nullptr;
    const std::string dy_name = state->name + ".grad_output";
    torch::Tensor dy2d = dy.reshape({-1, dy.size(-1)}).contiguous();  // all tokens' rows (after any gather)
    if (r.backward_hadamard) {
      // Quartet quantizes the rotated gradient (stochastically rounded): gather dy itself, rotate after.
      if (options.scatter_output) dy2d = all_gather_dim0(dy2d, *comm, dy_name);
      rotated_backward(dy2d, need_dx, need_dw, out);
    } else {
      QuantizedCopies dyq;
      if (options.scatter_output && quantized_dy_gather(dy2d, row_spec, col_spec)) {
        // Every rank quantizes its own tokens with the group's per-tensor factors (every rank must fail together
        // on a NaN: its peers are about to gather), then the codes and block scales are gathered.
        dyq = all_gather_rows(quantize_with_group_amax(dy2d, row_spec, col_spec, comm, *state, dy_name,
                                                       state->ds_dy.get(), /*fail_together=*/true,
                                                       place_of(dy2d, Slice::kRows, *comm)),
                              *comm, dy_name);
      } else {
        if (options.scatter_output) dy2d = all_gather_dim0(dy2d, *comm, dy_name);
        if (!r.dy_row.quantized || !r.dy_col.quantized) check_no_nan(dy2d, state->name + ": the output gradient");
        dyq = quantize_with_group_amax(dy2d, row_spec, col_spec, options.reduce_dy_amax ? comm : nullptr, *state,
                                       dy_name, state->ds_dy.get(), false, place_of(dy2d, dy_slice(), *comm));
      }
      capture_copies(*state, dyq, "dy_row", "dy_col");
      if (need_dx) {
        const GemmOperand a = r.dy_row.quantized ? GemmOperand::rowwise(*dyq.row) : GemmOperand::high_precision(dy2d);
        const GemmOperand b =
            r.w_col.quantized ? GemmOperand::columnwise(*w_col) : GemmOperand::high_precision(weight.t().contiguous());
        out[0] = dgrad(a, b);
      }
      if (need_dw) {
        const GemmOperand a =
            r.dy_col.quantized ? GemmOperand::columnwise(*dyq.col) : GemmOperand::high_precision(dy2d.t().contiguous());
        const GemmOperand b =
            r.x_col.quantized ? GemmOperand::columnwise(*x_col) : GemmOperand::high_precision(x_dense.t().contiguous());
        out[1] = wgrad(a, b);
      }
    }
    if (has_bias && task_should_compute_output(2)) out[2] = dy2d.to(torch::kFloat32).sum(0).to(w_dtype);
    counters.check();
    return out;
  }

  torch::Tensor dgrad(const GemmOperand& a, const GemmOperand& b) {
    core::GemmOptions go;
    go.name = state->name + " dgrad";
    go.fp64_accumulation = state->recipe.reproducible_sums;
    const bool partial = options.gather_input || options.reduce_dgrad;  // a partial sum over the out features
    // FP64 out for a partial sum (added by the group, rounded once) and, as core/linear.cpp does, for an input
    // with a QuEST mask (its Hadamards run on the unrounded sum).
    if ((partial || x_mask.defined()) && go.fp64_accumulation) go.out_dtype = torch::kFloat64;
    torch::Tensor dx = core::gemm(a, b, go);
    if (!partial) {
      if (x_mask.defined()) dx = through_quest_mask(dx, x_mask);
      return dx.to(x_dtype).reshape(full_x_shape);
    }
    // QuEST's mask is applied after the sum over the group (it is linear in dx, but its two FP64 Hadamards are
    // not exact), so it transforms the very sum one rank computes: bit for bit under FP64 sums. Without a mask
    // the partial sums travel in x's dtype.
    if (!x_mask.defined() && go.out_dtype != torch::kFloat64) dx = dx.to(x_dtype);
    dx = dx.reshape(full_x_shape);
    // Sequence parallel: every rank holds a partial dgrad of all tokens; each keeps the sum of its slice.
    if (options.gather_input) {
      dx = reduce_scatter_dim0(dx, *comm, state->name + " dgrad reduce-scatter");
    } else {
      all_reduce_(dx, ReduceOp::kSum, *comm, state->name + " dgrad all-reduce");
    }
    if (x_mask.defined()) {
      // Under SP this rank holds the dgrad of its own tokens: the matching rows of the gathered input's mask.
      const int64_t rows = x_mask.size(0) / (options.gather_input ? comm->size() : 1);
      const torch::Tensor mask = options.gather_input ? x_mask.narrow(0, comm->rank() * rows, rows) : x_mask;
      const auto shape = dx.sizes().vec();
      dx = through_quest_mask(dx.reshape({rows, shape.back()}), mask).reshape(shape);
    }
    return dx.to(x_dtype);
  }

  torch::Tensor wgrad(const GemmOperand& a, const GemmOperand& b) {
    core::GemmOptions go;
    go.name = state->name + " wgrad";
    go.fp64_accumulation = state->recipe.reproducible_sums;
    torch::Tensor dw = core::gemm(a, b, go);
    if (w_mask.defined()) dw = through_quest_mask(dw, w_mask);
    return dw.to(w_dtype);
  }

  // Quartet, as core/linear.cpp: dgrad (dy·Q)(Wᵀ·Q)ᵀ with Q drawn now along this rank's output features (a
  // column shard rotates its own N/tp features: the rotation cancels within every shard's partial product);
  // wgrad (dyᵀ·Q')(xᵀ·Q')ᵀ with Q' the rotation along all tokens drawn at forward time. Rowwise copies only.
  void rotated_backward(const torch::Tensor& dy2d, bool need_dx, bool need_dw, variable_list& out) {
    core::LinearState& s = *state;
    const core::Recipe& r = s.recipe;
    auto quantized_rows = [&](const torch::Tensor& t, const core::OperandSpec& spec, const char* role,
                              Communicator* group, Slice slice) {
      auto q = quantize_with_group_amax(t, &spec, nullptr, group, s, s.name + "." + role, nullptr, false,
                                        place_of(t, slice, *comm)).row;
      if (s.capture) s.captured[role] = q;
      return q;
    };
    Communicator* dy_group = options.reduce_dy_amax ? comm : nullptr;
    if (need_dx) {
      InnerRotation rot = next_rotation(dy2d.size(1), s);
      // A column shard's features are [rank*N/tp, (rank+1)*N/tp) of the whole: rotate them with those signs
      // (the same rotation as the unsharded Linear when N/tp is a multiple of the 32-wide groups).
      if (options.split == WeightSplit::kOutputFeatures) rot.first = comm->rank() * dy2d.size(1);
      const auto dyq = quantized_rows(rotate_inner(dy2d, rot), r.dy_row, "dy_row", dy_group, dy_slice());
      // Wᵀ [in_features, out_features]: its columns are split under column parallelism, its rows under row.
      const Slice wt_slice = options.split == WeightSplit::kOutputFeatures  ? Slice::kCols
                             : options.split == WeightSplit::kInputFeatures ? Slice::kRows
                                                                            : Slice::kWhole;
      const auto wq = quantized_rows(rotate_inner(weight.t(), rot), r.w_col, "w_col", comm, wt_slice);
      if (s.capture) s.captured_rotations["dgrad"] = rotation_signs(rot);
      out[0] = dgrad(GemmOperand::rowwise(*dyq), GemmOperand::rowwise(*wq));
    }
    if (need_dw) {
      const Slice dyt_slice = dy_slice() == Slice::kCols ? Slice::kRows : Slice::kWhole;
      const auto dyq = quantized_rows(rotate_inner(dy2d.t(), wgrad_rotation), r.dy_col, "dy_col", dy_group, dyt_slice);
      if (s.capture) s.captured_rotations["wgrad"] = rotation_signs(wgrad_rotation);
      out[1] = wgrad(GemmOperand::rowwise(*dyq), GemmOperand::rowwise(*x_col));
    }
  }
};

// The weight shard's quantized copies, cached in the LinearState as core/linear.cpp's are, with the group
// amax: every rank refreshes at the same forward (the optimizer writes all shards in the same step).
void refresh_weight_cache(const torch::Tensor& weight, core::LinearState& s, Communicator& comm, WeightSplit split) {
  const Slice slice = split == WeightSplit::kOutputFeatures  ? Slice::kRows
                      : split == WeightSplit::kInputFeatures ? Slice::kCols
                                                             : Slice::kWhole;
  core::refresh_weight_cache(weight, s,
                             [&](const torch::Tensor& w, const core::OperandSpec* row, const core::OperandSpec* col) {
                               return quantize_with_group_amax(w, row, col, &comm, s, s.name + ".weight", s.ds_w.get(),
                                                               false, place_of(w, slice, comm));
                             });
}

}  // namespace

torch::Tensor parallel_linear(const torch::Tensor& x, const torch::Tensor& weight,
                              const std::optional<torch::Tensor>& bias, const std::shared_ptr<core::LinearState>& state,
                              Communicator& comm, const ParallelLinearOptions& options) {
  core::LinearState& s = *state;
  const std::string& who = s.name;
  const core::Recipe& r = s.recipe;
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
  if (bias && options.scatter_output)
    throw InvalidArgument(who + ": a reduce-scattered (row-parallel) output takes its bias after the reduction, "
                          "not inside the partial sums; pass no bias here");
  const bool need_grad =
      torch::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad() || (bias && bias->requires_grad()));
  const bool need_wgrad = need_grad && weight.requires_grad();
  const bool gather = options.gather_input && comm.size() > 1;
  // QuEST's Hadamard-32 groups (and the clip masks' straight-through Hadamards) run along the input features:
  // a row-parallel shard must hold whole groups for its copies to be the full tensor's columns.
  if ((is_quest(r.x_row) || is_quest(r.w_row)) && k % 32 != 0)
    throw InvalidArgument(who + ": recipe '" + r.name + "' quantizes x and W with QuEST in Hadamard-32 groups along "
                          "the input features, but this rank's shard has in_features = " + std::to_string(k) +
                          ", not a multiple of 32 (a row-parallel layer needs in_features/tp divisible by 32)");
  const bool rotated = r.backward_hadamard;
  // Quartet's x copies cannot be gathered quantized (QuEST clip masks; x_col is rotated along all tokens and
  // stochastically rounded with bits keyed by element index): gather x itself and quantize as one rank would.
  const bool dense_gather = gather && (rotated || is_quest(r.x_row) || is_quest(r.x_col));

  auto full_shape = x.sizes().vec();
  if (gather) full_shape[0] *= comm.size();
  torch::Tensor y;
  auto node = need_grad ? c10::make_intrusive<ParallelLinearBackward>()
                        : c10::intrusive_ptr<ParallelLinearBackward>();
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor x2d = x.reshape({-1, k}).contiguous();
    if (!r.x_row.quantized) check_no_nan(x2d, who + ": the input");
    if (!r.w_row.quantized) check_no_nan(weight, who + ": the weight");
    refresh_weight_cache(weight, s, comm, options.split);
    // Quantize the local rows with the group's per-tensor factors, then gather the quantized copies (or, for
    // Quartet, quantize the gathered rows, identical on every rank).
    const torch::Tensor x_rows = dense_gather ? all_gather_dim0(x2d, comm, who + ".input") : x2d;
    Communicator* x_group = (options.reduce_x_amax || gather) && !dense_gather ? &comm : nullptr;
    // x [tokens, in_features]: a column slice under row parallelism, this rank's tokens before a quantized gather.
    const bool x_cols_split = options.split == WeightSplit::kInputFeatures;
    const Slice x_slice = x_cols_split ? Slice::kCols : gather && !dense_gather ? Slice::kRows : Slice::kWhole;
    QuantizedCopies xq = quantize_with_group_amax(x_rows, &r.x_row, need_wgrad && !rotated ? &r.x_col : nullptr,
                                                  x_group, s, who + ".input", s.ds_x.get(), false,
                                                  place_of(x_rows, x_slice, comm));
    if (gather && !dense_gather) xq = all_gather_rows(xq, comm, who + ".input");
    capture_copies(s, xq, "x_row", "x_col");
    // High-precision operands (bf16 recipe, or a recipe leaving x unquantized) are gathered as they are.
    const bool dense_needed = !r.x_row.quantized || (need_wgrad && !rotated && !r.x_col.quantized);
    torch::Tensor x_full;
    if (dense_needed) x_full = gather && !dense_gather ? all_gather_dim0(x2d, comm, who + ".input") : x_rows;
    const GemmOperand a = r.x_row.quantized ? GemmOperand::rowwise(*xq.row) : GemmOperand::high_precision(x_full);
    const GemmOperand b = r.w_row.quantized ? GemmOperand::rowwise(*s.w_row) : GemmOperand::high_precision(weight);
    core::GemmOptions go;
    go.name = who + " fprop";
    if (bias) go.bias = bias->detach();
    const bool partial = (options.scatter_output || options.reduce_output) && comm.size() > 1;
    go.fp64_accumulation = s.recipe.reproducible_sums;
    go.out_dtype = partial && go.fp64_accumulation ? torch::kFloat64 : x.scalar_type();
    auto out_shape = full_shape;
    out_shape.back() = n;
    y = core::gemm(a, b, go).reshape(out_shape);
    // Row-parallel under SP: every rank holds partial sums for all tokens and keeps the total of its own.
    if (options.scatter_output && comm.size() > 1) y = reduce_scatter_dim0(y, comm, who + " output reduce-scatter");
    if (options.reduce_output && comm.size() > 1) all_reduce_(y, ReduceOp::kSum, comm, who + " output all-reduce");
    y = y.to(x.scalar_type());

    if (need_grad) {
      node->comm = &comm;
      node->options = options;
      node->options.gather_input = gather;
      node->options.scatter_output = options.scatter_output && comm.size() > 1;
      node->full_x_shape = full_shape;
      // Quartet gathers x itself (dense_gather), so x_rows holds all tokens; an unquantized wgrad operand is
      // the dense gather x_full.
      core::add_saved_bytes(node->save_for_backward(
          state, rotated ? x_rows : x_full, x.scalar_type(), xq.row, xq.col, weight, bias.has_value(), need_wgrad,
          [&](const torch::Tensor& xt) {
            return quantize_with_group_amax(xt, &r.x_col, nullptr, x_group, s, who + ".input", nullptr, false,
                                            place_of(xt, x_cols_split ? Slice::kRows : Slice::kWhole, comm))
                .row;
          }));
    }
  }
  if (need_grad) {
    node->set_next_edges(torch::autograd::collect_next_edges(x, weight, bias ? *bias : torch::Tensor()));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace nibble::parallel::nn
