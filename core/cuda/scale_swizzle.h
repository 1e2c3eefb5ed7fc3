#pragma once
// Block-scale layouts cuBLASLt reads, and the index map from nibble's row-major scale arrays into them.
// nibble stores scales row-major: `[rows, ceil(cols / block)]` for 1-D blocks, `[ceil(rows/128),
// ceil(cols/128)]` for 128x128 tiles (docs/QUANTIZATION.md); "rows" and "cols" below are always the
// dimensions of that scale matrix. The maps are plain functions (NIBBLE_HOST_DEVICE): the kernels in
// scale_swizzle.cu call exactly these, and tests/core/test_scale_swizzle.cpp checks them on the CPU.
//
// Where each layout comes from (all read, none run: there is no GPU here):
// - Tiled128x4 (CUBLASLT_MATMUL_MATRIX_SCALE_VEC32_UE8M0, VEC16_UE4M3): cuBLAS docs "1D Block Scaling
//   Factors Layout" (docs.nvidia.com/cuda/cublas/#d-block-scaling-factors-layout), as transcribed by
//   nvmath-python `helpers/matmul.py::_get_block_scale_offset`: the scale matrix is padded to 128-row x
//   4-column tiles; tile (tr, tc) starts at (tr * ceil(cols/4) + tc) * 512 bytes; inside a tile, element
//   (r, c) sits at (r % 32) * 16 + (r / 32) * 4 + c. TE's mxfp8.rst describes the same interleave ("0, 32,
//   64, 96, 1, 33, ..."). Worked examples from the nvmath-python docs (NVFP4 operand of 128 x 128, i.e. a
//   128 x 8 scale matrix): scale (5, 2) -> 82, scale (5, 5) -> 593.
// - Vec128 (VEC128_32F, 1x128 blocks along K): TransformerEngine's "GEMM-ready" rowwise scales,
//   `[ceil(K/128), pad4(rows)]` ("transposed, padded", docs/features/low_precision_training/
//   fp8_blockwise_scaling/fp8_blockwise_scaling.rst), written by quantize_transpose_vector_blockwise.cu at
//   `row + kblock * pad4(rows)`; the row pad keeps every K-block's column 16-byte aligned.
// - Block128x128 (BLK128x128_32F): TransformerEngine's Float8BlockQuantizer.get_scale_shape for 2-D blocks,
//   `[ceil(rows/128), pad4(ceil(K/128))]`, written row-major by quantize_transpose_square_blockwise.cu
//   (`scale_stride_y = scale_inv.shape[1]`, x stride 1). The cuBLAS documentation text for the two FP32
//   block modes was not available to this project; these two follow TE, which feeds them to cuBLASLt as is.
// Padding entries are written as zero (they scale data that does not exist).
#include <cstdint>

#include "precision/host_device.h"

#if defined(NIBBLE_WITH_CUDA)
#include <cuda_runtime_api.h>
#endif

namespace nibble::core::cuda {

enum class GemmScaleLayout : uint8_t {
  kTiled128x4,    // one-byte codes (E8M0 for MXFP8, UE4M3 for NVFP4)
  kVec128,        // float32, 1x128 blocks
  kBlock128x128,  // float32, 128x128 tiles
};

NIBBLE_HOST_DEVICE constexpr int64_t round_up(int64_t x, int64_t multiple) {
  return (x + multiple - 1) / multiple * multiple;
}

// The padded scale matrix the layout covers: every (row, col) below these bounds has exactly one slot.
NIBBLE_HOST_DEVICE constexpr int64_t swizzled_rows(GemmScaleLayout layout, int64_t rows) {
  return layout == GemmScaleLayout::kTiled128x4 ? round_up(rows, 128)
         : layout == GemmScaleLayout::kVec128   ? round_up(rows, 4)
                                                : rows;
}
NIBBLE_HOST_DEVICE constexpr int64_t swizzled_cols(GemmScaleLayout layout, int64_t cols) {
  return layout == GemmScaleLayout::kVec128 ? cols : round_up(cols, 4);
}
// Elements (bytes for kTiled128x4, floats otherwise) of the cuBLAS scale array.
NIBBLE_HOST_DEVICE constexpr int64_t swizzled_size(GemmScaleLayout layout, int64_t rows, int64_t cols) {
  return swizzled_rows(layout, rows) * swizzled_cols(layout, cols);
}
NIBBLE_HOST_DEVICE constexpr int64_t scale_element_bytes(GemmScaleLayout layout) {
  return layout == GemmScaleLayout::kTiled128x4 ? 1 : 4;
}

// VEC32_UE8M0 / VEC16_UE4M3: slot of scale (row, col) of a rows x cols scale matrix (128x4 tile interleave).
NIBBLE_HOST_DEVICE constexpr int64_t swizzled_index(int64_t row, int64_t col, int64_t rows, int64_t cols) {
  (void)rows;  // the tile grid depends on the (padded) column count only
  const int64_t tiles_per_row = round_up(cols, 4) / 4;
  const int64_t tile = (row / 128) * tiles_per_row + col / 4;
  const int64_t r = row % 128;
  return tile * 512 + (r % 32) * 16 + (r / 32) * 4 + col % 4;
}

// VEC128_32F: K-block-major, rows contiguous, rows padded to a multiple of 4.
NIBBLE_HOST_DEVICE constexpr int64_t vec128_index(int64_t row, int64_t col, int64_t rows, int64_t cols) {
  (void)cols;
  return col * round_up(rows, 4) + row;
}

// BLK128x128_32F: row-major over 128-row tiles, each row padded to a multiple of 4 K-tiles.
NIBBLE_HOST_DEVICE constexpr int64_t block128x128_index(int64_t row, int64_t col, int64_t rows, int64_t cols) {
  (void)rows;
  return row * round_up(cols, 4) + col;
}

NIBBLE_HOST_DEVICE constexpr int64_t gemm_scale_index(GemmScaleLayout layout, int64_t row, int64_t col,
                                                      int64_t rows, int64_t cols) {
  return layout == GemmScaleLayout::kTiled128x4 ? swizzled_index(row, col, rows, cols)
         : layout == GemmScaleLayout::kVec128   ? vec128_index(row, col, rows, cols)
                                                : block128x128_index(row, col, rows, cols);
}

#if defined(NIBBLE_WITH_CUDA)
// Writes the cuBLAS layout of a device scale matrix `src` (row-major rows x cols: uint8 codes for
// kTiled128x4, float otherwise) into `dst` (swizzled_size(...) elements, 16-byte aligned), padding zeroed.
void swizzle_scales(GemmScaleLayout layout, const void* src, int64_t rows, int64_t cols, void* dst,
                    cudaStream_t stream);
#endif

}  // namespace nibble::core::cuda
