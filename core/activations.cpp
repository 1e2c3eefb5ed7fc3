#include "core/activations.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>

#include <memory>

#include "core/quantized_tensor.h"
#include "core/saved_for_backward_meter.h"
#include "core/cpu/rms_norm_cpu.h"
#include "core/cpu/swiglu_cpu.h"
#include "core/nan_check.h"
#include "precision/error.h"

namespace nibble::core {
namespace {

using torch::autograd::variable_list;

// One activation kept for backward: exact, or FP8 E4M3 1x16 groups (COAT's non-linear-op compression).
class SavedActivation {
 public:
  SavedActivation() = default;
  SavedActivation(const torch::Tensor& t, bool compress, const std::string& name) : shape_(t.sizes().vec()) {
    if (compress) {
      precision::QuantizeOptions o = precision::default_options(precision::Scheme::kFP8Block16);
      q_ = std::make_shared<QuantizedTensor>(quantize(t.contiguous(), o, name));
      add_saved_bytes(q_->bytes());
    } else {
      dense_ = t.detach();
      add_saved_bytes(dense_.numel() * static_cast<int64_t>(dense_.element_size()));
    }
  }
  // Whether restore() returns a new tensor nobody else holds (the caller may then write into it): the dequantized
  // copy, or a dtype conversion; the exact float32 activation itself is shared with the forward's graph.
  bool restores_a_copy() const { return q_ != nullptr || (dense_.defined() && dense_.scalar_type() != torch::kFloat32); }
  // The saved values as float32 (dequantized when compressed).
  torch::Tensor restore() const {
    if (q_) return dequantize(*q_->rowwise, q_->options).reshape(shape_);
    return dense_.to(torch::kFloat32);
  }
  void release() {
    q_.reset();
    dense_.reset();
  }

 private:
  std::vector<int64_t> shape_;
  torch::Tensor dense_;
  std::shared_ptr<QuantizedTensor> q_;
};

void check_input(const torch::Tensor& t, const std::string& who, const char* what) {
  if (t.scalar_type() != torch::kFloat32 && t.scalar_type() != torch::kBFloat16)
    throw InvalidArgument(who + ": " + what + " dtype " + std::string(c10::toString(t.scalar_type())) +
                          " is not supported; use float32 or bfloat16");
  if (contains_nan(t)) throw InvalidArgument(who + ": " + what + " contains NaN");
}

struct RmsNormBackward : public torch::autograd::Node {
  SavedActivation x;
  torch::Tensor weight;
  double eps = 1e-6;
  torch::ScalarType x_dtype = torch::kFloat32;
  std::string label;
  std::string name() const override { return "nibble::RmsNormBackward(" + label + ")"; }
  void release_variables() override {
    x.release();
    weight.reset();
  }
  variable_list apply(variable_list&& grads) override {
    torch::NoGradGuard no_grad;
    variable_list out(2);
    if (!grads[0].defined()) return out;
    const torch::Tensor xf = x.restore().contiguous();
    const torch::Tensor dy = grads[0].to(torch::kFloat32).contiguous();
    if (contains_nan(dy)) throw InvalidArgument(label + ": the output gradient contains NaN");
    const torch::Tensor w = weight.to(torch::kFloat32).contiguous();
    const torch::Tensor r = torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
    if (xf.device().is_cpu()) {
      // Two fused passes and torch's row mean instead of ten torch ops, the same bits (core/cpu/rms_norm_cpu.h).
      const int64_t d = xf.size(-1), rows = d > 0 ? xf.numel() / d : 0;
      const bool want_dx = task_should_compute_output(0), want_dw = task_should_compute_output(1);
      torch::Tensor m, r3 = r.pow(3);
      if (want_dx) {
        torch::Tensor gx = torch::empty_like(xf);
        cpu::rms_norm_backward_gx(dy.data_ptr<float>(), xf.data_ptr<float>(), w.data_ptr<float>(),
                                  gx.data_ptr<float>(), rows, d);
        m = gx.mean(-1, true);
      }
      torch::Tensor dx = want_dx ? torch::empty_like(xf) : torch::Tensor();
      torch::Tensor t = want_dw ? torch::empty_like(xf) : torch::Tensor();
      cpu::rms_norm_backward(dy.data_ptr<float>(), xf.data_ptr<float>(), w.data_ptr<float>(), r.data_ptr<float>(),
                             r3.data_ptr<float>(), want_dx ? m.data_ptr<float>() : nullptr,
                             want_dx ? dx.data_ptr<float>() : nullptr, want_dw ? t.data_ptr<float>() : nullptr,
                             rows, d);
      if (want_dx) out[0] = dx.to(x_dtype);
      if (want_dw) out[1] = t.reshape({-1, d}).sum(0).to(weight.scalar_type());
      return out;
    }
    const torch::Tensor g = dy * w;
    if (task_should_compute_output(0))
      out[0] = (r * g - xf * r.pow(3) * (g * xf).mean(-1, true)).to(x_dtype);
    if (task_should_compute_output(1)) {
      const int64_t d = xf.size(-1);
      out[1] = (dy * xf * r).reshape({-1, d}).sum(0).to(weight.scalar_type());
    }
    return out;
  }
};

struct SwigluBackward : public torch::autograd::Node {
  SavedActivation gate, up;
  torch::ScalarType gate_dtype = torch::kFloat32, up_dtype = torch::kFloat32;
  std::string label;
  std::string name() const override { return "nibble::SwigluBackward(" + label + ")"; }
  void release_variables() override {
    gate.release();
    up.release();
  }
  variable_list apply(variable_list&& grads) override {
    torch::NoGradGuard no_grad;
    variable_list out(2);
    if (!grads[0].defined()) return out;
    const torch::Tensor g = gate.restore().contiguous(), u = up.restore().contiguous();
    const torch::Tensor dy = grads[0].to(torch::kFloat32).contiguous();
    if (contains_nan(dy)) throw InvalidArgument(label + ": the output gradient contains NaN");
    const torch::Tensor sig = torch::sigmoid(g);
    const bool want_dg = task_should_compute_output(0), want_du = task_should_compute_output(1);
    if (g.device().is_cpu()) {
      // One pass instead of eight torch ops, the same bits (core/cpu/swiglu_cpu.h). The gradients overwrite this
      // node's own scratch: du the sigmoid, dg the restored gate when it is a copy (a compressed save) -- two
      // fewer activation-sized FP32 tensors at the point where a step's memory peaks.
      torch::Tensor dg = want_dg ? (gate.restores_a_copy() && g.is_contiguous() ? g : torch::empty_like(g))
                                 : torch::Tensor();
      torch::Tensor du = want_du ? sig : torch::Tensor();
      cpu::swiglu_backward(dy.data_ptr<float>(), g.data_ptr<float>(), sig.data_ptr<float>(), u.data_ptr<float>(),
                           want_dg ? dg.data_ptr<float>() : nullptr, want_du ? du.data_ptr<float>() : nullptr,
                           g.numel());
      if (want_dg) out[0] = dg.to(gate_dtype);
      if (want_du) out[1] = du.to(up_dtype);
      return out;
    }
    if (want_dg) out[0] = (dy * u * sig * (1 + g * (1 - sig))).to(gate_dtype);
    if (want_du) out[1] = (dy * g * sig).to(up_dtype);
    return out;
  }
};

}  // namespace

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& weight, double eps, bool compress,
                       const std::string& name) {
  check_input(x, name, "input");
  if (weight.dim() != 1 || weight.size(0) != x.size(-1))
    throw InvalidArgument(name + ": weight has shape " + c10::str(weight.sizes()) + " but the input's last dimension is " +
                          std::to_string(x.size(-1)));
  const bool need_grad = torch::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad());
  torch::Tensor y;
  auto node = need_grad ? c10::make_intrusive<RmsNormBackward>() : c10::intrusive_ptr<RmsNormBackward>();
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor xf = x.to(torch::kFloat32).contiguous(), w = weight.to(torch::kFloat32).contiguous();
    const torch::Tensor r = torch::rsqrt(xf.pow(2).mean(-1, true) + eps);
    if (xf.device().is_cpu()) {  // one pass, the same bits as the expression below (core/cpu/rms_norm_cpu.h)
      const int64_t d = xf.size(-1);
      torch::Tensor yf = torch::empty_like(xf);
      cpu::rms_norm_forward(xf.data_ptr<float>(), r.data_ptr<float>(), w.data_ptr<float>(), yf.data_ptr<float>(),
                            d > 0 ? xf.numel() / d : 0, d);
      y = yf.to(x.scalar_type());
    } else {
      y = (xf * r * w).to(x.scalar_type());
    }
    if (need_grad) {
      node->x = SavedActivation(x, compress, name + ".input");
      node->weight = weight.detach();
      node->eps = eps;
      node->x_dtype = x.scalar_type();
      node->label = name;
    }
  }
  if (need_grad) {
    node->set_next_edges(torch::autograd::collect_next_edges(x, weight));
    torch::autograd::set_history(y, node);
  }
  return y;
}

