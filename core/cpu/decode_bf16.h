#pragma once
// The CPU GEMM's operand decode (core/gemm.cpp): a run of one row's 8-bit or 4-bit codes to BF16 bits, each
// element the code's value times its block's fold, which the decode plan has made exact in BF16 (so the FP32
// product's low 16 bits are zero and truncation is exact). Three implementations, the same bits:
//  - AVX-512 VBMI lanes (decode_bf16.cpp): 64 byte lookups per vpermi2b pair, kept where the build has VBMI:
//    faster than any Highway target there (Zen 4: 1.5-2.3x Highway's AVX3 target, 1.6-2.7x its AVX2;
//    bench_codec_targets), and Highway 1.0 builds no AVX-512 target with VBMI (its AVX3_DL is opt-in);
//  - Highway lanes (decode_bf16_hwy.cpp) for every other CPU (AVX2, AVX-512 without VBMI, SSE4, NEON, ...),
//    in 16-bit lanes: 4-bit codes through two 16-entry byte lookups (vpshufb / tbl); 8-bit codes through the
//    table's own floating-point structure (below), or a 32-bit gather of the value where a table lacks it;
//  - the scalar loop (decode_bf16_scalar), the reference, and the path without either.
#include <cstdint>

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
#define NIBBLE_HAVE_DECODE_BF16_HWY 1
#else
#define NIBBLE_HAVE_DECODE_BF16_HWY 0
#endif

namespace nibble::core::cpu {

// An element format's decode tables (every entry BF16-exact); 4-bit formats use entries 0..15 of `value`.
//
// The 8-bit rule of the Highway lanes: a sign-magnitude float format's BF16 bits are, for a normal code c with
// magnitude bits m = c & 0x7F, (c & 0x80) << 8 | (m * rule_mul + rule_add) (the exponent rebiased, the
// mantissa shifted up: one multiply-add in 16 bits), and every subnormal, Inf or NaN code of E4M3 and E5M2
// lies in the magnitudes below 8 or from 0x78 on, whose 16 values come from a byte lookup at (m + 8) & 0x7F
// (< 16 exactly there). fill() finds rule_mul and rule_add from the table and checks the rule against every
// one of the 256 entries: rule8 says it holds (else the lanes gather).
struct CodeTables {
  alignas(64) float value[256] = {};
  alignas(64) uint8_t bf16_lo[256] = {};  // value's BF16 bits, low byte (the VBMI byte planes)
  alignas(64) uint8_t bf16_hi[256] = {};  // ... high byte
  alignas(64) uint16_t bf16[256] = {};    // value's BF16 bits
  // 16-entry byte planes: 4-bit codes' values; 8-bit codes' values at the magnitudes 0x78..0x7F, 0..7.
  alignas(16) uint8_t planes16_lo[16] = {};
  alignas(16) uint8_t planes16_hi[16] = {};
  bool rule8 = false;
  uint16_t rule_mul = 0, rule_add = 0;

  // From value[0, count) (count 16 or 256), which must be BF16-exact.
  void fill(const float* values, int count);
  // The 8-bit rule's BF16 bits for byte c (what the lanes compute).
  uint16_t rule8_bits(uint32_t c) const;
};

// A run of elements [0, n) of one row, n a multiple of 32: `data` is the row's byte holding element 0 (for
// 4-bit codes, element 2i is byte i's low nibble, 2i + 1 its high nibble). out[j] = the BF16 bits of
// value[code j] * folds[j / 16], or of value[code j] when folds is null.
struct DecodeRun {
  const CodeTables* tables;
  bool fp4;
  const uint8_t* data;
  int64_t n;
  const float* folds;
};

// The fastest of the three this build and CPU have.
void decode_bf16(const DecodeRun& run, uint16_t* out);
// The scalar reference.
void decode_bf16_scalar(const DecodeRun& run, uint16_t* out);
// The Highway lanes on the dispatched (or forced) target; only where NIBBLE_HAVE_DECODE_BF16_HWY.
void decode_bf16_hwy(const DecodeRun& run, uint16_t* out);

}  // namespace nibble::core::cpu
