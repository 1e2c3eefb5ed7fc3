#pragma once
// The float32 transpose of the CPU tile pass (the columnwise copies are produced from the tile transposed in
// cache), written once in Highway (transpose_lanes.cpp) and dispatched at run time to the best target the CPU
// has, as block_amax_lanes.h. It only moves bits: every target gives the same result as the scalar loop,
// which builds without Highway (NIBBLE_HAVE_HWY unset) take (quantize_tiles.cpp's transpose_floats).
#include <cstdint>

namespace nibble::precision {

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
// t[j * ldt + i] = x[i * ldx + j] for i < rows, j < cols: 8x8 blocks in registers on 256-bit and wider
// targets, 4x4 on 128-bit ones, the ragged edges by element.
void transpose_floats_lanes(const float* __restrict x, int64_t ldx, int64_t rows, int64_t cols, float* __restrict t,
                            int64_t ldt);
#endif

}  // namespace nibble::precision
