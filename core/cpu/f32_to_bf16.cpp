#include "core/cpu/f32_to_bf16.h"

#include <bit>

#include "precision/bf16_bits.h"

namespace nibble::core::cpu {

void f32_to_bf16_row(const float* in, int64_t n, uint16_t* out) {
  for (int64_t k = 0; k < n; ++k) out[k] = precision::bf16_code_nearest(std::bit_cast<uint32_t>(in[k]));
}

}  // namespace nibble::core::cpu
