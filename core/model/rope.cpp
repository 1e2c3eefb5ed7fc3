#include "core/model/rope.h"

namespace nibble::core::model {

std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t seq_len, int64_t head_dim, double theta) {
  // Angles in FP64 so long positions keep their precision, stored as FP32.
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  torch::Tensor inv_freq = torch::pow(theta, -torch::arange(0, head_dim, 2, f64) / static_cast<double>(head_dim));
  torch::Tensor angles = torch::outer(torch::arange(seq_len, f64), inv_freq);
  angles = torch::cat({angles, angles}, -1);
  return {angles.cos().to(torch::kFloat32), angles.sin().to(torch::kFloat32)};
}

torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
  const int64_t half = x.size(-1) / 2;
  torch::Tensor rotated = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos.to(x.scalar_type()) + rotated * sin.to(x.scalar_type());
}

}  // namespace nibble::core::model
