// CUDA element-format conversion. One thread converts one Philox group of elements (16 for 8 random bits),
// so each thread makes exactly one Philox call under stochastic rounding.
#include <string>

#include "precision/cuda/convert_cuda.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "precision/stochastic.h"

namespace nibble::precision::cuda {
namespace {

constexpr int kThreads = 256;
// One Philox call serves elements_per_philox_call(r) = 4 * 32 / r elements: the largest group is r = 1's, 128
// (EncodeOptions::random_bits accepts 1..16). cuda-review.md §2: a 16-element buffer overflowed for r < 8.
constexpr int kMaxGroup = elements_per_philox_call(1);
static_assert(kMaxGroup == 128, "the group buffer must hold the narrowest r's group");

__device__ __forceinline__ float load(const float* x, size_t i) { return x[i]; }
__device__ __forceinline__ float load(const uint16_t* x, size_t i) {
  return __uint_as_float(static_cast<uint32_t>(x[i]) << 16);
}

template <class Src>
__global__ void encode_kernel(const Src* __restrict__ x, size_t n, Format fmt, EncodeOptions opt, int r,
                              int group, uint64_t index_base, uint8_t* __restrict__ codes,
                              uint32_t* __restrict__ status) {
  const size_t g = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  // Groups are aligned to global indices (index_base + i), as on the CPU.
  const uint64_t lead = index_base % group;
  const uint64_t first_global = (index_base - lead) + g * group;
  if (first_global >= index_base + n) return;
  uint32_t words[4] = {0, 0, 0, 0};
  if (opt.rounding == Rounding::kStochastic) {
    const Philox4x32Output out = philox_block(opt.seed, opt.offset, first_global / group);
    for (int w = 0; w < 4; ++w) words[w] = out.v[w];
  }
  const int per_word = elements_per_random_word(r);
  const uint32_t mask = (1u << r) - 1u;
  uint32_t flags = 0;
  uint32_t local_codes[kMaxGroup];
  for (int e = 0; e < group; ++e) {
    local_codes[e] = 0;
    const uint64_t global = first_global + e;
    if (global < index_base || global >= index_base + n) continue;
    const size_t i = global - index_base;
    const float v = load(x, i);
    const uint32_t u = __float_as_uint(v);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) flags |= kStatusNaN;
    if (u > 0x80000000u) flags |= kStatusNegative;
    const RandomBits bits{(words[e / per_word] >> ((e % per_word) * r)) & mask, r};
    local_codes[e] = encode_scalar(v * opt.scale, fmt, opt.rounding, bits);
  }
  const int nbits = fmt.bits();
  for (int e = 0; e < group; ++e) {
    const uint64_t global = first_global + e;
    if (global < index_base || global >= index_base + n) continue;
    const size_t i = global - index_base;
    if (nbits <= 4) {
      // Pairs (i even, i + 1) are written by whichever thread holds the even element.
      if (i % 2 == 0) {
        uint32_t hi = 0;
        if (i + 1 < n) {
          hi = (e + 1 < group) ? local_codes[e + 1]
                               : encode_scalar(load(x, i + 1) * opt.scale, fmt, opt.rounding,
                                               RandomBits{static_cast<uint32_t>(stochastic_bits(
                                                              opt.seed, opt.offset, global + 1, r)),
                                                          r});
        }
        codes[i / 2] = static_cast<uint8_t>(local_codes[e] | (hi << 4));
      }
    } else if (nbits <= 8) {
      codes[i] = static_cast<uint8_t>(local_codes[e]);
    } else {
      codes[2 * i] = static_cast<uint8_t>(local_codes[e]);
      codes[2 * i + 1] = static_cast<uint8_t>(local_codes[e] >> 8);
    }
  }
  if (flags) atomicOr(status, flags);
}

__global__ void decode_kernel(const uint8_t* __restrict__ codes, size_t n, Format fmt, float* __restrict__ out) {
  const size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  const int nbits = fmt.bits();
  uint32_t code;
  if (nbits <= 4) {
    code = (codes[i / 2] >> ((i % 2) * 4)) & 0xFu;
  } else if (nbits <= 8) {
    code = codes[i];
  } else {
    code = codes[2 * i] | (static_cast<uint32_t>(codes[2 * i + 1]) << 8);
  }
  out[i] = decode_scalar(code, fmt);
}

template <class Src>
void launch_encode(const Src* x, size_t n, const Format& fmt, const EncodeOptions& options, uint8_t* codes,
                   uint32_t* status, cudaStream_t stream, uint64_t index_base) {
  if (n == 0) return;
  const int r = options.random_bits == 0 ? default_random_bit_count(fmt) : options.random_bits;
  if (r < 1 || r > 16)
    throw InvalidArgument("encode: stochastic rounding takes 1..16 random bits per element, got " +
                          std::to_string(r));
  if (!(options.scale > 0.0f) || options.scale > 3.4e38f)
    throw InvalidArgument("encode: scale must be a finite positive number, got " + std::to_string(options.scale));
  const int group = elements_per_philox_call(r);
  const uint64_t lead = index_base % group;
  const size_t groups = (n + lead + group - 1) / group;
  const unsigned blocks = static_cast<unsigned>((groups + kThreads - 1) / kThreads);
  encode_kernel<<<blocks, kThreads, 0, stream>>>(x, n, fmt, options, r, group, index_base, codes, status);
  check_cuda(cudaGetLastError(), "encode kernel launch");
}

}  // namespace

void encode_f32(const float* x, size_t n, const Format& fmt, const EncodeOptions& options, uint8_t* codes,
                uint32_t* status, cudaStream_t stream, uint64_t index_base) {
  launch_encode(x, n, fmt, options, codes, status, stream, index_base);
}

void encode_bf16(const uint16_t* x, size_t n, const Format& fmt, const EncodeOptions& options, uint8_t* codes,
                 uint32_t* status, cudaStream_t stream, uint64_t index_base) {
  launch_encode(x, n, fmt, options, codes, status, stream, index_base);
}

void decode_to_f32(const uint8_t* codes, size_t n, const Format& fmt, float* out, cudaStream_t stream) {
  if (n == 0) return;
  const unsigned blocks = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  decode_kernel<<<blocks, kThreads, 0, stream>>>(codes, n, fmt, out);
  check_cuda(cudaGetLastError(), "decode kernel launch");
}

void check_encode_status(uint32_t status, const Format& fmt, const EncodeOptions& options) {
  if ((status & kStatusNaN) && (options.nan == NanPolicy::kError || !fmt.has_nan()))
    throw InvalidArgument("encode to " + format_name(fmt) + ": input has NaN (CUDA path; the CPU path names "
                          "the element)");
  if ((status & kStatusNegative) && !fmt.is_signed)
    throw InvalidArgument("encode to " + format_name(fmt) + ": the format is unsigned but the input has "
                          "negative values");
}

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw Error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(err));
}

}  // namespace nibble::precision::cuda
