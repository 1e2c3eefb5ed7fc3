#pragma once
// QuantizedTensor: precision/'s quantized copies held in torch tensors, with the options that made them
// (scheme, element format, rounding). The one tensor-with-metadata type the GEMM, the Linear layer and
// activation compression pass around.
#include <torch/torch.h>

#include <optional>
#include <string>
#include <vector>

#include "precision/quantize.h"

namespace nibble::core {

struct QuantizedCopyTensor {
  torch::Tensor data;         // uint8 (rows, data_row_bytes)
  torch::Tensor scale;        // float32 or uint8 codes (scale_rows, scale_cols)
  torch::Tensor global_amax;  // 0-d float32
  torch::Tensor mask;         // QuEST clip mask (rows, cols) or undefined
  int64_t rows = 0;
  int64_t cols = 0;

  // Uninitialised buffers for one copy of `layout` on `device` (global_amax zeroed).
  static QuantizedCopyTensor empty(const precision::CopyLayout& layout, precision::Scheme scheme,
                                   const torch::Device& device);

  precision::QuantizedCopy view() const;  // raw pointers (device pointers for a CUDA copy)
  torch::Device device() const { return data.device(); }
  int64_t bytes() const;  // storage of data, scales and mask
};

struct QuantizedTensor {
  precision::QuantizeOptions options;
  std::optional<QuantizedCopyTensor> rowwise;     // (M, K), blocks along K
  std::optional<QuantizedCopyTensor> columnwise;  // (K, M) = transpose, blocks along M
  float input_amax = 0.0f;
  std::vector<int64_t> shape;  // the original input shape

  int64_t bytes() const;
};

// Quantizes a float32/bfloat16 tensor (leading dims flatten into M) on its device: the CPU quantizer for a CPU
// tensor, the CUDA one (bit for bit the same copies) for a CUDA tensor. `name` appears in errors.
QuantizedTensor quantize(const torch::Tensor& x, const precision::QuantizeOptions& options,
                         const std::string& name = "tensor");

// The amaxes quantize() would take a per-tensor factor from (precision::tensor_amax): a tensor-parallel rank
// reduces them over its group and passes the result back as QuantizeOptions::group_amax / group_rht_amax.
precision::TensorAmax tensor_amax(const torch::Tensor& x, bool rht, uint64_t rht_seed,
                                  const std::string& name = "tensor");

// Decodes one copy to float32 (rows, cols), on the copy's device.
torch::Tensor dequantize(const QuantizedCopyTensor& copy, const precision::QuantizeOptions& options);

}  // namespace nibble::core
