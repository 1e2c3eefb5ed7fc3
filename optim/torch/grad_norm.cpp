#include "optim/torch/grad_norm.h"

#include <limits>

#include "precision/error.h"

namespace nibble::optim {

GradientReport check_gradient_tensors(const std::vector<torch::Tensor>& grads, const std::vector<std::string>& names) {
  if (!names.empty() && names.size() != grads.size())
    throw InvalidArgument("check_gradient_tensors: " + std::to_string(names.size()) + " names for " +
                          std::to_string(grads.size()) + " gradients");
  std::vector<torch::Tensor> held;  // keeps contiguous copies alive while the views point at them
  std::vector<GradientView> views;
  std::vector<size_t> index;  // views[k] is grads[index[k]]
  std::vector<size_t> device_grads;  // CUDA gradients, checked below
  for (size_t i = 0; i < grads.size(); ++i) {
    const torch::Tensor& g = grads[i];
    if (!g.defined()) continue;
    auto what = [&] { return "gradient " + (names.empty() ? std::to_string(i) : "of '" + names[i] + "'"); };
    if (g.is_sparse()) throw InvalidArgument(what() + " is sparse; dense gradients only");
    if (!g.device().is_cpu() && !g.is_cuda())
      throw InvalidArgument(what() + " is on " + g.device().str() + "; CPU and CUDA tensors only");
    ElementType type;
    if (g.scalar_type() == torch::kFloat32) {
      type = ElementType::kFloat32;
    } else if (g.scalar_type() == torch::kBFloat16) {
      type = ElementType::kBFloat16;
    } else {
      throw InvalidArgument(what() + " has dtype " + std::string(c10::toString(g.scalar_type())) +
                            "; supported: float32, bfloat16");
    }
    if (g.is_cuda()) {
      device_grads.push_back(i);
      continue;
    }
    held.push_back(g.contiguous());
    views.push_back({held.back().data_ptr(), type, g.numel()});
    index.push_back(i);
  }
  GradientReport r = check_gradients(views);
  if (r.first_nonfinite >= 0) r.first_nonfinite = static_cast<int64_t>(index[r.first_nonfinite]);
  // CUDA gradients, with torch on their device: FP64 squares summed in torch's order (the CPU's fixed order is
  // a CPU property; the norm then differs from a CPU run's in the last bits), the first NaN/Inf by position.
  for (size_t i : device_grads) {
    const torch::Tensor flat = grads[i].reshape({-1});
    const torch::Tensor bad = flat.isfinite().logical_not();
    if (bad.any().item<bool>()) {
      if (r.first_nonfinite < 0 || static_cast<int64_t>(i) < r.first_nonfinite) {
        r.first_nonfinite = static_cast<int64_t>(i);
        r.nonfinite_element = bad.nonzero()[0][0].item<int64_t>();
      }
      continue;
    }
    r.sum_squares += flat.to(torch::kFloat64).square().sum().item<double>();
  }
  return r;
}

double grad_sum_squares(const std::vector<torch::Tensor>& grads) {
  const GradientReport r = check_gradient_tensors(grads);
  return r.first_nonfinite >= 0 ? std::numeric_limits<double>::infinity() : r.sum_squares;
}

}  // namespace nibble::optim
