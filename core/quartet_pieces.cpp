#include "core/quartet_pieces.h"

#include "precision/philox.h"

namespace nibble::nn {

InnerRotation next_rotation(int64_t inner, LinearState& s) {
  return InnerRotation{inner, (inner + 31) / 32 * 32, s.seed, s.sr_counter++};
}

torch::Tensor rotation_signs(const InnerRotation& r) {
  torch::Tensor signs = torch::empty({r.padded}, torch::kFloat32);
  float* out = signs.data_ptr<float>();
  precision::Philox4x32Output bits{};
  int64_t have = -1;  // the Philox block in `bits`
  for (int64_t i = 0; i < r.padded; ++i) {
    const int64_t g = r.first + i, block = g / 128, bit = g % 128;
    if (block != have) {
      bits = precision::philox_block(r.seed, r.offset, static_cast<uint64_t>(block));
      have = block;
    }
    out[i] = (bits.v[bit / 32] >> (bit % 32)) & 1u ? -1.0f : 1.0f;
  }
  return signs;
}

torch::Tensor rotate_inner(const torch::Tensor& t2d, const InnerRotation& r) {
  torch::Tensor t = t2d.to(torch::kFloat32);
  if (r.padded != r.inner) t = torch::constant_pad_nd(t, {0, r.padded - r.inner});
  return hadamard32_last_dim(t * rotation_signs(r)).contiguous();
}

torch::Tensor pack_mask(const torch::Tensor& mask) {
  const int64_t rows = mask.size(0), cols = mask.size(1);
  const torch::Tensor weights = torch::tensor({1, 2, 4, 8, 16, 32, 64, 128}, torch::kInt32);
  return (mask.to(torch::kInt32).reshape({rows, cols / 8, 8}) * weights).sum(-1).to(torch::kUInt8);
}

torch::Tensor unpack_mask(const torch::Tensor& packed) {
  const torch::Tensor shifts = torch::arange(8, torch::kInt32);
  const torch::Tensor bits = torch::bitwise_and(torch::bitwise_right_shift(packed.to(torch::kInt32).unsqueeze(-1), shifts), 1);
  return bits.reshape({packed.size(0), packed.size(1) * 8}).to(torch::kFloat32);
}

torch::Tensor through_quest_mask(const torch::Tensor& grad, const torch::Tensor& packed_mask) {
  return hadamard32_last_dim(hadamard32_last_dim(grad) * unpack_mask(packed_mask));
}

}  // namespace nibble::nn
