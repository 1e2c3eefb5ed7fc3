#pragma once
// CUDA twins of the rowwise 1-D block quantizers (fp8_tensor, fp8_block128, mxfp8, nvfp4, mxfp4): the same
// scale rules (precision/scaling.h) and element rounding (precision/format.h) as precision/cpu/quantize_cpu.cpp.
// Not yet on the GPU: 2-D tiles, QuEST, and the columnwise/RHT copies (they run on the CPU path).
#include <cuda_runtime_api.h>

#include "precision/quantize.h"

namespace nibble::precision::cuda {

// max|x| of a float32 device array into *amax (device, zeroed by the caller); NaN sets *nan_flag.
void amax(const float* x, int64_t n, float* amax, uint32_t* nan_flag, cudaStream_t stream);

// Rowwise copy of an (rows, cols) float32 device matrix. `global_amax` is a device pointer holding the
// tensor amax (from amax()); `out` holds device buffers sized by copy_layout(options, rows, cols).
void quantize_rowwise(const float* x, int64_t rows, int64_t cols, const QuantizeOptions& options,
                      const float* global_amax, const QuantizedCopy& out, cudaStream_t stream);

}  // namespace nibble::precision::cuda
