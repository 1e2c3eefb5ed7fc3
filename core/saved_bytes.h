#pragma once
// A meter of the bytes that autograd functions keep for backward (quantized copies, compressed
// activations, masks). Every nibble autograd function reports what it saves, so memory claims are measured
// from the saved tensors themselves. The count is per thread and only grows until reset.
#include <cstdint>

namespace nibble::nn {

void add_saved_bytes(int64_t bytes);
int64_t saved_bytes();
void reset_saved_bytes();

}  // namespace nibble::nn
