// CUDA quantization of one copy (quantize_cuda.h). The work is split so that every value a thread computes is
// computed by the CPU reference with the same operations:
//   block_amax_kernel  one thread per (row, block of the row): the max |x| of that run, folded into its block's
//                      (or 2-D tile's) amax with an integer atomicMax (max is exact in any order);
//   encode_kernel      one thread per (row, block): the block's scale (block_scale), stored once per stored
//                      scale, then the block's elements scaled, rounded (encode_scalar, Philox bits keyed by the
//                      element's index) and packed; FP4 blocks are even-sized, so a byte never straddles threads;
//   quest_kernel       one thread per 32-element group: the normalised Hadamard-32 in float64 (the reference
//                      sums of hadamard.h), sigma, the E8M0 code, the rounding and the clip mask;
//   rht16_kernel       one thread per (16-row group, column): rht16 (float64, index order), transposed out.
// Built with --fmad=false (precision/CMakeLists.txt): no multiply-add is fused that the CPU rounds twice.
#include <cfloat>
#include <string>

#include "precision/block_scale.h"
#include "precision/cuda/convert_cuda.h"
#include "precision/cuda/quantize_cuda.h"
#include "precision/error.h"
#include "precision/hadamard.h"
#include "precision/scaling.h"
#include "precision/scheme_facts.h"
#include "precision/stochastic.h"

namespace nibble::precision::cuda {
namespace {

constexpr int kThreads = 128;

unsigned grid_for(int64_t threads) { return static_cast<unsigned>((threads + kThreads - 1) / kThreads); }

// Elements along a row one thread takes: the scheme's block width, or a 128-wide slice of a per-tensor row.
int run_width(Scheme s) {
  const SchemeFacts f = scheme_facts(s);
  return f.block_cols > 0 ? f.block_cols : 128;
}

__device__ uint32_t random_bits(const CopyJob& j, int64_t i, int64_t c) {
  if (j.options.rounding != Rounding::kStochastic) return 0;
  const uint64_t index = j.sr_transposed ? j.sr.index(c, i) : j.sr.index(i, c);
  return stochastic_bits(j.options.seed, j.sr_offset, index, 8);
}

// Stores code `code` of copy element (i, c); fp4 codes pack two per byte, element 2p in the low nibble. The
// caller owns both elements of a pair (runs start at even columns).
__device__ void store_code(const CopyJob& j, int64_t i, int64_t c, uint32_t code, bool fp4) {
  uint8_t* row = j.out.data + i * j.layout.data_row_bytes;
  if (!fp4) {
    row[c] = static_cast<uint8_t>(code);
  } else if (c % 2 == 0) {
    row[c / 2] = static_cast<uint8_t>(code);
  } else {
    row[c / 2] = static_cast<uint8_t>(row[c / 2] | (code << 4));
  }
}

__global__ void block_amax_kernel(CopyJob j, int block_rows, int block_cols, int64_t amax_cols,
                                  unsigned int* block_amax) {
  const int64_t runs = (j.cols + block_cols - 1) / block_cols;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= j.rows * runs) return;
  const int64_t i = t / runs, b = t % runs;
  const int64_t c0 = b * block_cols, c1 = c0 + block_cols < j.cols ? c0 + block_cols : j.cols;
  float m = 0.0f;
  for (int64_t c = c0; c < c1; ++c) m = fmaxf(m, fabsf(j.src[i * j.cols + c]));
  // Non-negative floats order like their bit patterns, so an integer max is a float max.
  atomicMax(block_amax + (i / block_rows) * amax_cols + b, __float_as_uint(m));
}

__global__ void encode_kernel(CopyJob j, int run, int block_rows, int64_t amax_cols,
                              const unsigned int* __restrict__ block_amax) {
  const int64_t runs = (j.cols + run - 1) / run;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= j.rows * runs) return;
  const int64_t i = t / runs, b = t % runs;
  const QuantizeOptions& o = j.options;
  const SchemeFacts f = scheme_facts(o.scheme);
  const bool per_tensor = f.block_cols == 0;
  const float amax = per_tensor ? j.copy_amax : __uint_as_float(block_amax[(i / block_rows) * amax_cols + b]);
  const BlockScale s = block_scale(o, amax, j.value_for_inf, nvfp4_global_encode_scale(j.copy_amax));
  if (per_tensor) {
    if (t == 0) static_cast<float*>(j.out.scale)[0] = s.scale_inv;
  } else if (i % f.scale_row_div == 0) {
    const int64_t at = (i / f.scale_row_div) * j.layout.scale_cols + b;
    if (j.layout.scale_storage == ScaleStorage::kFloat32) {
      static_cast<float*>(j.out.scale)[at] = s.scale_inv;
    } else {
      static_cast<uint8_t*>(j.out.scale)[at] = static_cast<uint8_t>(s.code);
    }
  }
  const bool fp4 = o.element.bits() <= 4;
  const int64_t c0 = b * run, c1 = c0 + run < j.cols ? c0 + run : j.cols;
  for (int64_t c = c0; c < c1; ++c) {
    const uint32_t code =
        encode_scalar(j.src[i * j.cols + c] * s.multiplier, o.element, o.rounding, RandomBits{random_bits(j, i, c), 8});
    store_code(j, i, c, code, fp4);
  }
}

