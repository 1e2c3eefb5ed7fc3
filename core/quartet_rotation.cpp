#include "core/quartet_rotation.h"

#include "precision/philox.h"

namespace nibble::core {

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
  return hadamard32_last_dim(t * rotation_signs(r).to(t.device())).contiguous();
}

}  // namespace nibble::core
