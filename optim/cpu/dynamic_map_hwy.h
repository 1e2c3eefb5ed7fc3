#pragma once
// The int8 dynamic-map codec's lanes written once in Highway (dynamic_map_hwy.cpp) and dispatched at run time
// to the best target the CPU has, so that AVX2-only and ARM machines run vector code too (issue 17 item 6).
// dynamic_map_lanes.cpp calls them where it has no faster hand-written AVX-512 lanes; tests call them
// directly, one forced target at a time. Same bits as the scalar rules on every target.
// Without Highway (the carried-deps GPU build) NIBBLE_HAVE_DYNAMIC_MAP_HWY is 0 and they are not defined.
#include <cstddef>
#include <cstdint>

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
#define NIBBLE_HAVE_DYNAMIC_MAP_HWY 1
#else
#define NIBBLE_HAVE_DYNAMIC_MAP_HWY 0
#endif

namespace nibble::optim {

// codes[j] = dynamic_map_encode(x[j] / norm, threshold) for j < n, through the bucket words of
// dynamic_map_buckets.h (one gather per vector).
void dynamic_map_encode_hwy(const float* __restrict x, size_t n, float norm, const uint32_t* words,
                            uint8_t* __restrict codes);

// out[j] = value[codes[j]] * absmax for j < n (a gather of the 256 values per vector).
void dynamic_map_decode_hwy(const uint8_t* __restrict codes, size_t n, float absmax, const float* value,
                            float* __restrict out);

}  // namespace nibble::optim
