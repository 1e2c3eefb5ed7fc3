#pragma once
// E4M3 code -> float for all 256 codes (decode_scalar's values), built once: the table that CPU loops index
// instead of calling decode_scalar per element (NVFP4's block multipliers, the fp8 optimizer states' decode
// without Highway).
#include <array>
#include <cstdint>

#include "precision/format.h"

namespace nibble::precision {

inline const std::array<float, 256>& e4m3_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (uint32_t c = 0; c < 256; ++c) t[c] = decode_scalar(c, formats::kE4M3);
    return t;
  }();
  return table;
}

}  // namespace nibble::precision
