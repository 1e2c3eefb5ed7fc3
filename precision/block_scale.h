#pragma once
// The scale of one block (or tile, or whole tensor) from its amax, for every scheme but QuEST: the element
// multiplier the quantizer applies and what it stores. One definition for the CPU and CUDA quantizers.
#include <cfloat>
#include <cstdint>

#include "precision/quantize.h"
#include "precision/scaling.h"

namespace nibble::precision {

struct BlockScale {
  float multiplier;  // x * multiplier is rounded to the element format
  uint32_t code;     // E8M0 / UE4M3 code (schemes that store codes)
  float scale_inv;   // FP32 decode scale (FP8 schemes)
};

// value_for_inf: block FP8's fallback scale when fmax / amax overflows (the input dtype's max);
// nvfp4_global_enc: NVFP4's S_enc from the copy's global amax. QuEST (sigma-based) is not handled here.
NIBBLE_HOST_DEVICE BlockScale block_scale(const QuantizeOptions& o, float block_amax, float value_for_inf,
                                          float nvfp4_global_enc) {
  const float fmax = max_finite(o.element);
  switch (o.scheme) {
    case Scheme::kFP8Tensor:
    case Scheme::kFP8Block128:
    case Scheme::kFP8Block16:
    case Scheme::kFP8Block128x128: {
      const float vfi = o.scheme == Scheme::kFP8Tensor ? FLT_MAX : value_for_inf;
      const float s = (o.scheme == Scheme::kFP8Tensor && o.use_fixed_scale)
                          ? o.fixed_scale
                          : compute_scale(block_amax, fmax, o.amax_epsilon, o.pow2_scale, vfi);
      return {s, 0u, 1.0f / s};
    }
    case Scheme::kMXFP8:
    case Scheme::kMXFP4: {
      const int emax_elem = static_cast<int>((float_bits(fmax) >> 23) & 0xFFu) - 127;
      const uint32_t e = o.mx_rule == MxScaleRule::kCeil ? float_to_e8m0_ceil(block_amax * (1.0f / fmax))
                                                         : e8m0_floor_scale(block_amax, emax_elem);
      return {e8m0_encode_multiplier(e), e, 0.0f};
    }
    case Scheme::kNVFP4:
    case Scheme::kNVFP4_2D: {
      const uint32_t code = nvfp4_block_scale_code(block_amax, nvfp4_global_enc);
      return {nvfp4_block_encode_multiplier(code, 1.0f / nvfp4_global_enc), code, 0.0f};
    }
    case Scheme::kMXFP4Quest: break;
  }
  return {1.0f, 0u, 1.0f};  // QuEST: callers use quest_scale_code instead
}

}  // namespace nibble::precision
