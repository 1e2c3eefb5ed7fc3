#pragma once
// Quartet's Hadamard-32 groups on the CPU (hadamard32_last_dim in core/linear.h): core/hadamard32_butterfly.h's
// FP64 butterflies, the reference and the CUDA kernel's rule, done four vectors of 8 doubles at a time. Each
// stage does the reference's own additions and subtractions (a + b into the pair's first element, a - b into
// its second, a the first), only several at once: stages 1, 2 and 4 pair lanes inside a vector (the partner
// comes from a lane swap, and a blend keeps a + b or a - b per lane), stages 8 and 16 pair whole vectors. Same
// IEEE operations with the same operands in the same order, so the same bits, NaN payloads included
// (test_hadamard32_lanes checks every group against hadamard32_butterfly). Written with the compiler's generic
// vectors (GCC and Clang): AVX-512 builds keep each vector in one register, AVX2 and NEON builds in two or four,
// with no intrinsics to port. ~5x the scalar loop on Zen 4.
#include <cstdint>

namespace nibble::core::cpu {

// out[g * 32 + j] = hadamard32_butterfly(in + g * 32)[j] for g < groups (in and out may not overlap).
void hadamard32_groups_lanes(const float* in, float* out, int64_t groups);
void hadamard32_groups_lanes(const double* in, double* out, int64_t groups);

}  // namespace nibble::core::cpu
