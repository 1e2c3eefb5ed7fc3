// FP4 copies -> BF16 with the block scale folded in (the Hopper FP4 emulation; the rules are in
// fp4_decode.h). One thread per packed byte (two elements, low nibble first), so a row's bytes are read
// coalesced and every element calls the shared scalar decoders of precision/format.h.
#include <cuda_bf16.h>

#include <cmath>
#include <string>

#include "core/cuda/fp4_decode.h"
#include "precision/cuda/convert_cuda.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "precision/scaling.h"
#include "precision/scheme_facts.h"

namespace nibble::core::cuda {
namespace {

using precision::Scheme;

constexpr int kThreads = 256;

unsigned grid_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

__global__ void reference_code_kernel(const uint8_t* __restrict__ codes, int64_t n, uint32_t* ref_code) {
  uint32_t local = 0;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const uint32_t c = codes[i];
    if (c != 0xFFu && c > local) local = c;
  }
  atomicMax(ref_code, local);
}

struct DecodeArgs {
  const uint8_t* data;
  int64_t row_bytes;
  int64_t rows;
  int64_t cols;
  const uint8_t* scale_codes;
  int64_t scale_cols;
  int block;
  precision::Format element;
  bool e8m0;
  const uint32_t* ref_code;
  uint16_t* out;
};

__device__ float block_fold(const DecodeArgs& a, uint32_t code, uint32_t ref) {
  if (!a.e8m0) return precision::decode_scalar(code, precision::formats::kE4M3);
  if (code == 0xFFu) return __uint_as_float(0x7FC00000u);  // E8M0 NaN
  return ldexpf(1.0f, static_cast<int>(code) - static_cast<int>(ref));  // exact; 0 below FP32's range
}

__global__ void decode_kernel(DecodeArgs a) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= a.rows * a.row_bytes) return;
  const int64_t r = t / a.row_bytes, j = t % a.row_bytes;
  const uint32_t byte = a.data[r * a.row_bytes + j];
  const uint32_t ref = a.e8m0 ? *a.ref_code : 0u;
  for (int half = 0; half < 2; ++half) {
    const int64_t k = 2 * j + half;
    if (k >= a.cols) break;
    const uint32_t code = (byte >> (4 * half)) & 0xFu;
    const float fold = block_fold(a, a.scale_codes[r * a.scale_cols + k / a.block], ref);
    const float v = precision::decode_scalar(code, a.element) * fold;  // exact (see fp4_decode.h)
    a.out[r * a.cols + k] = __bfloat16_as_ushort(__float2bfloat16_rn(v));
  }
}

__device__ double global_factor(const Fp4GlobalFactor& f) {
  if (f.e8m0) return ldexp(1.0, static_cast<int>(*f.ref_code) - 127);
  return 1.0 / static_cast<double>(precision::nvfp4_global_encode_scale(*f.global_amax));
}

__global__ void alpha_kernel(Fp4GlobalFactor a, Fp4GlobalFactor b, float beta, float* alpha_beta) {
  alpha_beta[0] = static_cast<float>(global_factor(a) * global_factor(b));
  alpha_beta[1] = beta;
}

__global__ void bf16_to_f32_kernel(const uint16_t* __restrict__ in, int64_t n, float* __restrict__ out) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = __uint_as_float(static_cast<uint32_t>(in[i]) << 16);
}

void check_factor(const Fp4GlobalFactor& f, const char* which) {
  if (f.e8m0 ? f.ref_code == nullptr : f.global_amax == nullptr)
    throw InvalidArgument(std::string("gemm_alpha: operand ") + which + " needs " +
                          (f.e8m0 ? "ref_code (from fp4_reference_code)" : "global_amax (NVFP4)"));
}

}  // namespace

bool is_fp4_scheme(Scheme s) {
  return precision::scheme_facts(s).fp4;
}

bool has_e8m0_scales(Scheme s) {
  return precision::scheme_facts(s).scale == precision::ScaleStorage::kE8M0;
}

void fp4_reference_code(const uint8_t* scale_codes, int64_t n, uint32_t* ref_code, cudaStream_t stream) {
  precision::cuda::check_cuda(cudaMemsetAsync(ref_code, 0, sizeof(uint32_t), stream), "fp4_reference_code memset");
  if (n <= 0) return;
  const unsigned blocks = grid_for(n) < 1024u ? grid_for(n) : 1024u;
  reference_code_kernel<<<blocks, kThreads, 0, stream>>>(scale_codes, n, ref_code);
  precision::cuda::check_cuda(cudaGetLastError(), "fp4_reference_code kernel launch");
}

void fp4_decode_bf16(const precision::QuantizedCopy& copy, const precision::CopyLayout& layout,
                     const precision::QuantizeOptions& options, const uint32_t* ref_code, uint16_t* out,
                     cudaStream_t stream) {
  if (!is_fp4_scheme(options.scheme))
    throw InvalidArgument("fp4_decode_bf16: scheme " + precision::scheme_name(options.scheme) +
                          " is not an FP4 scheme; valid: nvfp4, nvfp4_2d, mxfp4, mxfp4_quest");
  if (options.element.bits() > 4)
    throw InvalidArgument("fp4_decode_bf16: element format " + precision::format_name(options.element) +
                          " is wider than 4 bits; FP4 schemes store E2M1 (or another <= 4-bit format)");
  const bool e8m0 = has_e8m0_scales(options.scheme);
  if (e8m0 && ref_code == nullptr)
    throw InvalidArgument("fp4_decode_bf16: E8M0-scaled copies need ref_code (from fp4_reference_code)");
  if (layout.rows <= 0 || layout.cols <= 0) return;
  const int block = precision::scheme_facts(options.scheme).block_cols;
  const DecodeArgs args{copy.data,        layout.data_row_bytes, layout.rows,
                        layout.cols,      static_cast<const uint8_t*>(copy.scale),
                        layout.scale_cols, block,                options.element,
                        e8m0,             ref_code,              out};
  decode_kernel<<<grid_for(layout.rows * layout.data_row_bytes), kThreads, 0, stream>>>(args);
  precision::cuda::check_cuda(cudaGetLastError(), "fp4_decode_bf16 kernel launch");
}

void gemm_alpha(const Fp4GlobalFactor& a, const Fp4GlobalFactor& b, float beta, float* alpha_beta,
                cudaStream_t stream) {
  check_factor(a, "A");
  check_factor(b, "B");
  alpha_kernel<<<1, 1, 0, stream>>>(a, b, beta, alpha_beta);
  precision::cuda::check_cuda(cudaGetLastError(), "gemm_alpha kernel launch");
}

void bf16_to_f32(const uint16_t* in, int64_t n, float* out, cudaStream_t stream) {
  if (n <= 0) return;
  bf16_to_f32_kernel<<<grid_for(n), kThreads, 0, stream>>>(in, n, out);
  precision::cuda::check_cuda(cudaGetLastError(), "bf16_to_f32 kernel launch");
}

}  // namespace nibble::core::cuda
