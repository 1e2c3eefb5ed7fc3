#pragma once
// NIBBLE_HOST_DEVICE marks numerics that the CPU kernels and the CUDA kernels share: one definition, so the
// CPU tests check the exact arithmetic the GPU runs.
#if defined(__CUDACC__)
#define NIBBLE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define NIBBLE_HOST_DEVICE inline
#endif
