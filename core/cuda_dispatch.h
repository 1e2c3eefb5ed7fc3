#pragma once
// The CUDA side of core/'s tensor operations: core::quantize, tensor_amax, dequantize and gemm hand tensors that
// live on a CUDA device to these functions (built only when NIBBLE_WITH_CUDA; without it the front-ends say the
// build has no CUDA kernels). They run precision/cuda's quantizers and core/cuda's cuBLASLt GEMM on the tensors'
// device and torch's current stream, after the same validation as the CPU path, so a CUDA tensor gives the CPU
// path's results: bit for bit for quantization, up to the order of FP32 sums for the GEMM.
#include <torch/torch.h>

#include <string>

#include "core/gemm.h"
#include "core/quantized_tensor.h"

namespace nibble::core {

QuantizedTensor quantize_on_cuda(const torch::Tensor& x, const precision::QuantizeOptions& options,
                                 const std::string& name);
precision::TensorAmax tensor_amax_on_cuda(const torch::Tensor& x, bool rht, uint64_t rht_seed,
                                          const std::string& name);
torch::Tensor dequantize_on_cuda(const QuantizedCopyTensor& copy, const precision::QuantizeOptions& options);

// The FP32 product A·Bᵀ (alpha applied, no bias or accumulation: core::gemm adds those) of a and b on one CUDA
// device, shapes and options already checked by core::gemm.
torch::Tensor gemm_on_cuda(const GemmOperand& a, const GemmOperand& b, const GemmOptions& options);

}  // namespace nibble::core
