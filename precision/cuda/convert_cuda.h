#pragma once
// CUDA twins of precision/convert.h: the same rounding (precision/format.h) and the same stochastic bits
// (precision/stochastic.h) as the CPU kernels, so a GPU run equals the CPU run bit for bit.
// All pointers are device pointers; work is queued on `stream` and nothing synchronises.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "precision/convert.h"

namespace nibble::precision::cuda {

// Bits of the device status word the encode kernels set (atomicOr).
enum EncodeStatus : uint32_t { kStatusNaN = 1u, kStatusNegative = 2u };

// `status` (device, one uint32, zeroed by the caller) receives EncodeStatus bits; after synchronising, pass
// the host copy to check_encode_status() to raise the same errors the CPU path raises.
void encode_f32(const float* x, size_t n, const Format& fmt, const EncodeOptions& options, uint8_t* codes,
                uint32_t* status, cudaStream_t stream, uint64_t index_base = 0);
void encode_bf16(const uint16_t* x, size_t n, const Format& fmt, const EncodeOptions& options, uint8_t* codes,
                 uint32_t* status, cudaStream_t stream, uint64_t index_base = 0);
void decode_to_f32(const uint8_t* codes, size_t n, const Format& fmt, float* out, cudaStream_t stream);

void check_encode_status(uint32_t status, const Format& fmt, const EncodeOptions& options);

// Throws nibble::Error with the CUDA error string if `err` is not cudaSuccess.
void check_cuda(cudaError_t err, const char* what);

}  // namespace nibble::precision::cuda
