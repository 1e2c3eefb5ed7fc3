#pragma once
// Quantization statistics: how far a quantized copy is from the high-precision tensor it encodes. What a user of
// low-precision training asks of every GEMM operand -- is this layer's x, w or dy hurt, and how (docs/STATS.md):
// the amax, the range of decode scales the blocks use, the fractions of elements flushed to zero and clamped at
// the format's largest magnitude, the signal-to-quantization-noise ratio, and for stochastic rounding the mean
// rounding bias.
//
// The figures are kept as sums (QuantizationErrorSums) so that micro-batches, tensor-parallel shards and data-
// parallel replicas add up before the ratios are taken: a record reduced over a layout's ranks describes the whole
// tensor. A rank that holds a replicated operand (tp's replicated input) adds its copy once more, which changes
// no ratio.
#include <torch/torch.h>

#include <limits>
#include <nlohmann/json.hpp>

#include "core/quantized_tensor.h"

namespace nibble::core {

struct QuantizationErrorSums {
  double elements = 0;   // elements measured
  double nonzero = 0;    // of them, non-zero in the high-precision tensor
  double flushed = 0;    // non-zero there and zero after quantization
  double clamped = 0;    // larger in magnitude than the largest value their block can represent
  double signal = 0;     // sum x^2
  double noise = 0;      // sum (q - x)^2
  double error = 0;      // sum (q - x)
  double magnitude = 0;  // sum |x|
  // Maxima (the minimum scale is kept negated so every field reduces with max): the amax of the tensor the copy
  // encodes, and log2 of the largest and smallest decode scale over blocks holding a non-zero element.
  double amax = 0;
  double log2_scale_max = -std::numeric_limits<double>::infinity();
  double neg_log2_scale_min = -std::numeric_limits<double>::infinity();
  bool stochastic = false;    // the copy was stochastically rounded (the bias is reported for these)
  bool scales_known = false;  // the scale range and clamping were measured (GEMM operand copies, not states)

  void add(const QuantizationErrorSums& other);
  // For reductions over ranks: the sums and the maxima (with the flags as 0/1) as flat arrays, to be reduced
  // with sum and max respectively. A rank without the operand stores QuantizationErrorSums{}, which adds nothing.
  static constexpr int kSumFields = 8, kMaxFields = 5;
  void store(double* sums, double* maxes) const;
  static QuantizationErrorSums load(const double* sums, const double* maxes);
};

// Measures one copy of `q` (columnwise: the copy of the transpose) against `source`, the 2-D tensor that was
// quantized (its rows are the copy's rows, or its columns for a columnwise copy). A copy the quantizer transformed
// -- NVFP4's RHT'd columnwise copy, QuEST's Hadamard-32 -- is measured against the same transform of the source
// (both are orthogonal, so the error is the same in either domain; the amax is the transformed tensor's).
// A host copy is measured in one fused pass over its codes and scales; a device copy by
// measure_copy_reference.
QuantizationErrorSums measure_copy(const torch::Tensor& source, const QuantizedCopyTensor& copy,
                                   const precision::QuantizeOptions& options, bool columnwise);
// The same figures from torch operations on any device: the copy decoded by dequantize, each element's largest
// magnitude by decoding the copy with every code at the format's largest magnitude. What the fused host pass is
// tested against (tests/core/test_quantization_stats.cpp), as precision/'s kernels are against their references.
QuantizationErrorSums measure_copy_reference(const torch::Tensor& source, const QuantizedCopyTensor& copy,
                                             const precision::QuantizeOptions& options, bool columnwise);

// The figures of decoded values `q` against the values `x` they encode (n each), where no block scales are at
// hand (compressed optimizer states, optim/state_codec.h): everything but the scale range and clamping.
QuantizationErrorSums measure_values(const float* x, const float* q, int64_t n, bool stochastic);

// The figures a record shows: {"amax", "scale_log2": [min, max], "flushed", "clamped", "snr_db", "bias"} -- the
// fractions of non-zero elements flushed and of all elements clamped, the SNR in dB (null when the copy is exact),
// and the bias sum(q - x) / sum|x| for a stochastically rounded copy only (scale_log2 and clamped only where the
// scales were known). Null for a copy of zero elements.
nlohmann::ordered_json stats_json(const QuantizationErrorSums& s);

}  // namespace nibble::core
