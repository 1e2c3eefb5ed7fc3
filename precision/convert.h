#pragma once
// Bulk element-format conversion: float32 or bfloat16 in, packed codes out, and back (CPU; the CUDA twins
// live in precision/cuda/convert_cuda.h and share every rounding rule through precision/format.h).
//
// Code storage: formats of at most 4 bits are packed two per byte, element 2j in the low nibble of byte j
// (an odd count leaves the last high nibble zero); formats of 5..8 bits take one byte per element; wider
// research formats take a little-endian uint16 per element.
#include <cstddef>
#include <cstdint>

#include "precision/format.h"

namespace nibble::precision {

enum class NanPolicy : uint8_t {
  kError,      // a NaN in the input throws InvalidArgument naming the first NaN's index
  kPropagate,  // NaN encodes to the format's NaN code (formats without NaN: still an error)
};

struct EncodeOptions {
  Rounding rounding = Rounding::kNearestEven;
  uint64_t seed = 0;    // stochastic rounding: Philox key
  uint64_t offset = 0;  // stochastic rounding: Philox counter offset (advance it per call to redraw)
  int random_bits = 0;  // stochastic rounding: r bits per element, 1..16; 0 = default_random_bit_count(fmt)
  float scale = 1.0f;   // each element is multiplied by this (in FP32) before rounding
  NanPolicy nan = NanPolicy::kError;
};

// Bytes of code storage for n elements of `fmt`.
constexpr size_t encoded_bytes(const Format& fmt, size_t n) {
  const int bits = fmt.bits();
  if (bits <= 4) return (n + 1) / 2;
  if (bits <= 8) return n;
  return 2 * n;
}

// `index_base` is the global element index of x[0]: the stochastic bits of x[j] are those of element
// index_base + j, so a tensor converted in pieces gets the same codes as converted whole.
void encode_f32(const float* x, size_t n, const Format& fmt, const EncodeOptions& options, uint8_t* codes,
                uint64_t index_base = 0);
void encode_bf16(const uint16_t* x, size_t n, const Format& fmt, const EncodeOptions& options, uint8_t* codes,
                 uint64_t index_base = 0);
void decode_to_f32(const uint8_t* codes, size_t n, const Format& fmt, float* out);

// Threads the CPU kernels use (default: all hardware threads). Results never depend on it (work is keyed by
// element index, never by thread), so it is a process resource like OpenMP's and ATen's thread counts -- which
// is why it is one process-wide setting rather than an option of each call.
void set_num_threads(int n);
int num_threads();

}  // namespace nibble::precision
