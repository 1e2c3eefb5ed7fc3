#pragma once
// Optimizer state of one tensor as bytes and back, bit for bit: the step counter, every moment's codes
// and side data (scales, k, centres) and the FP32 master if there is one. Little-endian raw copies behind a
// small header; loading checks the header against the receiving slot and names any mismatch.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "optim/tensor_slot.h"

namespace nibble::optim {

// `moments`: 2 for AdamW (m, v), 1 for SGD with momentum, 0 for plain SGD.
std::vector<uint8_t> serialize_tensor_state(const TensorSlot& slot, int moments);

// Writes the state in `bytes` into the slot's buffers (step, moments, master). Throws InvalidArgument when
// the bytes are not a state blob, or were saved for another codec, size, moment count or master setting.
void deserialize_tensor_state(const uint8_t* bytes, size_t size, const TensorSlot& slot, int moments);

}  // namespace nibble::optim
