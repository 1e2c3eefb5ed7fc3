// nibble's row-major block scales -> the layouts cuBLASLt reads (the maps and their sources are in
// scale_swizzle.h). One thread per slot of the padded scale matrix; the maps are bijections onto the padded
// layout, so every destination element is written exactly once (padding with zero) and nothing is read
// outside the source matrix.
#include "core/cuda/scale_swizzle.h"
#include "precision/cuda/convert_cuda.h"
#include "precision/error.h"

namespace nibble::core::cuda {
namespace {

constexpr int kThreads = 256;

template <class T>
__global__ void swizzle_kernel(GemmScaleLayout layout, const T* __restrict__ src, int64_t rows, int64_t cols,
                               T* __restrict__ dst) {
  const int64_t padded_rows = swizzled_rows(layout, rows), padded_cols = swizzled_cols(layout, cols);
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= padded_rows * padded_cols) return;
  const int64_t r = i / padded_cols, c = i % padded_cols;
  dst[gemm_scale_index(layout, r, c, rows, cols)] = (r < rows && c < cols) ? src[r * cols + c] : T(0);
}

}  // namespace

void swizzle_scales(GemmScaleLayout layout, const void* src, int64_t rows, int64_t cols, void* dst,
                    cudaStream_t stream) {
  if (rows <= 0 || cols <= 0)
    throw InvalidArgument("swizzle_scales: the scale matrix must be non-empty, got " + std::to_string(rows) +
                          " x " + std::to_string(cols));
  const int64_t n = swizzled_size(layout, rows, cols);
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  if (layout == GemmScaleLayout::kTiled128x4) {
    swizzle_kernel<uint8_t><<<blocks, kThreads, 0, stream>>>(layout, static_cast<const uint8_t*>(src), rows, cols,
                                                             static_cast<uint8_t*>(dst));
  } else {
    swizzle_kernel<float><<<blocks, kThreads, 0, stream>>>(layout, static_cast<const float*>(src), rows, cols,
                                                           static_cast<float*>(dst));
  }
  precision::cuda::check_cuda(cudaGetLastError(), "swizzle_scales kernel launch");
}

}  // namespace nibble::core::cuda
