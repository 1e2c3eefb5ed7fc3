#pragma once
// A BF16 x BF16 -> FP32 GEMM for the CPU: C = alpha · (A · Bᵀ) with A (M x K) and B (N x K) both
// K-contiguous (the "TN" layout every nibble GEMM uses), FP32 accumulation of exact BF16 products.
// Four micro-kernels give the same bits (for inputs and sums without subnormals): AVX512_BF16 vdpbf16ps,
// AVX-512 FP32 FMAs on the values widened to FP32, the same FMAs written in Highway for every vector target
// (gemm_bf16_lanes.h), and a portable scalar loop; the default is the faster of the first two on this CPU's
// vendor (gemm_bf16.cpp says why), the Highway one on builds without AVX512_BF16.
//
// Operands are not passed as arrays: a RowSource decodes any rows x k-range of an operand to BF16 on
// demand, so a quantized operand is decoded block by block (K is cut into blocks of at most
// gemm_bf16_k_block() columns) into packed panels and never exists as a full high-precision copy.
#include <cstdint>
#include <functional>

namespace nibble::core::cpu {

// Writes rows [row0, row0 + nrows) x columns [k0, k0 + kc) of an operand as BF16 bit patterns into
// out[r * ld + k]. Must be safe to call from several threads at once. The GEMM calls it once per panel
// (up to a few hundred rows x one K block), never per element, so a std::function costs nothing here.
using RowSource = std::function<void(int64_t row0, int64_t nrows, int64_t k0, int64_t kc, uint16_t* out, int64_t ld)>;

// Which micro-kernel multiplies the packed panels. kAuto: gemm_default_kernel().
enum class GemmKernel { kAuto, kFma32, kDpbf16, kHwy, kScalar };

// C[m * ldc + n] = alpha * sum_k A[m, k] * B[n, k] for m < M, n < N (overwrites C). The sum is
// accumulated in FP32 and multiplied by alpha once, at the end (alpha = 1 leaves it untouched).
void gemm_bf16_tn(int64_t M, int64_t N, int64_t K, const RowSource& a, const RowSource& b, float* c, int64_t ldc,
                  float alpha = 1.0f, GemmKernel kernel = GemmKernel::kAuto);

// The largest K range one RowSource call asks for.
int64_t gemm_bf16_k_block();

// "fma32", "dpbf16", "hwy", "scalar" (and "auto").
const char* gemm_kernel_name(GemmKernel kernel);

// True when this build has the kernel (fma32 and dpbf16 need AVX512_BF16 at compile time, hwy Highway).
bool gemm_kernel_available(GemmKernel kernel);

// The kernel kAuto means, decided once: NIBBLE_CPU_GEMM_KERNEL=fma32|dpbf16|hwy|scalar when set (an unknown or
// uncompiled name throws std::invalid_argument naming it and the valid ones), else dpbf16 on AMD CPUs, fma32
// on others, hwy without AVX512_BF16 (scalar without Highway either).
GemmKernel gemm_default_kernel();

}  // namespace nibble::core::cpu
