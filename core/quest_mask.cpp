#include "core/quest_mask.h"

#include "core/linear.h"

namespace nibble::core {

torch::Tensor pack_mask(const torch::Tensor& mask) {
  const int64_t rows = mask.size(0), cols = mask.size(1);
  const torch::Tensor weights = torch::tensor({1, 2, 4, 8, 16, 32, 64, 128}, torch::kInt32).to(mask.device());
  return (mask.to(torch::kInt32).reshape({rows, cols / 8, 8}) * weights).sum(-1).to(torch::kUInt8);
}

torch::Tensor unpack_mask(const torch::Tensor& packed) {
  const torch::Tensor shifts = torch::arange(8, torch::TensorOptions().dtype(torch::kInt32).device(packed.device()));
  const torch::Tensor bits =
      torch::bitwise_and(torch::bitwise_right_shift(packed.to(torch::kInt32).unsqueeze(-1), shifts), 1);
  return bits.reshape({packed.size(0), packed.size(1) * 8}).to(torch::kFloat32);
}

torch::Tensor through_quest_mask(const torch::Tensor& grad, const torch::Tensor& packed_mask) {
  return hadamard32_last_dim(hadamard32_last_dim(grad) * unpack_mask(packed_mask));
}

}  // namespace nibble::core
