#pragma once
// Hopper emulation of FP4 GEMMs (Hopper's tensor cores have no FP4 inputs; cuBLASLt's VEC16_UE4M3 mode is
// Blackwell-only): each FP4 copy is decoded to BF16 with its block scale folded in, the BF16 GEMM runs on
// cuBLASLt with FP32 accumulation, and the tensor-wide factors go into alpha. The split is core/gemm.cpp's
// (plan_for), so the GPU result is the CPU result up to FP32 summation order:
// - NVFP4 (and NVFP4 2-D): element (E2M1) x block scale (E4M3) has at most 6 significant bits and lies in
//   [2^-10, 2688]: an exact BF16 normal. The global decode scale 1/S_enc goes into alpha.
// - E8M0 scales (MXFP4, QuEST): the largest power of two in use, 2^(ref - 127), goes into alpha and each
//   block keeps 2^(code - ref) (exact). Unlike the CPU path, which switches to FP32 when a block sits so far
//   below the largest one that its values leave BF16's normal range (more than 2^125 below it), the GPU
//   path flushes those values: their contribution is below 2^-125 of the largest block's, far under the
//   FP32 accumulation's rounding.
// All pointers are device pointers; work is queued on `stream`, nothing synchronises.
#include <cuda_runtime_api.h>

#include <cstdint>

#include "precision/quantize.h"

namespace nibble::core::cuda {

bool is_fp4_scheme(precision::Scheme scheme);     // NVFP4, NVFP4_2D, MXFP4, MXFP4Quest
bool has_e8m0_scales(precision::Scheme scheme);   // MXFP4, MXFP4Quest (and MXFP8)

// The tensor-wide factor that decoding leaves out of one operand.
struct Fp4GlobalFactor {
  bool e8m0 = false;                   // false: NVFP4 (1 / S_enc from global_amax); true: 2^(ref_code - 127)
  const float* global_amax = nullptr;  // NVFP4: the copy's global_amax
  const uint32_t* ref_code = nullptr;  // E8M0: written by fp4_reference_code
};

// *ref_code = the largest E8M0 code (NaN code 0xFF excluded) among `n` scale codes.
void fp4_reference_code(const uint8_t* scale_codes, int64_t n, uint32_t* ref_code, cudaStream_t stream);

// Decodes an FP4 copy (layout = copy_layout(options, rows, cols)) to row-major BF16 bits, `out` holding
// rows x cols values with leading dimension cols. `ref_code` is required for E8M0-scaled copies.
void fp4_decode_bf16(const precision::QuantizedCopy& copy, const precision::CopyLayout& layout,
                     const precision::QuantizeOptions& options, const uint32_t* ref_code, uint16_t* out,
                     cudaStream_t stream);

// alpha_beta[0] = factor(a) * factor(b) (in double, rounded once to FP32, as core/gemm.cpp does);
// alpha_beta[1] = beta. For cuBLASLt's CUBLASLT_POINTER_MODE_DEVICE.
void gemm_alpha(const Fp4GlobalFactor& a, const Fp4GlobalFactor& b, float beta, float* alpha_beta,
                cudaStream_t stream);

// BF16 bits -> FP32 (exact): the emulated GEMM's bias when its output is FP32 (cuBLASLt's BF16 GEMMs take
// the bias in the output type).
void bf16_to_f32(const uint16_t* in, int64_t n, float* out, cudaStream_t stream);

}  // namespace nibble::core::cuda
