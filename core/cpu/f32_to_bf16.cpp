#include "core/cpu/f32_to_bf16.h"

namespace nibble::core::cpu {

void f32_to_bf16_row(const float* in, int64_t n, uint16_t* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = bf16_rne_satfinite(std::bit_cast<uint32_t>(in[k]));
}

}  // namespace nibble::core::cpu
