#pragma once
// How an optimizer moment is stored: the codecs, their group sizes and buffer layouts. C++17 (the CUDA
// kernel reads these descriptors); the names and layout functions are host-only.
#include <cstdint>
#include <string>

#include "precision/host_device.h"

namespace nibble::optim {

enum class StateCodec : uint8_t {
  kFP32,      // float per element
  kBF16,      // bfloat16 per element, written with stochastic rounding
  kFP8,       // E4M3 codes + per-128 group (scale, k, centre): COAT dynamic range expansion
  kFP8Plain,  // E4M3 codes + per-128 group absmax scale (the ablation without expansion)
  kInt8,      // dynamic-map codes + per-256 block absmax (bitsandbytes); under 4096 elements: FP32
};

// Buffers of one moment of one tensor (non-owning; device pointers for the CUDA kernel). `values` holds
// float (fp32), uint16 bfloat16 bits (bf16) or uint8 codes (fp8, fp8_plain, int8).
struct MomentView {
  void* values = nullptr;
  float* scale = nullptr;      // fp8 and fp8_plain: per group s; int8: per block absmax
  float* expansion = nullptr;  // fp8: per group k
  float* centre = nullptr;     // fp8: per group g
};

inline constexpr int64_t kInt8MinElements = 4096;  // smaller tensors keep FP32 states (bitsandbytes' rule)

// The codec a tensor of `numel` elements really uses (int8 keeps small tensors in FP32).
NIBBLE_HOST_DEVICE StateCodec effective_codec(StateCodec codec, int64_t numel) {
  return (codec == StateCodec::kInt8 && numel < kInt8MinElements) ? StateCodec::kFP32 : codec;
}

// Elements per group of side data (0: none).
int codec_group_size(StateCodec codec);

// Sizes of one moment's buffers, for the effective codec of a tensor of `numel` elements.
struct MomentLayout {
  StateCodec codec = StateCodec::kFP32;  // effective
  int64_t numel = 0;
  int64_t value_bytes = 0;  // bytes of `values`
  int64_t groups = 0;       // floats in each side array present
  bool has_scale = false, has_expansion = false, has_centre = false;
  int64_t bytes() const {
    return value_bytes + 4 * groups * ((has_scale ? 1 : 0) + (has_expansion ? 1 : 0) + (has_centre ? 1 : 0));
  }
};
MomentLayout moment_layout(StateCodec codec, int64_t numel);

// "fp32", "bf16", "fp8", "fp8_plain", "int8"; InvalidArgument listing them otherwise.
StateCodec parse_state_codec(const std::string& name);
std::string state_codec_name(StateCodec codec);

}  // namespace nibble::optim
