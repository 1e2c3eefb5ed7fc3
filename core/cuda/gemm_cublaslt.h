#pragma once
// The CUDA GEMM path: C = A · Bᵀ on nibble's quantized copies with cuBLASLt (DESIGN.md "Backends"), the
// semantics of core/gemm.h on raw device pointers: A (M, K) and B (N, K) are copies with K as their
// contiguous last dim (a rowwise copy, or a columnwise copy, which nibble stores transposed), FP32
// accumulation, output FP32 or BF16, optional bias (N,) and accumulation into C.
//
// Row-major onto cuBLAS's column-major API: a row-major (R, K) matrix is a column-major (K, R) matrix with
// ld = K, so C(M, N) = A·Bᵀ row-major is Cᵀ(N, M) = op(B)·op(A) column-major: cuBLAS "A" := nibble B with
// transa = T, cuBLAS "B" := nibble A with transb = N; m = N, n = M, k = K, lda = ldb = K, ldc = ldd = N.
// That is the "TN" layout, the only one Hopper's FP8 kernels and every FP4/block-scaled kernel accept
// (cuBLAS docs, cublasLtMatmul FP8 requirements; TE cublaslt_gemm.cu CanonicalizeGemmInput).
//
// Paths (core/gemm_path.h choose_gemm_path decides from the two schemes and the device; check_gemm validates
// the problem for that path and names the valid pairs when the wrapper cannot run it):
//   kFP8Tensor   fp8_tensor x fp8_tensor (E4M3/E5M2, not E5M2 x E5M2), sm_89+. The copies' scale arrays
//                are their decode scales (scale_inv) and go to CUBLASLT_MATMUL_DESC_{A,B}_SCALE_POINTER.
//   kMXFP8       mxfp8 x mxfp8, VEC32_UE8M0, Blackwell (sm_100) only.
//   kNVFP4       nvfp4[_2d] x nvfp4[_2d], VEC16_UE4M3, sm_100 only; alpha = S_dec(A) * S_dec(B) on device.
//   kFP8Block    fp8_block128 x {fp8_block128, fp8_block128x128} and fp8_block128x128 x fp8_block128
//                (VEC128_32F / BLK128x128_32F; 2-D x 2-D is not offered), Hopper (sm_90) only.
//   kDequantizeBf16  any pair of {nvfp4, nvfp4_2d, mxfp4, mxfp4_quest} elsewhere (and MXFP4 everywhere):
//                decode to BF16 with block scales folded in (fp4_decode.h), BF16 cuBLASLt GEMM, global
//                factors in alpha.
// Block scales are converted from nibble's row-major arrays to cuBLAS's layouts in the workspace
// (scale_swizzle.h, which names the source of every layout).
//
// Shape and alignment rules checked before any CUDA call (InvalidArgument names the rule, the value and
// what would be valid); for the native (non-emulated) paths, from the cuBLAS "Tensor Core usage" and FP8
// rules as TE's cublaslt_gemm.cu enforces them ("Caller must pad"):
//   - data, output pointers 16-byte aligned; each data row a multiple of 16 bytes (lda % 16 == 0:
//     K % 16 for FP8, K % 32 for FP4);
//   - (m * sizeof(Ctype)) % 16 == 0 with m = N: N % 4 (float32 output) or N % 8 (bfloat16 output);
//   - block-scaled modes: whole blocks along K (MXFP8 K % 32, FP8 block K % 128) and M % 16, N % 16 (TE's
//     NVFP4 "both dims divisible by 16"; TE's block-FP8 GEMM asks M % 8 / N % 8, this wrapper asks 16).
// bias: BF16 (N,) device vector (cuBLASLt's FP8 kernels take no FP32 bias with FP32 output: the bias
// type is BF16 there; XLA #60306). accumulate: out is FP32 (M, N), read and written (beta = 1).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "core/gemm_path.h"
#include "precision/quantize.h"

namespace nibble::core::cuda {

// One operand: a quantized copy in device memory, its layout (copy_layout(options, rows, K)) and options.
struct DeviceOperand {
  precision::QuantizedCopy copy;  // data, scale (as quantize wrote them), global_amax (NVFP4)
  precision::CopyLayout layout;
  precision::QuantizeOptions options;

  std::string describe() const;
};

enum class OutputType : uint8_t { kFloat32, kBFloat16 };

struct GemmArgs {
  DeviceOperand a;                 // (M, K)
  DeviceOperand b;                 // (N, K)
  void* out = nullptr;             // (M, N) row-major
  OutputType out_type = OutputType::kFloat32;
  bool accumulate = false;         // out += A·Bᵀ (+ bias); out must be float32
  const void* bias = nullptr;      // (N,) bfloat16, added to every row, or null
  bool fast_accumulation = false;  // FP8 paths only: cuBLASLt FAST_ACCUM (Hopper's unpromoted FP8 sums);
                                   // off = FP32 accumulation like the CPU path. Ignored by FP4/BF16 GEMMs.
  std::string name = "gemm";       // used in error messages
};

using core::GemmPath;  // kCpuEmulation never reaches this wrapper
// The device dequantize fallback is implemented for FP4 pairs only so far (fp4_decode.h): check_gemm refuses
// an 8-bit pair that has no tensor-core path on the device, naming the GPUs that have one.

// Validates the problem for a device of compute capability `sm` (major * 10 + minor, e.g. 90, 100) and
// returns the path it takes. Host-only: reads no device memory (pointers are checked for alignment only).
GemmPath check_gemm(const GemmArgs& args, int sm);

// Device scratch gemm() needs (256-byte aligned; swizzled scales, decoded FP4 operands, alpha/beta, and
// cuBLASLt's own workspace).
size_t gemm_workspace_bytes(const GemmArgs& args, int sm);

// Compute capability of the current device as major * 10 + minor.
int current_device_sm();

// Queues the GEMM on `stream` (nothing synchronises). `workspace` holds gemm_workspace_bytes(args, sm).
void gemm(const GemmArgs& args, void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // namespace nibble::core::cuda
