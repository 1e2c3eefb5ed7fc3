// CUDA rowwise 1-D block quantization: one thread per block of a row (16, 32 or 128 elements, or a 128-wide
// slice of a per-tensor-scaled row), so the block amax, its scale and the element rounding stay in one thread
// and call exactly the functions the CPU path calls.
#include <cfloat>

#include "precision/block_scale.h"
#include "precision/cuda/convert_cuda.h"
#include "precision/cuda/quantize_cuda.h"
#include "precision/error.h"
#include "precision/scaling.h"
#include "precision/stochastic.h"

namespace nibble::precision::cuda {
namespace {

constexpr int kThreads = 128;

__global__ void amax_kernel(const float* __restrict__ x, int64_t n, float* amax, uint32_t* nan_flag) {
  float local = 0.0f;
  bool nan = false;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float a = fabsf(x[i]);
    nan = nan || isnan(a);
    local = fmaxf(local, a);
  }
  // Non-negative floats order like their bit patterns, so an integer atomicMax is a float max.
  atomicMax(reinterpret_cast<unsigned int*>(amax), __float_as_uint(local));
  if (nan) atomicOr(nan_flag, 1u);
}

__global__ void quantize_rowwise_kernel(const float* __restrict__ x, int64_t rows, int64_t cols, int block,
                                        QuantizeOptions o, const float* __restrict__ global_amax,
                                        CopyLayout layout, QuantizedCopy out) {
  const int64_t blocks_per_row = (cols + block - 1) / block;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= rows * blocks_per_row) return;
  const int64_t r = t / blocks_per_row, c0 = (t % blocks_per_row) * block;
  const int64_t c1 = c0 + block < cols ? c0 + block : cols;
  const float* row = x + r * cols;
  const float amax = *global_amax;
  float block_amax = amax;
  if (o.scheme != Scheme::kFP8Tensor) {
    block_amax = 0.0f;
    for (int64_t c = c0; c < c1; ++c) block_amax = fmaxf(block_amax, fabsf(row[c]));
  }
  const BlockScale s = block_scale(o, block_amax, FLT_MAX, nvfp4_global_encode_scale(amax));
  if (o.scheme == Scheme::kFP8Tensor) {
    if (t == 0) static_cast<float*>(out.scale)[0] = s.scale_inv;
  } else if (layout.scale_storage == ScaleStorage::kFloat32) {
    static_cast<float*>(out.scale)[r * layout.scale_cols + c0 / block] = s.scale_inv;
  } else {
    static_cast<uint8_t*>(out.scale)[r * layout.scale_cols + c0 / block] = static_cast<uint8_t>(s.code);
  }
  if (t == 0) *out.global_amax = amax;
  const bool fp4 = o.element.bits() <= 4;
  uint8_t* dst = out.data + r * layout.data_row_bytes;
  for (int64_t c = c0; c < c1; ++c) {
    RandomBits bits{0, 8};
    if (o.rounding == Rounding::kStochastic)
      bits.value = stochastic_bits(o.seed, o.offset, sr_copy_indexing(o.sr_index, false, rows, cols).index(r, c), 8);
    const uint32_t code = encode_scalar(row[c] * s.multiplier, o.element, o.rounding, bits);
    if (!fp4) {
      dst[c] = static_cast<uint8_t>(code);
    } else if (c % 2 == 0) {
      dst[c / 2] = static_cast<uint8_t>(code);  // block starts are even: the pair lives in this thread
    } else {
      dst[c / 2] = static_cast<uint8_t>(dst[c / 2] | (code << 4));
    }
  }
}

}  // namespace

void amax(const float* x, int64_t n, float* amax_out, uint32_t* nan_flag, cudaStream_t stream) {
  if (n <= 0) return;
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  amax_kernel<<<static_cast<unsigned>(blocks < 1024 ? blocks : 1024), kThreads, 0, stream>>>(x, n, amax_out, nan_flag);
  check_cuda(cudaGetLastError(), "amax kernel launch");
}

void quantize_rowwise(const float* x, int64_t rows, int64_t cols, const QuantizeOptions& o, const float* global_amax,
                      const QuantizedCopy& out, cudaStream_t stream) {
  int block = 0;
  switch (o.scheme) {
    case Scheme::kFP8Tensor: block = 128; break;
    case Scheme::kFP8Block128: block = 128; break;
    case Scheme::kMXFP8: case Scheme::kMXFP4: block = 32; break;
    case Scheme::kNVFP4: block = 16; break;
    default:
      throw InvalidArgument("cuda::quantize_rowwise: " + scheme_name(o.scheme) +
                            " runs on the CPU path only so far (2-D tiles and QuEST have no CUDA kernel yet)");
  }
  if (rows <= 0 || cols <= 0) return;
  const CopyLayout layout = copy_layout(o, rows, cols);
  const int64_t threads = rows * ((cols + block - 1) / block);
  quantize_rowwise_kernel<<<static_cast<unsigned>((threads + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
      x, rows, cols, block, o, global_amax, layout, out);
  check_cuda(cudaGetLastError(), "quantize kernel launch");
}

}  // namespace nibble::precision::cuda
