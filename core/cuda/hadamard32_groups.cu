// One thread per group of 32 (core/cuda/hadamard32_groups.h).
#include "core/cuda/hadamard32_groups.h"
#include "core/hadamard32_butterfly.h"
#include "precision/cuda/convert_cuda.h"

namespace nibble::core::cuda {
namespace {

constexpr int kThreads = 128;

template <typename T>
__global__ void groups_kernel(const T* __restrict__ in, T* __restrict__ out, int64_t groups) {
  const int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (g < groups) hadamard32_butterfly(in + g * 32, out + g * 32);
}

template <typename T>
void launch(const T* in, T* out, int64_t groups, cudaStream_t stream) {
  if (groups <= 0) return;
  groups_kernel<<<static_cast<unsigned>((groups + kThreads - 1) / kThreads), kThreads, 0, stream>>>(in, out, groups);
  precision::cuda::check_cuda(cudaGetLastError(), "hadamard32 kernel launch");
}

}  // namespace

void hadamard32_groups(const float* in, float* out, int64_t groups, cudaStream_t stream) {
  launch(in, out, groups, stream);
}
void hadamard32_groups(const double* in, double* out, int64_t groups, cudaStream_t stream) {
  launch(in, out, groups, stream);
}

}  // namespace nibble::core::cuda
