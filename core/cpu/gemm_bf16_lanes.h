#pragma once
// The BF16 GEMM's fma32 micro-kernel and its widening, written once in Highway (gemm_bf16_lanes.cpp) and
// dispatched at run time to the best target the CPU has (AVX-512, AVX2, SSE4, NEON, SVE, ...): the GEMM
// kernel "hwy" (gemm_bf16.h), the default where the AVX-512 kernels are not compiled in. Every target gives
// the bits of the fma32, dpbf16 and scalar kernels (gemm_bf16_lanes.cpp says why). Without Highway
// (NIBBLE_HAVE_HWY unset) none of this exists and the GEMM keeps its other kernels.
#include <cstdint>

namespace nibble::core::cpu {

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
// `pairs` BF16 k-pairs (in[2p], in[2p + 1]) as FP32 bit patterns in the fma32 order: out[2p] = in[2p + 1]
// << 16, out[2p + 1] = in[2p] << 16 (exact: a BF16 value is the top half of its FP32).
void widen_pairs_swapped_lanes(const uint16_t* in, int64_t pairs, uint32_t* out);

// C[i * ldc + j] for i < rows, j < nr (<= kNr) over one packed B panel (gemm_bf16_panels.h): acc = sum over
// `steps` k of a[i * kLdaF + k] * b[k * kNr + j], one fused multiply-add per product in k order from zero;
// then C = C + acc when load_c, times alpha when scale, stored.
void fma32_panel_lanes(int rows, int nr, const float* a, const float* b, int64_t steps, float* c, int64_t ldc,
                       bool load_c, bool scale, float alpha);
#endif

}  // namespace nibble::core::cpu
