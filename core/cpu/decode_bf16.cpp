// decode_bf16.h's scalar rule, its AVX-512 VBMI lanes (moved here from core/gemm.cpp unchanged but for the
// folds, now one per 16 elements from the caller) and the choice between them and the Highway lanes.
#include "core/cpu/decode_bf16.h"

#include <bit>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VBMI__)
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined_* (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define NIBBLE_DECODE_BF16_VBMI 1
#else
#define NIBBLE_DECODE_BF16_VBMI 0
#endif

namespace nibble::core::cpu {

void CodeTables::fill(const float* values, int count) {
  for (int c = 0; c < count; ++c) {
    value[c] = values[c];
    bf16[c] = static_cast<uint16_t>(std::bit_cast<uint32_t>(values[c]) >> 16);
    bf16_lo[c] = static_cast<uint8_t>(bf16[c]);
    bf16_hi[c] = static_cast<uint8_t>(bf16[c] >> 8);
  }
  if (count == 16) {
    for (int c = 0; c < 16; ++c) {
      planes16_lo[c] = bf16_lo[c];
      planes16_hi[c] = bf16_hi[c];
    }
    return;
  }
  for (int t = 0; t < 16; ++t) {  // t = (m + 8) & 0x7F for the magnitudes 0x78..0x7F and 0..7
    const int m = t < 8 ? 0x78 + t : t - 8;
    planes16_lo[t] = bf16_lo[m];
    planes16_hi[t] = bf16_hi[m];
  }
  // The mantissa shift s (rule_mul = 2^s) that, with the add fixed by one normal magnitude (0x40: a normal
  // code in every sign-magnitude format with 2..6 exponent bits), reproduces every entry.
  for (int shift = 1; shift <= 7 && !rule8; ++shift) {
    rule_mul = static_cast<uint16_t>(1u << shift);
    rule_add = static_cast<uint16_t>(bf16[0x40] - 0x40u * rule_mul);
    rule8 = true;
    for (uint32_t c = 0; c < 256 && rule8; ++c) rule8 = rule8_bits(c) == bf16[c];
  }
}

uint16_t CodeTables::rule8_bits(uint32_t c) const {
  const uint32_t m = c & 0x7Fu, t = (m + 8) & 0x7Fu;
  const uint32_t normal = (m * rule_mul + rule_add) & 0xFFFFu;
  const uint32_t special = planes16_lo[t & 0xFu] | static_cast<uint32_t>(planes16_hi[t & 0xFu]) << 8;
  return static_cast<uint16_t>((t < 16 ? special : normal) | (c & 0x80u) << 8);
}

void decode_bf16_scalar(const DecodeRun& run, uint16_t* out) {
  for (int64_t j = 0; j < run.n; ++j) {
    const uint32_t code = run.fp4 ? (run.data[j / 2] >> ((j % 2) * 4)) & 0xFu : run.data[j];
    const float v = run.folds ? run.tables->value[code] * run.folds[j / 16] : run.tables->value[code];
    out[j] = static_cast<uint16_t>(std::bit_cast<uint32_t>(v) >> 16);  // exact: the low 16 bits are zero
  }
}

namespace {

#if NIBBLE_DECODE_BF16_VBMI
// The 256-entry table of BF16 values as low and high bytes, 64 entries per register.
struct ByteLut {
  __m512i lo[4], hi[4];
  explicit ByteLut(const CodeTables& t) {
    for (int j = 0; j < 4; ++j) {
      lo[j] = _mm512_load_si512(t.bf16_lo + 64 * j);
      hi[j] = _mm512_load_si512(t.bf16_hi + 64 * j);
    }
  }
};

// Byte 2j of the result is byte j of the first table, byte 2j + 1 byte j of the second (j < 32).
alignas(64) constexpr uint8_t kInterleave[64] = {
    0,  64, 1,  65, 2,  66, 3,  67, 4,  68, 5,  69, 6,  70, 7,  71, 8,  72, 9,  73, 10, 74,
    11, 75, 12, 76, 13, 77, 14, 78, 15, 79, 16, 80, 17, 81, 18, 82, 19, 83, 20, 84, 21, 85,
    22, 86, 23, 87, 24, 88, 25, 89, 26, 90, 27, 91, 28, 92, 29, 93, 30, 94, 31, 95};

// 64 one-byte codes -> 64 BF16 values: w0 (codes 0..31) and w1 (32..63).
inline void lookup64(const ByteLut& t, __m512i codes, __m512i& w0, __m512i& w1) {
  const __m512i kLo = _mm512_load_si512(kInterleave);
  const __m512i kHi = _mm512_add_epi8(kLo, _mm512_set1_epi8(32));
  const __mmask64 top = _mm512_movepi8_mask(codes);  // code >= 128
  const __m512i lo = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(t.lo[0], codes, t.lo[1]),
                                            _mm512_permutex2var_epi8(t.lo[2], codes, t.lo[3]));
  const __m512i hi = _mm512_mask_blend_epi8(top, _mm512_permutex2var_epi8(t.hi[0], codes, t.hi[1]),
                                            _mm512_permutex2var_epi8(t.hi[2], codes, t.hi[3]));
  w0 = _mm512_permutex2var_epi8(lo, kLo, hi);
  w1 = _mm512_permutex2var_epi8(lo, kHi, hi);
}

// 32 BF16 values times FP32 folds (one per pair of values), truncated back to BF16: the FP32 product
// value * fold, exactly as the scalar decode computes it.
inline __m512i fold32(__m512i w, __m512 f) {
  const __m512 even = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  const __m512 odd = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0xFFFF0000u))));
  const __m512i pe = _mm512_castps_si512(_mm512_mul_ps(even, f));
  const __m512i po = _mm512_castps_si512(_mm512_mul_ps(odd, f));
  return _mm512_mask_blend_epi16(0xAAAAAAAAu, _mm512_srli_epi32(pe, 16), po);
}