__global__ void quest_kernel(CopyJob j, uint32_t* transform_nan) {
  const int64_t groups = j.cols / 32;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= j.rows * groups) return;
  const int64_t i = t / groups, g = t % groups, c0 = g * 32;
  float x[32], h[32];
  for (int k = 0; k < 32; ++k) x[k] = j.src[i * j.cols + c0 + k];
  hadamard32_normalised(x, h);
  double sum = 0.0, sum_sq = 0.0;
  bool nan = false;
  for (int k = 0; k < 32; ++k) {
    nan = nan || isnan(h[k]);
    sum += h[k];
    sum_sq += static_cast<double>(h[k]) * h[k];  // exact: a product of two floats fits 53 bits
  }
  if (nan) atomicOr(transform_nan, 1u);
  const uint32_t e = quest_code_from_sums(sum, sum_sq);
  static_cast<uint8_t*>(j.out.scale)[i * j.layout.scale_cols + g] = static_cast<uint8_t>(e);
  const float m = e8m0_encode_multiplier(e);
  const QuantizeOptions& o = j.options;
  for (int k = 0; k < 32; ++k) {
    const float scaled = h[k] * m;
    j.out.mask[i * j.layout.cols + c0 + k] = fabsf(scaled) <= 6.0f ? 1 : 0;
    store_code(j, i, c0 + k, encode_scalar(scaled, o.element, o.rounding, RandomBits{random_bits(j, i, c0 + k), 8}),
               true);
  }
}

__global__ void rht16_kernel(const float* __restrict__ x, int64_t rows, int64_t cols, uint32_t sign_mask,
                             bool round_to_bf16, float* __restrict__ y) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= (rows / 16) * cols) return;
  // Consecutive threads take consecutive columns: the 16 loads of a group are coalesced across the warp.
  const int64_t g = t / cols, c = t % cols;
  float in[16], out[16];
  for (int k = 0; k < 16; ++k) in[k] = x[(g * 16 + k) * cols + c];
  rht16(in, sign_mask, out);
  for (int k = 0; k < 16; ++k) y[c * rows + g * 16 + k] = round_to_bf16 ? round_to_bf16_ieee(out[k]) : out[k];
}

