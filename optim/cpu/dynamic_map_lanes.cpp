#include "optim/cpu/dynamic_map_lanes.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <bit>
#include <stdexcept>
#include <string>

#include "optim/cpu/dynamic_map_buckets.h"
#include "optim/cpu/dynamic_map_hwy.h"
#include "optim/dynamic_map.h"

namespace nibble::optim {
namespace {

namespace buckets = dynamic_map_buckets;
using buckets::kBuckets;
using buckets::kFirstBinadeBucket;
using buckets::kLowBits;
using buckets::kLowExponent;

// The magnitude bits [lo, hi] of bucket b.
void bucket_bits(int32_t b, uint32_t& lo, uint32_t& hi) {
  if (b == 0) {
    lo = 0;
    hi = (static_cast<uint32_t>(kLowExponent) << 23) - 1;
  } else if (b == kBuckets - 1) {
    lo = 0x3F800000u;  // 1.0
    hi = 0x7F800000u;  // Inf
  } else {
    lo = static_cast<uint32_t>(b + kFirstBinadeBucket) << kLowBits;
    hi = lo + (1u << kLowBits) - 1;
  }
}

// The words of dynamic_map_buckets.h.
struct Buckets {
  alignas(64) uint32_t word[2 * kBuckets];
};

Buckets build(bool is_signed) {
  const float* threshold = dynamic_map(is_signed).threshold;  // [0, 255) are searched; [255] is +Inf
  Buckets t{};
  for (int i = 0; i < 2 * kBuckets; ++i) {
    const bool negative = i < kBuckets;
    const int32_t b = negative ? kBuckets - 1 - i : i - kBuckets;
    uint32_t lo_bits, hi_bits;
    bucket_bits(b, lo_bits, hi_bits);
    const uint32_t sign = negative ? 0x80000000u : 0u;
    const float lo = std::bit_cast<float>((negative ? hi_bits : lo_bits) | sign);
    const float hi = std::bit_cast<float>((negative ? lo_bits : hi_bits) | sign);
    uint32_t base = 0, inside = 0, low = negative ? 0u : 0xFFFFu;
    for (int j = 0; j < 255; ++j) {
      if (threshold[j] < lo) ++base;
      if (threshold[j] >= lo && threshold[j] <= hi) {
        ++inside;
        low = std::bit_cast<uint32_t>(threshold[j]) & 0xFFFFu;
      }
    }
    // At most one threshold per bucket, and none in the two buckets that span several binades (their
    // thresholds would not share the bucket's high bits).
    if (inside > 1 || (inside == 1 && (b == 0 || b == kBuckets - 1)))
      throw std::logic_error("dynamic_map_lanes: bucket " + std::to_string(i) + " holds " + std::to_string(inside) +
                             " thresholds");
    t.word[i] = base | low << 16;
  }
  return t;
}

#if defined(__AVX512F__)
// dynamic_map_encode(x / norm) for 16 lanes as 32-bit codes; `word` is dynamic_map_buckets::words(is_signed).
__m512i encode16(__m512 x, __m512 norm, const uint32_t* word) {
  const __m512i u = _mm512_castps_si512(_mm512_div_ps(x, norm));
  const __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7FFFFFFF));
  // The magnitude bucket (a >> 16 <= 0x7FFF, so the signed min / max clamp it). Masked forms with every lane
  // set: GCC 12's unmasked ones trip -Wmaybe-uninitialized on their undefined source vector.
  constexpr __mmask16 kAll = 0xFFFF;
  __m512i b = _mm512_sub_epi32(_mm512_maskz_srli_epi32(kAll, a, kLowBits), _mm512_set1_epi32(kFirstBinadeBucket));
  b = _mm512_maskz_min_epi32(kAll, _mm512_maskz_max_epi32(kAll, b, _mm512_setzero_si512()),
                             _mm512_set1_epi32(kBuckets - 1));
  const __mmask16 negative = _mm512_cmplt_epi32_mask(u, _mm512_setzero_si512());
  const __m512i index = _mm512_mask_sub_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(kBuckets)), negative,
                                              _mm512_set1_epi32(kBuckets - 1), b);
  const __m512i entry = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), kAll, index, word, 4);
  const __m512i base = _mm512_and_si512(entry, _mm512_set1_epi32(0xFF));
  const __m512i low = _mm512_and_si512(a, _mm512_set1_epi32(0xFFFF));
  const __m512i threshold_low = _mm512_maskz_srli_epi32(kAll, entry, 16);
  // x > the bucket's threshold: a larger magnitude for positive x, a smaller one for negative x.
  const __mmask16 up = _mm512_mask_cmpgt_epi32_mask(static_cast<__mmask16>(~negative), low, threshold_low) |
                       _mm512_mask_cmplt_epi32_mask(negative, low, threshold_low);
  const __m512i code = _mm512_mask_add_epi32(base, up, base, _mm512_set1_epi32(1));
  // NaN compares false with every threshold: code 0.
  const __mmask16 nan = _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(0x7F800000));
  return _mm512_maskz_mov_epi32(static_cast<__mmask16>(~nan), code);
}
#endif

