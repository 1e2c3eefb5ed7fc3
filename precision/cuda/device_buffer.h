#pragma once
// Owned device memory for host code that drives the CUDA kernels (GPU tests, benchmarks): cudaMalloc'd at
// construction (256-byte aligned), freed at destruction, not copyable.
#include <cuda_runtime_api.h>

#include <cstddef>

#include "precision/cuda/convert_cuda.h"

namespace nibble::precision::cuda {

struct DeviceBuffer {
  void* ptr = nullptr;
  explicit DeviceBuffer(size_t bytes) { check_cuda(cudaMalloc(&ptr, bytes > 0 ? bytes : 1), "cudaMalloc"); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace nibble::precision::cuda
