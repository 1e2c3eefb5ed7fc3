#pragma once
// Quartet's Hadamard-32 groups on the CPU (hadamard32_last_dim in core/linear.h): core/hadamard32_butterfly.h's
// FP64 butterflies, the reference and the CUDA kernel's rule, done in eight vectors of 4 doubles. Each
// stage does the reference's own additions and subtractions (a + b into the pair's first element, a - b into
// its second, a the first), only several at once: stages 1 and 2 pair lanes inside a vector (the partner
// comes from a lane swap, and a blend keeps a + b or a - b per lane), stages 4, 8 and 16 pair whole vectors. Same
// IEEE operations on the same operands, so the same bits for every finite result, and a NaN wherever the
// reference has one (which NaN: GCC commutes some of the reference's own adds, so its payloads are the compiler's
// choice; test_hadamard32_lanes checks every group against hadamard32_butterfly). Written with the compiler's
// generic vectors (GCC and Clang), no intrinsics: builds with AVX or AVX-512 keep each vector in one register,
// 3.3x the scalar loop on Zen 4 (5.2 -> 1.6 cycles an element); other builds (SSE2-only, NEON) run the scalar loop,
// where the compiler's lowering of these vectors was slower than it.
#include <cstdint>

namespace nibble::core::cpu {

// out[g * 32 + j] = hadamard32_butterfly(in + g * 32)[j] for g < groups (in and out may not overlap).
void hadamard32_groups_lanes(const float* in, float* out, int64_t groups);
void hadamard32_groups_lanes(const double* in, double* out, int64_t groups);

}  // namespace nibble::core::cpu