__global__ void dequantize_kernel(QuantizedCopy q, CopyLayout L, QuantizeOptions o, float* __restrict__ out) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= L.rows * L.cols) return;
  const int64_t r = t / L.cols, c = t % L.cols;
  const bool fp4 = o.element.bits() <= 4;
  const uint8_t* row = q.data + r * L.data_row_bytes;
  const uint32_t code = fp4 ? (row[c / 2] >> ((c % 2) * 4)) & 0xFu : row[c];
  const float v = decode_scalar(code, o.element);
  const SchemeFacts f = scheme_facts(o.scheme);
  float result;
  if (f.block_cols == 0) {
    result = v * static_cast<const float*>(q.scale)[0];
  } else {
    const int64_t at = (r / f.scale_row_div) * L.scale_cols + c / f.block_cols;
    if (L.scale_storage == ScaleStorage::kFloat32) {
      result = v * static_cast<const float*>(q.scale)[at];
    } else if (L.scale_storage == ScaleStorage::kUE4M3) {
      const float nv_dec = 1.0f / nvfp4_global_encode_scale(*q.global_amax);
      result = v * decode_scalar(static_cast<const uint8_t*>(q.scale)[at], formats::kE4M3) * nv_dec;
    } else {
      result = v * e8m0_decode_multiplier(static_cast<const uint8_t*>(q.scale)[at]);
    }
  }
  out[t] = result;
}

}  // namespace

size_t copy_scratch_bytes(const CopyJob& j) {
  const SchemeFacts f = scheme_facts(j.options.scheme);
  if (f.block_cols == 0 || j.options.scheme == Scheme::kMXFP4Quest) return 0;
  const int64_t amax_rows = (j.rows + f.block_rows - 1) / f.block_rows;
  const int64_t amax_cols = (j.cols + f.block_cols - 1) / f.block_cols;
  return static_cast<size_t>(amax_rows * amax_cols) * sizeof(unsigned int);
}

void quantize_copy(const CopyJob& j, void* scratch, uint32_t* transform_nan, cudaStream_t stream) {
  if (j.rows <= 0 || j.cols <= 0) return;
  const QuantizeOptions& o = j.options;
  if (o.scheme == Scheme::kMXFP4Quest) {
    if (j.cols % 32 != 0)
      throw InvalidArgument("cuda::quantize_copy: QuEST groups need a multiple of 32 columns, got " +
                            std::to_string(j.cols));
    quest_kernel<<<grid_for(j.rows * (j.cols / 32)), kThreads, 0, stream>>>(j, transform_nan);
    check_cuda(cudaGetLastError(), "QuEST quantize kernel launch");
    return;
  }
  const SchemeFacts f = scheme_facts(o.scheme);
  const int run = run_width(o.scheme);
  const int64_t runs = j.rows * ((j.cols + run - 1) / run);
  int64_t amax_cols = 0;
  auto* block_amax = static_cast<unsigned int*>(scratch);
  if (f.block_cols > 0) {
    amax_cols = (j.cols + f.block_cols - 1) / f.block_cols;
    check_cuda(cudaMemsetAsync(block_amax, 0, copy_scratch_bytes(j), stream), "block amax reset");
    block_amax_kernel<<<grid_for(runs), kThreads, 0, stream>>>(j, f.block_rows, f.block_cols, amax_cols, block_amax);
    check_cuda(cudaGetLastError(), "block amax kernel launch");
  }
  encode_kernel<<<grid_for(runs), kThreads, 0, stream>>>(j, run, f.block_rows > 0 ? f.block_rows : 1, amax_cols,
                                                         block_amax);
  check_cuda(cudaGetLastError(), "quantize kernel launch");
}

void rht16_transpose(const float* x, int64_t rows, int64_t cols, uint32_t sign_mask, bool round_to_bf16, float* y,
                     cudaStream_t stream) {
  if (rows % 16 != 0)
    throw InvalidArgument("cuda::rht16_transpose: the 16-point RHT needs a multiple of 16 rows, got " +
                          std::to_string(rows));
  if (rows <= 0 || cols <= 0) return;
  rht16_kernel<<<grid_for((rows / 16) * cols), kThreads, 0, stream>>>(x, rows, cols, sign_mask, round_to_bf16, y);
  check_cuda(cudaGetLastError(), "RHT kernel launch");
}

void dequantize(const QuantizedCopy& copy, const CopyLayout& layout, const QuantizeOptions& options, float* out,
                cudaStream_t stream) {
  if (layout.rows <= 0 || layout.cols <= 0) return;
  dequantize_kernel<<<grid_for(layout.rows * layout.cols), kThreads, 0, stream>>>(copy, layout, options, out);
  check_cuda(cudaGetLastError(), "dequantize kernel launch");
}

}  // namespace nibble::precision::cuda
