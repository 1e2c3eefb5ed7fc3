#pragma once
// One parameter tensor as the fused optimizer step sees it: where the model copy, the FP32 master, the
// gradient, the two moments and the step counter live. Non-owning and plain (C++17, trivially copyable):
// the CPU step takes a span of these; the CUDA step copies an array of them to the device and runs one
// launch over all of them.
#include <cstdint>

#include "optim/state_codec.h"

namespace nibble::optim {

enum class ElementType : uint8_t { kFloat32, kBFloat16 };

struct TensorSlot {
  int64_t numel = 0;
  void* param = nullptr;  // the model copy the forward reads: float or bfloat16 bits (uint16)
  ElementType param_type = ElementType::kFloat32;
  // FP32 master weights, or nullptr. With a master, the update runs on it and `param` receives an RNE copy;
  // without one, a bfloat16 `param` is updated in FP32 and written back with stochastic rounding.
  float* master = nullptr;
  const void* grad = nullptr;
  ElementType grad_type = ElementType::kFloat32;
  StateCodec codec = StateCodec::kFP32;  // as requested; effective_codec(codec, numel) decides the layout
  MomentView m;                          // AdamW exp_avg, SGD momentum buffer
  MomentView v;                          // AdamW exp_avg_sq (unused by SGD)
  int64_t* step = nullptr;               // completed steps of this tensor; the update adds one
  // Global index of element 0 for stochastic-rounding bits (Philox keyed by seed, step, index): distinct
  // ranges per tensor give independent bits, and a shard of a tensor gets the bits the whole tensor would.
  uint64_t index_base = 0;
};

// Philox counter offsets: stream s of step t uses offset 4 t + s, so the parameter write-back and the two
// bf16 moments draw independent bits.
inline constexpr uint64_t kStreamParam = 0, kStreamM = 1, kStreamV = 2;
NIBBLE_HOST_DEVICE constexpr uint64_t philox_offset(int64_t step, uint64_t stream) {
  return 4u * static_cast<uint64_t>(step) + stream;
}

}  // namespace nibble::optim
