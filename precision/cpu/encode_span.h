#pragma once
// The vectorised element encoder of convert_cpu.cpp, exposed for the block quantizers (quantize_cpu.cpp):
// they scale a block in cache and hand the span here, so both paths round with the same SIMD loop (which
// is precision/format.h's encode_scalar, made branch-free for a constant format).
#include <cstddef>
#include <cstdint>

#include "precision/format.h"

namespace nibble::precision {

// Longest span random_span_bits serves in one call.
inline constexpr size_t kMaxRandomSpan = 2048;

// Scratch for stochastic rounding's bits of one span (Philox words and per-element fields).
struct SpanRandomScratch {
  alignas(64) uint32_t words[4 * 544];              // up to kMaxRandomSpan / 4 + 2 calls, in batches of 32
  alignas(64) uint16_t bits[kMaxRandomSpan + 160];  // fields from the Philox group boundary on
};

// The r random bits of elements [first, first + n), n <= kMaxRandomSpan: p[j] = stochastic_bits(seed,
// offset, first + j, r) (precision/stochastic.h), computed 32 Philox counters at a time.
const uint16_t* random_span_bits(uint64_t seed, uint64_t offset, uint64_t first, size_t n, int r,
                                 SpanRandomScratch& scratch);

// codes[j] = encode_scalar(x[j] * scale, fmt, rounding, {random[j], r}) for j < n, one code per byte
// (fmt.bits() <= 8). `random` is read only under stochastic rounding. E4M3, E5M2 and E2M1 run the
// vectorised loop; other formats the same arithmetic with a runtime format.
void encode_span(const float* x, size_t n, float scale, const Format& fmt, Rounding rounding,
                 const uint16_t* random, int r, uint8_t* codes);

// encode_span under round-to-nearest-even for `rows` spans of n elements, row i at x + i * ld, its codes at
// codes + i * ldc: the encoder's constant set-up is paid once, not per span (which for 128-element spans
// cost as much as the spans themselves). stream: rows whose codes are whole aligned cache lines may be
// written with non-temporal stores (for output written once); the caller then owes a stream_fence() before
// another thread reads them (the quantizer's tile passes fence at the end of each thread's work).
void encode_span_rows(const float* x, int64_t ld, int64_t rows, int64_t n, float scale, const Format& fmt,
                      uint8_t* codes, int64_t ldc, bool stream = false);

// Packs 4-bit codes two per byte, element 2p in the low nibble; an odd count leaves the last high nibble 0.
void pack_nibble_span(const uint8_t* nibbles, size_t n, uint8_t* out);

}  // namespace nibble::precision
