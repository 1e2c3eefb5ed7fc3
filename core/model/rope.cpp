#include "core/model/rope.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include "core/cpu/rope_cpu.h"

namespace nibble::core::model {
namespace {

using torch::autograd::variable_list;

cpu::RopeShape rope_shape(const torch::Tensor& x) {
  return {x.size(0), x.size(1), x.size(2), x.size(3), x.stride(0), x.stride(1), x.stride(2)};
}

// Backward of the fused CPU pass: keeps only the tables (and the shape), not x.
struct RopeBackward : public torch::autograd::Node {
  torch::Tensor cos, sin;
  cpu::RopeShape shape;
  std::string name() const override { return "nibble::RopeBackward"; }
  void release_variables() override {
    cos.reset();
    sin.reset();
  }
  variable_list apply(variable_list&& grads) override {
    torch::NoGradGuard no_grad;
    variable_list out(1);
    if (!grads[0].defined() || !task_should_compute_output(0)) return out;
    const torch::Tensor dy = grads[0].to(torch::kFloat32).contiguous();
    torch::Tensor dx = torch::empty_like(dy);
    cpu::rope_backward(dy.data_ptr<float>(), shape, cos.data_ptr<float>(), sin.data_ptr<float>(), dx.data_ptr<float>());
    out[0] = dx;
    return out;
  }
};

}  // namespace

std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t seq_len, int64_t head_dim, double theta) {
  // Angles in FP64 so long positions keep their precision, stored as FP32.
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor inv_freq = torch::pow(theta, -torch::arange(0, head_dim, 2, f64) / static_cast<double>(head_dim));
  torch::Tensor angles = torch::outer(torch::arange(seq_len, f64), inv_freq);
  angles = torch::cat({angles, angles}, -1);
  return {angles.cos().to(torch::kFloat32), angles.sin().to(torch::kFloat32)};
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const bool fused = x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.dim() == 4 &&
                     x.stride(3) == 1 && x.size(3) % 2 == 0 && cos.scalar_type() == torch::kFloat32 &&
                     sin.scalar_type() == torch::kFloat32 && cos.dim() == 2 && cos.size(0) == x.size(2) &&
                     cos.size(1) == x.size(3) && cos.sizes() == sin.sizes();
  if (!fused) return apply_rope_reference(x, cos, sin);
  const torch::Tensor c = cos.contiguous(), s = sin.contiguous();
  const cpu::RopeShape shape = rope_shape(x);
  torch::Tensor y = torch::empty(x.sizes(), x.options().requires_grad(false));
  cpu::rope_forward(x.data_ptr<float>(), shape, c.data_ptr<float>(), s.data_ptr<float>(), y.data_ptr<float>());
  if (torch::GradMode::is_enabled() && x.requires_grad()) {
    auto node = c10::make_intrusive<RopeBackward>();
    node->cos = c, node->sin = s, node->shape = shape;
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    torch::autograd::set_history(y, node);
  }
  return y;
}

// The torch expression: the reference, and what runs off the CPU or outside float32.
torch::Tensor apply_rope_reference(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.to(x.scalar_type()) + rotated * sin.to(x.scalar_type());
}

}  // namespace nibble::core::model
