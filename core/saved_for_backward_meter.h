#pragma once
// A meter of the bytes that autograd functions keep for backward (quantized copies, compressed
// activations, masks). Every nibble autograd function reports what it saves, so memory claims are measured
// from the saved tensors themselves. The count is per thread (autograd's engine runs a graph's nodes on the
// thread that called backward) and only grows until reset; callers read it as a difference around the code
// they measure (Python: nibble.nn.measure_saved_bytes), so two models in one process do not disturb each
// other's figures. Nothing numeric depends on it.
#include <cstdint>

namespace nibble::core {

void add_saved_bytes(int64_t bytes);
int64_t saved_bytes();
void reset_saved_bytes();

}  // namespace nibble::core
