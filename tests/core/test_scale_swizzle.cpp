// The index maps from nibble's row-major block scales to cuBLASLt's scale layouts (core/cuda/scale_swizzle.h):
// each is a bijection from the padded scale matrix onto the layout's array, and the 128x4 interleave matches
// the worked examples of the cuBLAS/nvmath-python and TransformerEngine documentation. Plain C++: runs
// everywhere, and the CUDA swizzle kernel calls these same functions.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "core/cuda/scale_swizzle.h"

namespace nibble::core::cuda {
namespace {

constexpr GemmScaleLayout kLayouts[] = {GemmScaleLayout::kTiled128x4, GemmScaleLayout::kVec128,
                                        GemmScaleLayout::kBlock128x128};

TEST(ScaleSwizzle, Tiled128x4MatchesNvmathWorkedExample) {
  // nvmath-python get_block_scale_offset docs: NVFP4 operand a of shape (M=128, K=128), 16-element blocks,
  // so the scale matrix is 128 x 8. Elements a[5, 32..47] (K-group 2) -> offset 82; a[5, 80..95] (K-group 5)
  // -> offset 593 (the second 128x4 tile starts at 512).
  EXPECT_EQ(swizzled_index(5, 2, 128, 8), 82);
  EXPECT_EQ(swizzled_index(5, 5, 128, 8), 593);
  EXPECT_EQ(swizzled_size(GemmScaleLayout::kTiled128x4, 128, 8), 1024);
}

TEST(ScaleSwizzle, Tiled128x4InterleavesRowsAsTransformerEngineDescribes) {
  // TE mxfp8.rst: the 128 four-byte rows of a 128x4 tile are stored in the order 0, 32, 64, 96, 1, 33, ...
  for (int64_t slot = 0; slot < 128; ++slot) {
    const int64_t row = (slot % 4) * 32 + slot / 4;
    for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(swizzled_index(row, c, 128, 4), 4 * slot + c) << row << "," << c;
  }
  EXPECT_EQ(swizzled_index(32, 0, 128, 4), 4);
  EXPECT_EQ(swizzled_index(1, 0, 128, 4), 16);
}

TEST(ScaleSwizzle, Tiled128x4TilesAreRowMajorOverTheTileGrid) {
  // 200 x 6 scales -> padded to 256 x 8: a 2 x 2 grid of 512-byte tiles, column tiles fastest.
  EXPECT_EQ(swizzled_size(GemmScaleLayout::kTiled128x4, 200, 6), 256 * 8);
  EXPECT_EQ(swizzled_index(0, 4, 200, 6), 512);
  EXPECT_EQ(swizzled_index(128, 0, 200, 6), 1024);
  EXPECT_EQ(swizzled_index(128, 4, 200, 6), 1536);
  // Every scale of a tile lands inside that tile's contiguous 512 bytes.
  for (int64_t r = 0; r < 256; ++r)
    for (int64_t c = 0; c < 8; ++c) EXPECT_EQ(swizzled_index(r, c, 200, 6) / 512, (r / 128) * 2 + c / 4);
}

TEST(ScaleSwizzle, Vec128IsKBlockMajorWithRowsPaddedToFour) {
  // TE fp8_blockwise_scaling.rst, GEMM-ready rowwise scales of an [A, B] tensor: [B/128, pad4(A)].
  EXPECT_EQ(swizzled_size(GemmScaleLayout::kVec128, 6, 3), 8 * 3);
  EXPECT_EQ(vec128_index(5, 2, 6, 3), 2 * 8 + 5);
  EXPECT_EQ(vec128_index(0, 1, 6, 3), 8);  // each K-block's column starts 16-byte aligned
  EXPECT_EQ(gemm_scale_index(GemmScaleLayout::kVec128, 3, 1, 6, 3), 11);
}

TEST(ScaleSwizzle, Block128x128IsRowMajorWithKTilesPaddedToFour) {
  // TE Float8BlockQuantizer.get_scale_shape (2-D): (ceil(rows/128), pad4(ceil(K/128))), written row-major.
  EXPECT_EQ(swizzled_size(GemmScaleLayout::kBlock128x128, 2, 5), 2 * 8);
  EXPECT_EQ(block128x128_index(1, 4, 2, 5), 12);
  EXPECT_EQ(block128x128_index(1, 0, 2, 5), 8);
  EXPECT_EQ(gemm_scale_index(GemmScaleLayout::kBlock128x128, 0, 3, 2, 5), 3);
}

TEST(ScaleSwizzle, EveryLayoutIsABijectionOntoThePaddedArray) {
  const int64_t shapes[][2] = {{1, 1},   {1, 5},   {3, 1},   {4, 4},    {31, 3},  {127, 4},  {128, 4},
                               {129, 5}, {200, 6}, {256, 8}, {300, 13}, {17, 24}, {640, 2}, {5, 129}};
  for (const GemmScaleLayout layout : kLayouts) {
    for (const auto& shape : shapes) {
      const int64_t rows = shape[0], cols = shape[1];
      const int64_t pr = swizzled_rows(layout, rows), pc = swizzled_cols(layout, cols);
      const int64_t size = swizzled_size(layout, rows, cols);
      ASSERT_EQ(size, pr * pc);
      ASSERT_GE(pr, rows);
      ASSERT_GE(pc, cols);
      std::vector<int> hits(static_cast<size_t>(size), 0);
      for (int64_t r = 0; r < pr; ++r) {
        for (int64_t c = 0; c < pc; ++c) {
          const int64_t i = gemm_scale_index(layout, r, c, rows, cols);
          ASSERT_GE(i, 0);
          ASSERT_LT(i, size) << "layout " << static_cast<int>(layout) << " shape " << rows << "x" << cols;
          ++hits[static_cast<size_t>(i)];
        }
      }
      for (int64_t i = 0; i < size; ++i)
        ASSERT_EQ(hits[static_cast<size_t>(i)], 1)
            << "layout " << static_cast<int>(layout) << " shape " << rows << "x" << cols << " slot " << i;
    }
  }
}

TEST(ScaleSwizzle, PaddingMatchesTheDocumentedAllocationSizes) {
  // cuBLAS 1-D block scales: roundup(rows, 128) x roundup(blocks, 4) bytes (TE nvfp4.rst: rowwise scales
  // [roundup(M, 128), roundup(K/16, 4)]).
  EXPECT_EQ(swizzled_size(GemmScaleLayout::kTiled128x4, 1, 1), 512);
  EXPECT_EQ(swizzled_size(GemmScaleLayout::kTiled128x4, 4096, 4096 / 16), 4096 * 256);
  EXPECT_EQ(swizzled_size(GemmScaleLayout::kVec128, 1, 1), 4);
  EXPECT_EQ(swizzled_size(GemmScaleLayout::kBlock128x128, 1, 1), 4);
  for (const GemmScaleLayout layout : kLayouts)
    EXPECT_EQ(scale_element_bytes(layout), layout == GemmScaleLayout::kTiled128x4 ? 1 : 4);
}

// What the kernel does, on the host: the real scales land at their slots, the padding is zero.
TEST(ScaleSwizzle, ReferenceSwizzleKeepsEveryScaleAndZeroesPadding) {
  for (const GemmScaleLayout layout : kLayouts) {
    const int64_t rows = 130, cols = 7;
    std::vector<float> src(static_cast<size_t>(rows * cols));
    for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i + 1);
    const int64_t pr = swizzled_rows(layout, rows), pc = swizzled_cols(layout, cols);
    std::vector<float> dst(static_cast<size_t>(swizzled_size(layout, rows, cols)), -1.0f);
    for (int64_t r = 0; r < pr; ++r)
      for (int64_t c = 0; c < pc; ++c)
        dst[static_cast<size_t>(gemm_scale_index(layout, r, c, rows, cols))] =
            (r < rows && c < cols) ? src[static_cast<size_t>(r * cols + c)] : 0.0f;
    double sum = 0;
    int64_t zeros = 0;
    for (const float v : dst) {
      ASSERT_GE(v, 0.0f);
      sum += v;
      zeros += v == 0.0f;
    }
    const double n = static_cast<double>(rows * cols);
    EXPECT_EQ(sum, n * (n + 1) / 2);
    EXPECT_EQ(zeros, pr * pc - rows * cols);
  }
}

}  // namespace
}  // namespace nibble::core::cuda