#if defined(__AVX512VBMI__)
// The map's values as four byte planes (plane b holds byte b of every value, little-endian), so that vpermi2b
// looks up 64 codes per instruction (128 entries; two of them and a blend on the code's top bit cover 256).
struct BytePlanes {
  alignas(64) uint8_t plane[4][256];
};

BytePlanes build_planes(bool is_signed) {
  const float* value = dynamic_map(is_signed).value;
  BytePlanes t{};
  for (int c = 0; c < 256; ++c)
    for (int b = 0; b < 4; ++b) t.plane[b][c] = static_cast<uint8_t>(std::bit_cast<uint32_t>(value[c]) >> (8 * b));
  return t;
}

const BytePlanes& planes(bool is_signed) {
  static const BytePlanes kSigned = build_planes(true);
  static const BytePlanes kUnsigned = build_planes(false);
  return is_signed ? kSigned : kUnsigned;
}

// value[codes[j]] * absmax for 64 codes: per byte plane two vpermi2b and a blend, then the planes interleaved
// into 32-bit lanes (unpacks, which work within 128-bit lanes, then a 4 x 4 transpose of the 128-bit lanes).
// ~40 instructions per 64 values where a 16-value permute tree (8 vpermt2ps, 7 blends) costs ~80.
void decode64(const uint8_t* codes, const BytePlanes& t, __m512 absmax, float* out) {
  constexpr __mmask16 kAll = 0xFFFF;  // masked forms: GCC 12's unmasked shuffles trip -Wuninitialized
  const __m512i c = _mm512_loadu_si512(codes);
  const __mmask64 upper = _mm512_movepi8_mask(c);  // code >= 128
  __m512i p[4];
  for (int b = 0; b < 4; ++b) {
    const __m512i low = _mm512_permutex2var_epi8(_mm512_load_si512(t.plane[b]), c, _mm512_load_si512(t.plane[b] + 64));
    const __m512i high =
        _mm512_permutex2var_epi8(_mm512_load_si512(t.plane[b] + 128), c, _mm512_load_si512(t.plane[b] + 192));
    p[b] = _mm512_mask_blend_epi8(upper, low, high);
  }
  const __m512i w01_lo = _mm512_unpacklo_epi8(p[0], p[1]), w01_hi = _mm512_unpackhi_epi8(p[0], p[1]);
  const __m512i w23_lo = _mm512_unpacklo_epi8(p[2], p[3]), w23_hi = _mm512_unpackhi_epi8(p[2], p[3]);
  // d[q], 128-bit lane k: the values of codes 16 k + 4 q .. 16 k + 4 q + 3.
  const __m512i d0 = _mm512_unpacklo_epi16(w01_lo, w23_lo), d1 = _mm512_unpackhi_epi16(w01_lo, w23_lo);
  const __m512i d2 = _mm512_unpacklo_epi16(w01_hi, w23_hi), d3 = _mm512_unpackhi_epi16(w01_hi, w23_hi);
  const __m512i t0 = _mm512_maskz_shuffle_i32x4(kAll, d0, d1, 0x44);  // lanes 0, 1 of d0, then of d1
  const __m512i t1 = _mm512_maskz_shuffle_i32x4(kAll, d2, d3, 0x44);
  const __m512i t2 = _mm512_maskz_shuffle_i32x4(kAll, d0, d1, 0xEE);  // lanes 2, 3
  const __m512i t3 = _mm512_maskz_shuffle_i32x4(kAll, d2, d3, 0xEE);
  const __m512i o[4] = {_mm512_maskz_shuffle_i32x4(kAll, t0, t1, 0x88), _mm512_maskz_shuffle_i32x4(kAll, t0, t1, 0xDD),
                        _mm512_maskz_shuffle_i32x4(kAll, t2, t3, 0x88), _mm512_maskz_shuffle_i32x4(kAll, t2, t3, 0xDD)};
  for (int k = 0; k < 4; ++k) _mm512_storeu_ps(out + 16 * k, _mm512_mul_ps(_mm512_castsi512_ps(o[k]), absmax));
}
#endif

}  // namespace

