#pragma once
// CUDA twins of the CPU quantizers (precision/cpu/quantize_cpu.cpp) for every scheme: the same scale rules
// (precision/block_scale.h, scaling.h), element rounding (format.h), Hadamard sums (hadamard.h) and
// stochastic-rounding bits (stochastic.h), called from device code, so each copy equals the CPU's bit for bit.
//
// The CPU quantizer walks the input once and makes both copies from a tile in cache; the CUDA one fills one
// copy per call from a float32 matrix already in that copy's coordinates: the input itself (rowwise), its
// transpose (columnwise; core/ makes it with torch), or rht16_transpose's output (NVFP4's RHT'd columnwise
// copy). A 2-D scheme's columnwise copy is the rowwise codes transposed; since its tiles are square, it is the
// 2-D quantization of the transpose, drawing the rowwise copy's SR bits (CopyJob::sr_transposed).
//
// Checks on the input (NaN, the group amaxes) are the caller's, before any call here: core/'s CUDA glue runs
// validate_quantize and copy_amaxes from precision/quantize.h, exactly as the CPU quantizer does.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "precision/quantize.h"

namespace nibble::precision::cuda {

// One copy to fill: from `src` (rows, cols), row-major float32 on the device, in the copy's coordinates.
struct CopyJob {
  const float* src = nullptr;
  int64_t rows = 0;
  int64_t cols = 0;
  QuantizeOptions options;
  CopyLayout layout;        // copy_layout(options, rows, cols)
  QuantizedCopy out;        // device buffers sized by layout; out.global_amax is the caller's to write
  float copy_amax = 0.0f;   // the tensor-wide amax the per-tensor factor comes from (fp8_tensor, NVFP4)
  float value_for_inf = 0;  // FLT_MAX, or kBF16Max for a bfloat16 input (block FP8's overflow fallback)
  uint64_t sr_offset = 0;   // options.offset, + kColumnwiseSrOffset for a 1-D columnwise copy
  SrCopyIndexing sr;        // SR index of copy element (i, j): sr.index(i, j) ...
  bool sr_transposed = false;  // ... or sr.index(j, i) (a 2-D columnwise copy takes the rowwise copy's bits)
};

// Device scratch quantize_copy needs (the block amaxes of block-scaled schemes; 0 for the others).
size_t copy_scratch_bytes(const CopyJob& job);

// Fills job.out's data, scales and (QuEST) mask. `scratch`: copy_scratch_bytes(job) bytes of device memory.
// `transform_nan` (device, zeroed by the caller) is set when a QuEST Hadamard-32 group is NaN (a group holding
// both +Inf and -Inf); nothing else is reported from the device.
void quantize_copy(const CopyJob& job, void* scratch, uint32_t* transform_nan, cudaStream_t stream);

// NVFP4's columnwise copy under the 16-point RHT: y (cols, rows) row-major, y[c][g*16 + j] = rht16 of
// x[g*16 .. g*16 + 15][c] (rows % 16 == 0), rounded to bfloat16 (IEEE, as TE's tensor-core RHT output) when the
// input was bfloat16. The amax of y is the columnwise copy's own amax.
void rht16_transpose(const float* x, int64_t rows, int64_t cols, uint32_t sign_mask, bool round_to_bf16, float* y,
                     cudaStream_t stream);

// Decodes one copy to float32 (rows, cols), as precision::dequantize does on the CPU (QuEST and RHT copies decode
// to the transformed domain). Every pointer is device memory, the global amax included.
void dequantize(const QuantizedCopy& copy, const CopyLayout& layout, const QuantizeOptions& options, float* out,
                cudaStream_t stream);

}  // namespace nibble::precision::cuda
