#pragma once
// Block amaxes and block scales of a whole tile at once, for the 1-D block schemes of the CPU tile pass
// (internal to precision/cpu). Per block the scalar path paid a horizontal reduction, a switch on the scheme
// and the scale arithmetic (an E4M3 rounding and a division for NVFP4); here the amaxes of a row's blocks
// come out of one transpose-and-reduce of its vectors, and the scales of all the tile's blocks out of one
// loop over block_scale_of<S> (block_scale.h), which vectorises because the scheme is a constant.
#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "precision/block_scale.h"

namespace nibble::precision::cpu {

#if defined(__AVX512F__)
// Lane l of the result: max of m[l]'s 16 lanes (transpose-and-reduce of eight vectors). Masked forms with
// every lane set throughout: GCC 12 flags the undefined vector inside the unmasked intrinsics as
// uninitialised under -Werror.
inline __m512 lane_maxes8(const __m512 (&m)[8]) {
  const __m512 zero = _mm512_setzero_ps();
  const __mmask16 all = 0xFFFF;
  auto max = [&](__m512 a, __m512 b) { return _mm512_mask_max_ps(zero, all, a, b); };
  __m512 p[4], q[2];
  for (int i = 0; i < 4; ++i)  // p[i]: 256-bit halves hold m[2i], m[2i+1] folded to 8 lanes
    p[i] = max(_mm512_mask_shuffle_f32x4(zero, all, m[2 * i], m[2 * i + 1], 0x44),
               _mm512_mask_shuffle_f32x4(zero, all, m[2 * i], m[2 * i + 1], 0xEE));
  for (int i = 0; i < 2; ++i)  // q[i]: 128-bit quarters hold m[4i .. 4i+3] folded to 4 lanes
    q[i] = max(_mm512_mask_shuffle_f32x4(zero, all, p[2 * i], p[2 * i + 1], 0x88),
               _mm512_mask_shuffle_f32x4(zero, all, p[2 * i], p[2 * i + 1], 0xDD));
  // Quarter k: lanes (0, 1) = m[k] folded to 2, lanes (2, 3) = m[4 + k] folded to 2.
  __m512 r = max(_mm512_mask_shuffle_ps(zero, all, q[0], q[1], _MM_SHUFFLE(1, 0, 1, 0)),
                 _mm512_mask_shuffle_ps(zero, all, q[0], q[1], _MM_SHUFFLE(3, 2, 3, 2)));
  r = max(r, _mm512_mask_permute_ps(zero, all, r, _MM_SHUFFLE(2, 3, 0, 1)));
  // m[k] sits in lane 4k, m[4 + k] in lane 4k + 2.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_mask_permutexvar_ps(zero, all, order, r);
}

// The amaxes of a full 128-element span's blocks of Width (a constant, so the accumulators stay in registers).
template <int Width>
inline void span128_block_amaxes(const float* __restrict x, float* __restrict out, bool* nan) {
  constexpr int kBlocks = 128 / Width, kPerBlock = Width / 16;
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  __mmask16 unordered = 0;
  __m512 m[8];
#pragma GCC unroll 8
  for (int b = 0; b < 8; ++b) m[b] = _mm512_setzero_ps();
#pragma GCC unroll 8
  for (int k = 0; k < 8; ++k) {
    const __m512 v = _mm512_loadu_ps(x + 16 * k);
    unordered |= _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    const __m512 a = _mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_mask));
    // max(a, m): a NaN first operand yields the second, so NaN never enters m.
    m[k / kPerBlock] = _mm512_mask_max_ps(m[k / kPerBlock], 0xFFFF, a, m[k / kPerBlock]);
  }
  *nan = *nan || unordered != 0;
  _mm512_mask_storeu_ps(out, static_cast<__mmask16>((1u << kBlocks) - 1u), lane_maxes8(m));
}
#endif

// out[b] = max |x| over block b = [b * width, min(n, (b + 1) * width)) of x[0, n), NaN ignored (as
// std::max(a, |x|) does: a block of NaN only has amax 0); *nan |= x holds NaN. width is 16, 32 or 128,
// n <= 128.
inline void span_block_amaxes(const float* __restrict x, int64_t n, int64_t width, float* __restrict out, bool* nan) {
#if defined(__AVX512F__)
  if (n == 128) {
    if (width == 16) return span128_block_amaxes<16>(x, out, nan);
    if (width == 32) return span128_block_amaxes<32>(x, out, nan);
    if (width == 128) return span128_block_amaxes<128>(x, out, nan);
  }
#endif
  for (int64_t b0 = 0; b0 < n; b0 += width) {
    const int64_t end = std::min(n, b0 + width);
    float a = 0.0f;
    for (int64_t j = b0; j < end; ++j) {
      const float v = std::fabs(x[j]);
      *nan = *nan || std::isnan(v);
      a = std::max(a, v);
    }
    out[b0 / width] = a;
  }
}

// The scales of n blocks from their amaxes (structure of arrays; what block_scale would give each).
struct BlockScaleArrays {
  float* multiplier;
  uint8_t* code;     // E8M0 / UE4M3 code
  float* scale_inv;  // FP32 decode scale (block FP8)
};

template <Scheme S>
void block_scales_of(const BlockScaleConstants& c, const float* __restrict amax, int64_t n, float* __restrict mult,
                     uint8_t* __restrict code, float* __restrict scale_inv) {
  for (int64_t k = 0; k < n; ++k) {
    const BlockScale b = block_scale_of<S>(c, amax[k]);
    mult[k] = b.multiplier;
    code[k] = static_cast<uint8_t>(b.code);
    scale_inv[k] = b.scale_inv;
  }
}

// Dispatch on the scheme (1-D and 2-D block schemes; not kFP8Tensor nor QuEST).
inline void block_scales(Scheme s, const BlockScaleConstants& c, const float* amax, int64_t n,
                         const BlockScaleArrays& out) {
  switch (s) {
    case Scheme::kFP8Block128:
      block_scales_of<Scheme::kFP8Block128>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kFP8Block16:
      block_scales_of<Scheme::kFP8Block16>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kFP8Block128x128:
      block_scales_of<Scheme::kFP8Block128x128>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kMXFP8:
      block_scales_of<Scheme::kMXFP8>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kMXFP4:
      block_scales_of<Scheme::kMXFP4>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kNVFP4:
      block_scales_of<Scheme::kNVFP4>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kNVFP4_2D:
      block_scales_of<Scheme::kNVFP4_2D>(c, amax, n, out.multiplier, out.code, out.scale_inv);
      break;
    case Scheme::kFP8Tensor:
    case Scheme::kMXFP4Quest:
      break;  // not block schemes: callers never ask
  }
}

}  // namespace nibble::precision::cpu
