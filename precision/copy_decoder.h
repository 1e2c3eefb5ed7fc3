#pragma once
// Reading one quantized copy element by element (host side): the code at (r, c), its block's scale and the
// per-tensor factor (NVFP4's 1 / S_enc; 1 for every other scheme), so that the value is
// (decode_scalar(code) * block_scale) * tensor_factor, in that order (the order NUMERICS.md rounds in).
// precision::dequantize is this applied to every element; the quantization statistics (core/quantization_stats.h)
// use the multiplier as well, to know each element's largest representable magnitude.
#include <cstdint>

#include "precision/format.h"
#include "precision/quantize.h"
#include "precision/scaling.h"
#include "precision/scheme_facts.h"

namespace nibble::precision {

class CopyDecoder {
 public:
  CopyDecoder(const QuantizedCopy& q, const CopyLayout& L, const QuantizeOptions& o)
      : q_(q), L_(L), scheme_(o.scheme), facts_(scheme_facts(o.scheme)), fp4_(o.element.bits() <= 4),
        nv_dec_((o.scheme == Scheme::kNVFP4 || o.scheme == Scheme::kNVFP4_2D)
                    ? 1.0f / nvfp4_global_encode_scale(*q.global_amax)
                    : 1.0f) {}

  uint32_t code(int64_t r, int64_t c) const {
    if (!fp4_) return q_.data[r * L_.data_row_bytes + c];
    return (q_.data[r * L_.data_row_bytes + c / 2] >> ((c % 2) * 4)) & 0xFu;
  }

  float value(int64_t r, int64_t c, const Format& element) const {
    return decode_scalar(code(r, c), element) * block_scale(r, c) * nv_dec_;
  }
  float tensor_factor() const { return nv_dec_; }

  float block_scale(int64_t r, int64_t c) const {
    switch (scheme_) {
      case Scheme::kFP8Tensor: return scales_f32()[0];
      case Scheme::kFP8Block128:
      case Scheme::kFP8Block16: return scales_f32()[r * L_.scale_cols + c / facts_.block_cols];
      case Scheme::kFP8Block128x128: return scales_f32()[(r / 128) * L_.scale_cols + c / 128];
      case Scheme::kNVFP4:
      case Scheme::kNVFP4_2D: return decode_scalar(scale_codes()[r * L_.scale_cols + c / 16], formats::kE4M3);
      default:  // E8M0-scaled schemes
        return e8m0_decode_multiplier(scale_codes()[r * L_.scale_cols + c / facts_.block_cols]);
    }
  }

 private:
  const float* scales_f32() const { return static_cast<const float*>(q_.scale); }
  const uint8_t* scale_codes() const { return static_cast<const uint8_t*>(q_.scale); }

  const QuantizedCopy& q_;
  const CopyLayout& L_;
  Scheme scheme_;
  SchemeFacts facts_;
  bool fp4_;
  float nv_dec_;
};

}  // namespace nibble::precision
