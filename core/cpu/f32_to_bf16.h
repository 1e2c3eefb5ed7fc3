#pragma once
// FP32 -> BF16 for the GEMM's dense operands (core/gemm.cpp rounds them while packing): round to nearest even
// with satfinite, as precision::encode_scalar to kBF16 does -- Inf and overflow give ±max (0x7F7F), NaN the
// canonical 0x7FC0. One plain loop of precision/bf16_bits.h's integer rule, which GCC vectorises at -O3 for whatever
// vector unit the build targets. On the 2-vCPU Zen 4 (one thread, 4096 floats in L1): 8.2 G elements/s in the
// AVX-512 build, 8% faster than the AVX-512 intrinsics it replaced, and 6.4 G/s in an x86-64-v3 (AVX2) build,
// 0.84x; before, builds without AVX-512 rounded each element through encode_scalar.
#include <cstdint>

namespace nibble::core::cpu {

// out[k] = precision::bf16_code_nearest(in[k]'s bits) for k < n (precision/bf16_bits.h: the rule).
void f32_to_bf16_row(const float* in, int64_t n, uint16_t* out);

}  // namespace nibble::core::cpu