torch::Tensor swiglu(const torch::Tensor& gate, const torch::Tensor& up, bool compress, const std::string& name) {
  check_input(gate, name, "gate");
  check_input(up, name, "up");
  if (gate.sizes() != up.sizes())
    throw InvalidArgument(name + ": gate " + c10::str(gate.sizes()) + " and up " + c10::str(up.sizes()) +
                          " must have the same shape");
  const bool need_grad = torch::GradMode::is_enabled() && (gate.requires_grad() || up.requires_grad());
  torch::Tensor y;
  auto node = need_grad ? c10::make_intrusive<SwigluBackward>() : c10::intrusive_ptr<SwigluBackward>();
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor g = gate.to(torch::kFloat32).contiguous(), u = up.to(torch::kFloat32).contiguous();
    const torch::Tensor sig = torch::sigmoid(g);
    if (g.device().is_cpu()) {  // one pass, the same bits as the expression below (core/cpu/swiglu_cpu.h)
      torch::Tensor yf = sig;       // written over the sigmoid, which is ours and read element by element first
      cpu::swiglu_forward(g.data_ptr<float>(), sig.data_ptr<float>(), u.data_ptr<float>(), yf.data_ptr<float>(),
                          g.numel());
      y = yf.to(gate.scalar_type());
    } else {
      y = (g * sig * u).to(gate.scalar_type());
    }
    if (need_grad) {
      node->gate = SavedActivation(gate, compress, name + ".gate");
      node->up = SavedActivation(up, compress, name + ".up");
      node->gate_dtype = gate.scalar_type();
      node->up_dtype = up.scalar_type();
      node->label = name;
    }
  }
  if (need_grad) {
    node->set_next_edges(torch::autograd::collect_next_edges(gate, up));
    torch::autograd::set_history(y, node);
  }
  return y;
}

}  // namespace nibble::core
