#pragma once
// Which kernel multiplies two quantized operands on a given device, decided once per (scheme pair, device) and
// shown to the user (nibble-train's start-up line, Python's nibble.gemm_path). Torch- and CUDA-free, so the
// decision is unit-tested on any machine; core/cuda/gemm_cublaslt.cpp runs the CUDA paths it names.
//
//   CPU          kCpuEmulation   tiles decoded to exact BF16 values, BF16 dot kernel, FP32 sums (core/gemm.cpp)
//   any CUDA GPU kDequantizeBf16 the fallback for every pair without a tensor-core path (MXFP4 and Quartet on
//                                any GPU, NVFP4 / MXFP8 on Hopper, block FP8 on Blackwell, ExMy research formats,
//                                GPUs before sm_89): decoded on the device to BF16 with block scales folded in
//                                (FP32 when a scale does not fold exactly), cuBLAS GEMM, factors in alpha -- the
//                                CPU emulation's values up to the order of FP32 sums
//   sm_89+       kFP8Tensor      fp8_tensor x fp8_tensor (E4M3 x E4M3 fprop, E5M2 gradients; not E5M2 x E5M2),
//                                per-tensor scale pointers
//   sm_90        kFP8Block       fp8_block128 x {fp8_block128, fp8_block128x128} (VEC128_32F / BLK128x128_32F)
//   sm_100       kMXFP8          mxfp8 x mxfp8 (VEC32_UE8M0), swizzled scales
//   sm_100       kNVFP4          nvfp4[_2d] x nvfp4[_2d] (VEC16_UE4M3), the global amaxes folded into alpha
// The shape and alignment rules of the cuBLASLt paths are core/cuda/gemm_cublaslt.h's check_gemm.
#include <cstdint>
#include <string>

#include "core/recipe.h"
#include "precision/quantize.h"

namespace nibble::core {

enum class GemmPath : uint8_t { kCpuEmulation, kDequantizeBf16, kFP8Tensor, kFP8Block, kMXFP8, kNVFP4 };

// A device as the GEMM sees it: the CPU (cuda_sm = 0) or a CUDA GPU of compute capability major*10 + minor.
struct GemmDevice {
  int cuda_sm = 0;
  bool is_cuda() const { return cuda_sm > 0; }
  std::string name() const;  // "cpu", "cuda sm_90"
};

// The path for A x Bᵀ with quantized operands quantized as `a` and `b` (mixed formats allowed). Never throws:
// every pair has a path; whether a problem's shapes suit it is the kernel's check.
GemmPath choose_gemm_path(const precision::QuantizeOptions& a, const precision::QuantizeOptions& b, GemmDevice device);
// A high-precision operand (the bf16 recipe, or an unquantized role): BF16 cuBLAS on a GPU, the BF16 kernel on CPU.
GemmPath choose_dense_gemm_path(GemmDevice device);

// The three GEMMs of a Linear under a recipe (its operand roles, DESIGN.md's table): a GEMM with an unquantized
// operand takes the dense path.
struct LinearGemmPaths {
  GemmPath fprop, dgrad, wgrad;
};
LinearGemmPaths linear_gemm_paths(const Recipe& recipe, GemmDevice device);

const char* gemm_path_name(GemmPath path);  // "cuBLASLt NVFP4 (VEC16_UE4M3)", ...
bool is_tensor_core_path(GemmPath path);    // a native low-precision cuBLASLt kernel (not emulated)

}  // namespace nibble::core