// The folds of elements j..j+31 (j a multiple of 16), one per pair.
inline __m512 folds32(const float* folds, int64_t j) {
  return _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(folds[j / 16]), _mm512_set1_ps(folds[j / 16 + 1]));
}

void decode_bf16_vbmi(const DecodeRun& run, uint16_t* out) {
  int64_t k = 0;
  if (run.fp4) {
    const __m512i table = _mm512_maskz_loadu_epi16(0xFFFF, run.tables->bf16);
    const __m512i nib = _mm512_set1_epi32(0xF);
    for (; k + 32 <= run.n; k += 32) {
      const __m512i d = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(run.data + k / 2)));
      const __m512i idx = _mm512_or_si512(_mm512_and_si512(d, nib), _mm512_slli_epi32(_mm512_srli_epi32(d, 4), 16));
      __m512i w = _mm512_permutexvar_epi16(idx, table);
      if (run.folds) w = fold32(w, folds32(run.folds, k));
      _mm512_storeu_si512(out + k, w);
    }
  } else {
    const ByteLut t(*run.tables);
    for (; k + 64 <= run.n; k += 64) {
      __m512i w0, w1;
      lookup64(t, _mm512_loadu_si512(run.data + k), w0, w1);
      if (run.folds) {
        w0 = fold32(w0, folds32(run.folds, k));
        w1 = fold32(w1, folds32(run.folds, k + 32));
      }
      _mm512_storeu_si512(out + k, w0);
      _mm512_storeu_si512(out + k + 32, w1);
    }
  }
  DecodeRun rest = run;  // the last 32 of an odd count of 32
  rest.data = run.fp4 ? run.data + k / 2 : run.data + k;
  rest.n = run.n - k;
  rest.folds = run.folds ? run.folds + k / 16 : nullptr;
  decode_bf16_scalar(rest, out + k);
}
#endif

}  // namespace

void decode_bf16(const DecodeRun& run, uint16_t* out) {
#if NIBBLE_DECODE_BF16_VBMI
  decode_bf16_vbmi(run, out);
#elif NIBBLE_HAVE_DECODE_BF16_HWY
  decode_bf16_hwy(run, out);
#else
  decode_bf16_scalar(run, out);
#endif
}

}  // namespace nibble::core::cpu
