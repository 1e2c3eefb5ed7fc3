#pragma once
// The fused CPU optimizer step over a parameter group: per element, once, dequantize the moments, run the
// FP32 update, requantize, and write the parameter (master and model copy). Groups (fp8: 128, int8: 256)
// are independent, so OpenMP threads take fixed chunks of them; results never depend on the thread count.
#include <cstdint>
#include <span>

#include "optim/tensor_slot.h"
#include "optim/update_rules.h"

namespace nibble::optim {

struct UpdateOptions {
  uint64_t seed = 0;                // Philox key of every stochastic rounding in the step
  float grad_scale = 1.0f;          // gradients are multiplied by this on load (the clip coefficient)
  double lr_factor = 1.0;           // the LR schedule's factor for this step
  bool stochastic_rounding = true;  // master-less bfloat16 params: SR (true) or RNE (false) write-back
  bool dre_clamp_k = false;         // fp8: never compress a group (k >= 1), NUMERICS.md's option
};

// Validates every slot (InvalidArgument naming the slot and what is wrong), then updates all of them and
// adds one to each slot's step counter.
void adamw_update(std::span<const TensorSlot> slots, const AdamWHyper& hyper, const UpdateOptions& options);
void sgd_update(std::span<const TensorSlot> slots, const SgdHyper& hyper, const UpdateOptions& options);

// The codec on its own, outside a step (tests, tools, resharding): encode n floats into a moment's buffers
// (laid out by moment_layout(codec, n)) and decode them back. `is_signed` picks int8's signed (m) or
// unsigned (v) map; bf16 rounds stochastically with Philox (seed, offset) at indices index_base + i.
void encode_state(StateCodec codec, const float* x, int64_t n, const MomentView& out, bool is_signed, uint64_t seed = 0,
                  uint64_t offset = 0, uint64_t index_base = 0, bool dre_clamp_k = false);
void decode_state(StateCodec codec, const MomentView& in, int64_t n, bool is_signed, float* out);

}  // namespace nibble::optim
