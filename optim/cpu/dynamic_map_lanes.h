#pragma once
// The int8 dynamic-map encoder and decoder of the fused CPU step in vector lanes: AVX-512 intrinsics where the
// build has them (faster there), Highway lanes on every other CPU (dynamic_map_hwy.h: AVX2, SSE4, NEON, ...),
// the scalar rules without either; the encoder equals dynamic_map_encode (optim/dynamic_map.h) for every float
// input.
//
// Why not the binary search: its eight steps are a chain of dependent table lookups (~8 x 10 cycles of latency
// per vector), which made int8 states the slowest 1-byte codec. Instead, the float's sign, exponent and top
// dynamic_map_buckets::kFractionBits mantissa bits pick a bucket of consecutive floats that holds at most one threshold (checked
// when the table is built); the code is then the number of thresholds below the bucket plus one comparison with
// that threshold. A threshold inside a bucket shares the bucket's high bits, so the table keeps only its low
// 16 bits beside the base code: one 32-bit gather per vector.
#include <cstdint>

namespace nibble::optim {

// codes[j] = dynamic_map_encode(x[j] / norm, dynamic_map(is_signed).threshold) for j < n (the division is the
// scalar rule's): the bucket lanes with AVX-512, Highway's bucket lanes without it, the scalar rule for the
// AVX-512 lanes' tail and without Highway.
// out[j] = dynamic_map(is_signed).value[codes[j]] * absmax for j < n (the int8 decode): byte-plane lookups of 64
// codes at a time with AVX-512 VBMI, Highway's gathers without it, the table for the rest.
void dynamic_map_decode_span(const uint8_t* __restrict codes, int n, float absmax, bool is_signed,
                             float* __restrict out);

void dynamic_map_encode_span(const float* __restrict x, int n, float norm, bool is_signed, uint8_t* __restrict codes);

}  // namespace nibble::optim
