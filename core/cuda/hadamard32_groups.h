#pragma once
// Quartet's Hadamard-32 groups on the device: out[g*32 .. g*32+31] = hadamard32_butterfly of in's group g
// (core/hadamard32_butterfly.h, the CPU loop's arithmetic). Torch-free; core/linear.cpp calls it for CUDA tensors.
#include <cuda_runtime_api.h>

#include <cstdint>

namespace nibble::core::cuda {

void hadamard32_groups(const float* in, float* out, int64_t groups, cudaStream_t stream);
void hadamard32_groups(const double* in, double* out, int64_t groups, cudaStream_t stream);

}  // namespace nibble::core::cuda
