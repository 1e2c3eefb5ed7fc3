#pragma once
// Vector amaxes and block multiplies for the CPU tile pass, written once in Highway (block_amax_lanes.cpp) and dispatched at run
// time to the best target the CPU has (AVX-512, AVX2, SSE4, NEON, ...), as encode_rne_lanes.h. A build without
// Highway (NIBBLE_HAVE_HWY unset) has none of these: callers keep their scalar loops, which give the same
// values (a max over |x| with NaN ignored does not depend on the order it is taken in; a product is one
// rounding whatever the vector width).
#include <cstddef>
#include <cstdint>

namespace nibble::precision {

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
// max |x[0, n)| with NaN ignored (as std::max(a, |x|) does); *nan |= x holds NaN.
float abs_max_lanes(const float* __restrict x, size_t n, bool* nan);

// For rows i < rows of 128 floats each (row i at x + i * ld): out[i * (128 / width) + b] = max |x| over block b
// of row i (elements [b * width, (b + 1) * width)), NaN ignored; *nan |= any row holds NaN. width is 16, 32
// or 128.
void span128_block_amaxes_lanes(const float* __restrict x, int64_t ld, int64_t rows, int64_t width,
                                float* __restrict out, bool* nan);

// For rows i < rows: y[i * ldy + j] = x[i * ldx + j] * mult[i * blocks + j / width] for j < n, with
// blocks = ceil(n / width) multipliers per row (the last block may be partial).
void multiply_blocks_rows_lanes(const float* __restrict x, int64_t ldx, int64_t rows, int64_t n, int64_t width,
                                const float* __restrict mult, float* __restrict y, int64_t ldy);
#endif

}  // namespace nibble::precision