const uint32_t* dynamic_map_buckets::words(bool is_signed) {
  static const Buckets kSigned = build(true);
  static const Buckets kUnsigned = build(false);
  return (is_signed ? kSigned : kUnsigned).word;
}

// Each path gives the scalar rule's bits (tests/optim/test_state_lanes.cpp); which runs is a matter of speed.
void dynamic_map_decode_span(const uint8_t* __restrict codes, int n, float absmax, bool is_signed,
                             float* __restrict out) {
  const float* value = dynamic_map(is_signed).value;
  int j = 0;
#if defined(__AVX512VBMI__)
  // vpermi2b byte planes: ~3.5x the Highway lanes' gather on Zen 4 (9-10 vs 2.8 G codes/s,
  // bench_codec_targets), and Highway 1.0 builds no AVX-512 target with VBMI (AVX3_DL is opt-in) to write them in.
  const BytePlanes& t = planes(is_signed);
  const __m512 vabsmax = _mm512_set1_ps(absmax);
  for (; j + 64 <= n; j += 64) decode64(codes + j, t, vabsmax, out + j);
#elif NIBBLE_HAVE_DYNAMIC_MAP_HWY
  dynamic_map_decode_hwy(codes, static_cast<size_t>(n), absmax, value, out);
  return;
#endif
  for (; j < n; ++j) out[j] = value[codes[j]] * absmax;
}

void dynamic_map_encode_span(const float* __restrict x, int n, float norm, bool is_signed, uint8_t* __restrict codes) {
  int j = 0;
#if defined(__AVX512F__)
  // The intrinsics stay on AVX-512 builds: ~10% faster than Highway's AVX3 target of the same steps on Zen 4
  // (1.78 vs 1.62 G values/s, bench_codec_targets; the masked compares and vpmovdb store).
  const __m512 vnorm = _mm512_set1_ps(norm);
  const uint32_t* word = dynamic_map_buckets::words(is_signed);
  for (; j + 16 <= n; j += 16)
    _mm512_mask_cvtepi32_storeu_epi8(codes + j, static_cast<__mmask16>(0xFFFF),
                                     encode16(_mm512_loadu_ps(x + j), vnorm, word));
#elif NIBBLE_HAVE_DYNAMIC_MAP_HWY
  dynamic_map_encode_hwy(x, static_cast<size_t>(n), norm, dynamic_map_buckets::words(is_signed), codes);
  return;
#endif
  const float* threshold = dynamic_map(is_signed).threshold;
  for (; j < n; ++j) codes[j] = static_cast<uint8_t>(dynamic_map_encode(x[j] / norm, threshold));
}

}  // namespace nibble::optim
