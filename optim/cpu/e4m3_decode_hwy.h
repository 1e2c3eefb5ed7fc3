#pragma once
// The fp8 optimizer states' E4M3 decode (code -> float, as precision's decode_scalar) written once in Highway
// (e4m3_decode_hwy.cpp) and dispatched at run time to the best target the CPU has, so that AVX2-only and ARM
// machines decode in vectors too (issue 17 item 6). Without Highway (the carried-deps GPU build)
// NIBBLE_HAVE_E4M3_DECODE_HWY is 0, the function is not defined and the caller uses a table.
#include <cstddef>
#include <cstdint>

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
#define NIBBLE_HAVE_E4M3_DECODE_HWY 1
#else
#define NIBBLE_HAVE_E4M3_DECODE_HWY 0
#endif

namespace nibble::optim {

// out[j] = decode_scalar(codes[j], E4M3) for j < n.
void decode_e4m3_hwy(const uint8_t* __restrict codes, size_t n, float* __restrict out);

}  // namespace nibble::optim
