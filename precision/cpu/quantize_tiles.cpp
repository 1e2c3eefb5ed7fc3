// The tile pass of the CPU quantizers (see quantize_tiles.h). Per tile: widen (bf16) or point into the
// input, find block amaxes, turn them into scales with precision/block_scale.h, multiply each block by
// its multiplier in cache and round the span with the vectorised encoder of convert_cpu.cpp
// (encode_span.h, i.e. format.h's encode_scalar); the columnwise copy is produced from the tile transposed
// in cache. Hadamard groups use the exact butterflies of quantize_hadamard.h.
#include "precision/cpu/quantize_tiles.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>

#include "precision/cpu/block_amax_lanes.h"
#include "precision/cpu/encode_rne_lanes.h"
#include "precision/cpu/encode_span.h"
#include "precision/cpu/quantize_hadamard.h"
#include "precision/cpu/quantize_quest_lanes.h"
#include "precision/cpu/quantize_rht_lanes.h"
#include "precision/cpu/tile_block_scales.h"
#include "precision/cpu/transpose_lanes.h"
#include "precision/scaling.h"

namespace nibble::precision::cpu {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// ---- small vector kernels -------------------------------------------------------------------------------

// max|x[0, n)| with NaN ignored (as std::max(a, |x|) does), and whether x holds NaN: the dispatched lanes of
// block_amax_lanes.h, or the scalar loop in a build without Highway (the same values in any order).
AmaxResult abs_max(const float* __restrict x, int64_t n) {
  bool nan = false;
#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
  const float a = abs_max_lanes(x, static_cast<size_t>(n), &nan);
#else
  float a = 0.0f;
  for (int64_t j = 0; j < n; ++j) {
    const float v = std::fabs(x[j]);
    nan = nan || std::isnan(v);
    a = std::max(a, v);
  }
#endif
  return {a, nan};
}

void widen_bf16(const uint16_t* __restrict b, int64_t n, float* __restrict out) {
  for (int64_t j = 0; j < n; ++j) out[j] = bits_float(static_cast<uint32_t>(b[j]) << 16);
}

// t[j * ldt + i] = x[i * ldx + j] for i < rows, j < cols: Highway's blocks in registers where the build has
// them (transpose_lanes.h), else by element (the same bits: a transpose only moves them).
void transpose_floats(const float* __restrict x, int64_t ldx, int64_t rows, int64_t cols, float* __restrict t,
                      int64_t ldt) {
#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
  transpose_floats_lanes(x, ldx, rows, cols, t, ldt);
#else
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) t[j * ldt + i] = x[i * ldx + j];
#endif
}

void transpose_bytes(const uint8_t* __restrict x, int64_t ldx, int64_t rows, int64_t cols, uint8_t* __restrict t,
                     int64_t ldt) {
  for (int64_t i0 = 0; i0 < rows; i0 += 16)
    for (int64_t j0 = 0; j0 < cols; j0 += 16) {
      const int64_t i1 = std::min(rows, i0 + 16), j1 = std::min(cols, j0 + 16);
      for (int64_t j = j0; j < j1; ++j)
        for (int64_t i = i0; i < i1; ++i) t[j * ldt + i] = x[i * ldx + j];
    }
}

// ---- per-thread scratch ----------------------------------------------------------------------------------

struct Scratch {
  alignas(64) float tile[kTileRows * kTileCols];        // bf16 input widened
  alignas(64) float transposed[kTileCols * kTileRows];  // the tile transposed (columnwise copy's rows)
  alignas(64) float rht[kTileRows * kTileCols];         // the tile RHT-transformed along its columns
  alignas(64) float quest[kTileRows * kTileCols];       // QuEST: transformed and scaled values
  uint8_t quest_codes[(kTileRows / 32) * kTileCols];
  alignas(64) float scaled[std::max(kTileRows, kTileCols)];
  alignas(64) uint8_t codes[std::max(kTileRows, kTileCols)];
  alignas(64) uint8_t tile_codes[kTileRows * kTileCols];  // 2-D schemes: rowwise codes of the tile
  alignas(64) uint8_t transposed_codes[kTileCols * kTileRows];
  BlockScale sub_scales[(kTileRows / 16) * (kTileCols / 16)];
  // 1-D block schemes: the amaxes and scales of one copy's blocks in this tile, row by row.
  static constexpr int64_t kMaxTileBlocks = std::max(kTileRows, kTileCols) * (std::max(kTileRows, kTileCols) / 16);
  alignas(64) float block_amax[kMaxTileBlocks];
  alignas(64) float block_mult[kMaxTileBlocks];
  alignas(64) float block_scale_inv[kMaxTileBlocks];
  alignas(64) uint8_t block_code[kMaxTileBlocks];
  alignas(64) float scaled_tile[kTileRows * kTileCols];  // a copy's scaled rows of this tile, contiguous
  alignas(64) uint8_t span_codes[kTileRows * kTileCols];  // their codes, one per byte
  SpanRandomScratch random;
};

// A tile as float32 rows: into the input (float32) or the widened copy (bfloat16).
struct TileView {
  const float* p;
  int64_t ld;
  int64_t r0, c0, rows, cols;
  const float* row(int64_t i) const { return p + i * ld; }
};

TileView load_tile(const TileInput& in, int64_t r0, int64_t c0, Scratch& s) {
  const int64_t rows = std::min(kTileRows, in.rows - r0), cols = std::min(kTileCols, in.cols - c0);
  if (in.type == InputType::kFloat32)
    return {static_cast<const float*>(in.data) + r0 * in.cols + c0, in.cols, r0, c0, rows, cols};
  const auto* b = static_cast<const uint16_t*>(in.data) + r0 * in.cols + c0;
  for (int64_t i = 0; i < rows; ++i) widen_bf16(b + i * in.cols, cols, s.tile + i * kTileCols);
  return {s.tile, kTileCols, r0, c0, rows, cols};
}

// The tile transposed into s.transposed (row j = input column c0 + j, elements rows r0..), RHT-transformed
// along those rows when asked. Returns true if a transformed group is NaN.
// Asks for the rows of tile t (the one a thread takes next under the static schedule) while the current
// tile is being worked on: a tile row is only 512 bytes, too short for the hardware prefetcher to ramp
// up on, so without this every row starts with a miss to memory.
// (__builtin_prefetch(p, 0, 2) is x86's prefetcht1, _MM_HINT_T1, and ARM's prfm pldl2keep.)
void prefetch_tile(const TileInput& in, int64_t t, int64_t tile_cols) {
  const int64_t r0 = (t / tile_cols) * kTileRows, c0 = (t % tile_cols) * kTileCols;
  const int64_t rows = std::min(kTileRows, in.rows - r0), cols = std::min(kTileCols, in.cols - c0);
  const int64_t elem = in.type == InputType::kFloat32 ? 4 : 2;
  const char* base = static_cast<const char*>(in.data);
  for (int64_t i = 0; i < rows; ++i) {
    const char* row = base + ((r0 + i) * in.cols + c0) * elem;
    for (int64_t b = 0; b < cols * elem; b += 64) __builtin_prefetch(row + b, 0, 2);
  }
}

// The tile RHT-transformed down its columns (groups of 16 rows) into s.rht (row-major, ld kTileCols),
// rounded to bf16 when asked. Returns true if a transformed value is NaN; check_nan = false skips that
// look when a float32 input's transform was already checked (rht_amax), since rounding is then a no-op.
bool rht_tile(const TileView& v, uint32_t sign_mask, bool round_to_bf16, Scratch& s, bool check_nan = true) {
  for (int64_t g = 0; g + 16 <= v.rows; g += 16)
    rht16_rows(v.row(g), v.ld, v.cols, sign_mask, s.rht + g * kTileCols, kTileCols);
  if (!round_to_bf16 && !check_nan) return false;
  bool nan = false;
  for (int64_t i = 0; i < v.rows; ++i) {
    float* row = s.rht + i * kTileCols;
    uint32_t any_nan = 0;
    for (int64_t j = 0; j < v.cols; ++j) {
      const float r = round_to_bf16 ? round_to_bf16_ieee(row[j]) : row[j];
      any_nan |= std::isnan(r) ? 1u : 0u;
      row[j] = r;
    }
    nan = nan || any_nan != 0;
  }
  return nan;
}

// The tile transposed into s.transposed (row j = input column c0 + j, elements rows r0..), RHT-transformed
// along those rows when asked. Returns true if a transformed group is NaN.
bool transpose_tile(const TileView& v, bool rht, uint32_t sign_mask, bool round_to_bf16, Scratch& s) {
  if (!rht) {
    transpose_floats(v.p, v.ld, v.rows, v.cols, s.transposed, kTileRows);
    return false;
  }
  const bool nan = rht_tile(v, sign_mask, round_to_bf16, s, /*check_nan=*/false);
  transpose_floats(s.rht, kTileCols, v.rows, v.cols, s.transposed, kTileRows);
  return nan;
}

// y[i * n + j] = x[i * ld + j] * mult[i * blocks + j / width] for i < rows, j < n (blocks = ceil(n / width)):
// Highway's lanes where the build has them (block_amax_lanes.h), else the scalar loop (same bits: one
// float32 product per element).
void multiply_blocks_rows(const float* __restrict x, int64_t ld, int64_t rows, int64_t n, int64_t width,
                          const float* __restrict mult, float* __restrict y) {
#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
  multiply_blocks_rows_lanes(x, ld, rows, n, width, mult, y, n);
#else
  const int64_t blocks = ceil_div(n, width);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t b = 0; b < blocks; ++b) {
      const float m = mult[i * blocks + b];
      for (int64_t j = b * width; j < std::min(n, (b + 1) * width); ++j) y[i * n + j] = x[i * ld + j] * m;
    }
#endif
}

// Orders this thread's non-temporal stores (encode_span_rows' stream) before what follows (the end of the
// parallel region, after which other threads read the codes). Only the Highway encoder streams: a build
// without it makes plain stores, which the parallel region's end orders by itself.
inline void store_fence() {
#if NIBBLE_HAVE_RNE_LANES
  stream_fence();  // the dispatched lanes may stream on any target, whatever this file's -march
#endif
}

// ---- one span of one copy's row ------------------------------------------------------------------------

class SpanEncoder {
 public:
  explicit SpanEncoder(const QuantizeOptions& o)
      : o_(o), bs_(block_shape(o.scheme)), fp4_(o.element.bits() <= 4) {}

  // A 2-D scheme's elements [col0, col0 + n) of row `row` of copy `t`, from x[0, n), with the tile's block
  // scales for this span (`fixed`, one per block); col0 is a multiple of the block width. keep_codes: where
  // to also leave the unpacked codes (for the columnwise copy, their transpose).
  void encode_2d(const CopyTarget& t, const float* x, int64_t n, int64_t row, int64_t col0, const BlockScale* fixed,
                 uint8_t* keep_codes, Scratch& s) const {
    const int64_t width = bs_.cols;
    for (int64_t b0 = 0; b0 < n; b0 += width) {
      const int64_t len = std::min(width, n - b0);
      const BlockScale b = fixed[b0 / width];
      if (o_.scheme == Scheme::kNVFP4_2D) store_scale(t, row, (col0 + b0) / width, b);  // replicated per row
      const float m = b.multiplier;
      for (int64_t j = b0; j < b0 + len; ++j) s.scaled[j] = x[j] * m;
    }
    finish(t, s.scaled, 1.0f, n, row, col0, keep_codes, s);
  }

  // Stores the block scales of elements [col0, col0 + n) of row `row` (one per block of the span).
  void store_scales(const CopyTarget& t, int64_t n, int64_t row, int64_t col0, const uint8_t* code,
                    const float* scale_inv) const {
    if (!t.out.scale) return;
    const int64_t width = bs_.cols, blocks = ceil_div(n, width), at = row * t.layout.scale_cols + col0 / width;
    if (t.layout.scale_storage == ScaleStorage::kFloat32) {
      std::memcpy(static_cast<float*>(t.out.scale) + at, scale_inv, static_cast<size_t>(blocks) * sizeof(float));
    } else {
      std::memcpy(static_cast<uint8_t*>(t.out.scale) + at, code, static_cast<size_t>(blocks));
    }
  }

  // Rounds `rows` spans x[i * ld, i * ld + n), block b of row i times mult[i * blocks + b], into rows
  // row0 + i of the copy from column col0: the products go to a contiguous buffer first, so that one
  // encoder call takes the tile (an encoder call per block, 16 elements for NVFP4, costs more than it does).
  void finish_rows_blocks(const CopyTarget& t, const float* x, int64_t ld, const float* mult, int64_t rows, int64_t n,
                          int64_t row0, int64_t col0, Scratch& s) const {
    multiply_blocks_rows(x, ld, rows, n, bs_.cols, mult, s.scaled_tile);
    finish_rows(t, s.scaled_tile, n, 1.0f, rows, n, row0, col0, s);
  }

  // Rounds `rows` spans x[i * ld, i * ld + n) times `scale` into rows row0 + i of the copy from column col0.
  // Under round-to-nearest one encode_span_rows call takes them all (the encoder's constant set-up is then
  // paid once per tile, not per row); stochastic rounding draws bits per row (keyed by element index).
  void finish_rows(const CopyTarget& t, const float* x, int64_t ld, float scale, int64_t rows, int64_t n, int64_t row0,
                   int64_t col0, Scratch& s) const {
    if (o_.rounding == Rounding::kStochastic || !t.out.data) {
      for (int64_t i = 0; i < rows; ++i) finish(t, x + i * ld, scale, n, row0 + i, col0, nullptr, s);
      return;
    }
    if (!fp4_) {
      encode_span_rows(x, ld, rows, n, scale, o_.element, t.out.data + row0 * t.layout.data_row_bytes + col0,
                       t.layout.data_row_bytes, /*stream=*/true);
      return;
    }
    encode_span_rows(x, ld, rows, n, scale, o_.element, s.span_codes, n);
    for (int64_t i = 0; i < rows; ++i)
      pack_nibble_span(s.span_codes + i * n, static_cast<size_t>(n),
                       t.out.data + (row0 + i) * t.layout.data_row_bytes + col0 / 2);
  }

 private:
  static void store_scale(const CopyTarget& t, int64_t row, int64_t block, const BlockScale& b) {
    if (!t.out.scale) return;
    const int64_t i = row * t.layout.scale_cols + block;
    if (t.layout.scale_storage == ScaleStorage::kFloat32) {
      static_cast<float*>(t.out.scale)[i] = b.scale_inv;
    } else {
      static_cast<uint8_t*>(t.out.scale)[i] = static_cast<uint8_t>(b.code);
    }
  }

  // Rounds x[0, n) * scale and stores the codes (packed for FP4) at (row, col0) of the copy.
  void finish(const CopyTarget& t, const float* x, float scale, int64_t n, int64_t row, int64_t col0,
              uint8_t* keep_codes, Scratch& s) const {
    constexpr int r = 8;
    const uint16_t* random = nullptr;
    if (o_.rounding == Rounding::kStochastic)
      random = random_span_bits(o_.seed, t.offset, t.sr.index(row, col0),
                                static_cast<size_t>(n), r, s.random);
    uint8_t* dst = t.out.data ? t.out.data + row * t.layout.data_row_bytes + (fp4_ ? col0 / 2 : col0) : nullptr;
    uint8_t* codes = keep_codes ? keep_codes : (fp4_ || !dst ? s.codes : dst);
    encode_span(x, static_cast<size_t>(n), scale, o_.element, o_.rounding, random, r, codes);
    if (!dst) return;
    if (fp4_) {
      pack_nibble_span(codes, static_cast<size_t>(n), dst);
    } else if (codes != dst) {
      std::memcpy(dst, codes, static_cast<size_t>(n));
    }
  }

  const QuantizeOptions& o_;
  BlockShape bs_;
  bool fp4_;
};

// ---- 1-D block schemes -------------------------------------------------------------------------------------

// `rows` rows of copy `t` in this tile: row i is x[i * ld, i * ld + n), copy row row0 + i from column col0.
// The blocks' amaxes, then all their scales in one loop, then the rows' encoding. Returns max|x| and the
// NaN flag of the spans (the input's, when these are the tile's rows).
AmaxResult encode_block_rows(const SpanEncoder& enc, const QuantizeOptions& o, float value_for_inf, const CopyTarget& t,
                             const float* x, int64_t ld, int64_t rows, int64_t n, int64_t row0, int64_t col0,
                             Scratch& s) {
  const int64_t width = block_shape(o.scheme).cols, blocks = ceil_div(n, width);
  bool nan = false;
  rows_block_amaxes(x, ld, rows, n, width, s.block_amax, &nan);
  block_scales(o.scheme, block_scale_constants(o, value_for_inf, t.nvfp4_global_enc), s.block_amax, rows * blocks,
               BlockScaleArrays{s.block_mult, s.block_code, s.block_scale_inv});
  for (int64_t i = 0; i < rows; ++i)
    enc.store_scales(t, n, row0 + i, col0, s.block_code + i * blocks, s.block_scale_inv + i * blocks);
  enc.finish_rows_blocks(t, x, ld, s.block_mult, rows, n, row0, col0, s);
  float amax = 0.0f;
  for (int64_t k = 0; k < rows * blocks; ++k) amax = std::max(amax, s.block_amax[k]);
  return {amax, nan};
}

// ---- MXFP4 QuEST ------------------------------------------------------------------------------------------

// Stores one row of a QuEST copy but its codes: the scale codes (one per 32 elements, `codes` strided by
// code_stride) and the clip mask, taken from the scaled values.
void store_quest_row(const CopyTarget& t, const float* scaled, const uint8_t* codes, int64_t code_stride, int64_t n,
                     int64_t row, int64_t col0) {
  if (t.out.scale)
    for (int64_t g = 0; g < n / 32; ++g)
      static_cast<uint8_t*>(t.out.scale)[row * t.layout.scale_cols + col0 / 32 + g] = codes[g * code_stride];
  quest_clip_mask(scaled, n, t.out.mask + row * t.layout.cols + col0);
}

// Rowwise QuEST of a tile: groups run along the rows, so the tile is transposed, transformed down its
// columns (quest_rows' lane layout) and the results transposed back. Returns true on a NaN transform.
bool quest_rowwise_tile(const SpanEncoder& enc, const CopyTarget& row, const TileView& v, Scratch& s,
                        QuestInputStats* input) {
  transpose_floats(v.p, v.ld, v.rows, v.cols, s.transposed, kTileRows);
  bool nan = false;
  for (int64_t g = 0; g < v.cols / 32; ++g) {
    const int64_t at = g * 32 * kTileRows;
    nan = quest_rows(s.transposed + at, kTileRows, v.rows, s.rht + at, kTileRows, s.quest_codes + g * kTileRows,
                     input) || nan;
  }
  transpose_floats(s.rht, kTileRows, v.cols, v.rows, s.quest, v.cols);  // rows contiguous for finish_rows
  for (int64_t i = 0; i < v.rows; ++i)
    store_quest_row(row, s.quest + i * v.cols, s.quest_codes + i, kTileRows, v.cols, v.r0 + i, v.c0);
  enc.finish_rows(row, s.quest, v.cols, 1.0f, v.rows, v.cols, v.r0, v.c0, s);
  return nan;
}

// Columnwise QuEST of a tile: groups run down the columns, quest_rows' layout as is; the scaled values
// are transposed into the copy's rows. Returns true on a NaN transform.
bool quest_columnwise_tile(const SpanEncoder& enc, const CopyTarget& col, const TileView& v, Scratch& s,
                           QuestInputStats* input) {
  bool nan = false;
  for (int64_t g = 0; g < v.rows / 32; ++g) {
    const int64_t at = g * 32 * kTileCols;
    nan = quest_rows(v.row(g * 32), v.ld, v.cols, s.quest + at, kTileCols, s.quest_codes + g * kTileCols, input) || nan;
  }
  transpose_floats(s.quest, kTileCols, v.rows, v.cols, s.transposed, v.rows);  // rows contiguous
  for (int64_t j = 0; j < v.cols; ++j)
    store_quest_row(col, s.transposed + j * v.rows, s.quest_codes + j, kTileCols, v.rows, v.c0 + j, v.r0);
  enc.finish_rows(col, s.transposed, v.rows, 1.0f, v.cols, v.rows, v.c0, v.r0, s);
  return nan;
}

// ---- 2-D schemes -----------------------------------------------------------------------------------------

// Tile scales of this work tile: one 128x128 scale (fp8_block128x128, the work tile itself) or 16x16 ones
// (nvfp4_2d) into s.sub_scales, row-major by sub-tile.
void tile_scales(const QuantizeOptions& o, const TileView& v, float value_for_inf, float nv_global_enc, Scratch& s) {
  const int64_t h = block_shape(o.scheme).rows;
  const int64_t sub_cols = ceil_div(v.cols, h);
  for (int64_t si = 0; si < ceil_div(v.rows, h); ++si)
    for (int64_t sj = 0; sj < sub_cols; ++sj) {
      float a = 0.0f;
      for (int64_t i = si * h; i < std::min(v.rows, (si + 1) * h); ++i)
        a = std::max(a, abs_max(v.row(i) + sj * h, std::min(h, v.cols - sj * h)).amax);
      s.sub_scales[si * sub_cols + sj] = block_scale(o, a, value_for_inf, nv_global_enc);
    }
}

// The columnwise copy of a 2-D scheme from the tile's rowwise codes: codes and scales transposed.
void transpose_2d_tile(const QuantizeOptions& o, const TileView& v, const CopyTarget& col, Scratch& s) {
  const bool fp4 = o.element.bits() <= 4;
  transpose_bytes(s.tile_codes, kTileCols, v.rows, v.cols, s.transposed_codes, kTileRows);
  for (int64_t j = 0; j < v.cols; ++j) {
    uint8_t* dst = col.out.data + (v.c0 + j) * col.layout.data_row_bytes + (fp4 ? v.r0 / 2 : v.r0);
    if (fp4) {
      pack_nibble_span(s.transposed_codes + j * kTileRows, static_cast<size_t>(v.rows), dst);
    } else {
      std::memcpy(dst, s.transposed_codes + j * kTileRows, static_cast<size_t>(v.rows));
    }
  }
  if (o.scheme == Scheme::kFP8Block128x128) {
    static_cast<float*>(col.out.scale)[(v.c0 / 128) * col.layout.scale_cols + v.r0 / 128] = s.sub_scales[0].scale_inv;
  } else {  // NVFP4 2-D: column c's scale for row block r is the tile (r, c / 16), per column
    const int64_t sub_cols = ceil_div(v.cols, 16);
    for (int64_t j = 0; j < v.cols; ++j)
      for (int64_t si = 0; si < ceil_div(v.rows, 16); ++si)
        static_cast<uint8_t*>(col.out.scale)[(v.c0 + j) * col.layout.scale_cols + v.r0 / 16 + si] =
            static_cast<uint8_t>(s.sub_scales[si * sub_cols + j / 16].code);
  }
}

// The rowwise copy alone of a 1-D block scheme (fp8_tensor too): no transpose is needed, so the input is
// walked in its own order, kBandRows rows at a time and 128 columns after 128 columns: a few sequential
// streams the hardware prefetcher follows, where a 128x128 tile is 128 streams of 512 bytes.
constexpr int64_t kBandRows = 8;

PassResult rowwise_pass(const TileInput& in, const QuantizeOptions& o, float value_for_inf, const CopyTarget& row,
                        bool measure_amax, int threads) {
  const SpanEncoder enc(o);
  const int64_t bands = ceil_div(in.rows, kBandRows);
  float amax = 0.0f;
  bool nan = false;
  const int team = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(bands, threads)));
#pragma omp parallel num_threads(team) reduction(max : amax) reduction(|| : nan)
  {
    auto sp = std::make_unique<Scratch>();
    Scratch& s = *sp;
#pragma omp for schedule(static)
    for (int64_t band = 0; band < bands; ++band) {
      const int64_t r0 = band * kBandRows, rows = std::min(kBandRows, in.rows - r0);
      for (int64_t c0 = 0; c0 < in.cols; c0 += kTileCols) {
        const int64_t cols = std::min(kTileCols, in.cols - c0);
        const float* x;
        int64_t ld;
        if (in.type == InputType::kFloat32) {
          x = static_cast<const float*>(in.data) + r0 * in.cols + c0, ld = in.cols;
        } else {
          const auto* b = static_cast<const uint16_t*>(in.data) + r0 * in.cols + c0;
          for (int64_t i = 0; i < rows; ++i) widen_bf16(b + i * in.cols, cols, s.tile + i * kTileCols);
          x = s.tile, ld = kTileCols;
        }
        AmaxResult r{};
        if (o.scheme == Scheme::kFP8Tensor) {
          if (measure_amax)
            for (int64_t i = 0; i < rows; ++i) {
              const AmaxResult ri = abs_max(x + i * ld, cols);
              r = {std::max(r.amax, ri.amax), r.nan || ri.nan};
            }
          enc.finish_rows(row, x, ld, row.tensor_scale.multiplier, rows, cols, r0, c0, s);
        } else {
          r = encode_block_rows(enc, o, value_for_inf, row, x, ld, rows, cols, r0, c0, s);
        }
        if (measure_amax) {
          amax = std::max(amax, r.amax);
          nan = nan || r.nan;
        }
      }
    }
    store_fence();  // the non-temporal code stores of finish_rows
  }
  return PassResult{AmaxResult{amax, nan}, false};
}

}  // namespace

AmaxResult input_amax(const TileInput& in, int threads) {
  const int64_t n = in.rows * in.cols;
  constexpr int64_t kChunk = 16384;
  const int64_t chunks = ceil_div(n, kChunk);
  float amax = 0.0f;
  bool nan = false;
  const int team = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(chunks, threads)));
#pragma omp parallel for schedule(static) num_threads(team) reduction(max : amax) reduction(|| : nan)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * kChunk, len = std::min(kChunk, n - b);
    AmaxResult r;
    if (in.type == InputType::kFloat32) {
      r = abs_max(static_cast<const float*>(in.data) + b, len);
    } else {
      alignas(64) float wide[kChunk];
      widen_bf16(static_cast<const uint16_t*>(in.data) + b, len, wide);
      r = abs_max(wide, len);
    }
    amax = std::max(amax, r.amax);
    nan = nan || r.nan;
  }
  return {amax, nan};
}

RhtAmaxResult rht_amax(const TileInput& in, uint32_t sign_mask, bool round_to_bf16, int threads) {
  float amax = 0.0f, input_amax = 0.0f;
  bool nan = false, input_nan = false;
  const int64_t tile_rows = ceil_div(in.rows, kTileRows), tile_cols = ceil_div(in.cols, kTileCols);
  const int64_t tiles = tile_rows * tile_cols;
  const int team = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(tiles, threads)));
#pragma omp parallel num_threads(team) reduction(max : amax, input_amax) reduction(|| : nan, input_nan)
  {
    auto s = std::make_unique<Scratch>();
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      if (t + 1 < tiles) prefetch_tile(in, t + 1, tile_cols);
      const TileView v = load_tile(in, (t / tile_cols) * kTileRows, (t % tile_cols) * kTileCols, *s);
      if (!round_to_bf16 && v.rows % 16 == 0) {  // float32: both maxima in registers, nothing stored
        float in_m = 0.0f, out_m = 0.0f;
        bool clean = true;
        for (int64_t g = 0; g < v.rows; g += 16)
          clean = rht16_rows_amax(v.row(g), v.ld, v.cols, sign_mask, &in_m, &out_m) && clean;
        if (clean) {
          input_amax = std::max(input_amax, in_m);
          amax = std::max(amax, out_m);
          continue;
        }  // else a NaN: the storing path below sorts out whose
      }
      for (int64_t i = 0; i < v.rows; ++i) {
        const AmaxResult r = abs_max(v.row(i), v.cols);
        input_amax = std::max(input_amax, r.amax);
        input_nan = input_nan || r.nan;
      }
      // The transform's NaN flag from the amax below (rounding to bf16, when asked, keeps NaN NaN).
      rht_tile(v, sign_mask, round_to_bf16, *s, /*check_nan=*/false);
      for (int64_t i = 0; i < v.rows; ++i) {
        const AmaxResult r = abs_max(s->rht + i * kTileCols, v.cols);
        amax = std::max(amax, r.amax);
        nan = nan || r.nan;
      }
    }
  }
  return {{input_amax, input_nan}, {amax, nan}};
}

PassResult quantize_tiles(const TileInput& in, const QuantizeOptions& o, float value_for_inf, const CopyTarget* row,
                          const CopyTarget* col, bool measure_amax, int threads) {
  const bool quest = o.scheme == Scheme::kMXFP4Quest, two_d = is_2d(o.scheme);
  if (row && !col && !quest && !two_d) return rowwise_pass(in, o, value_for_inf, *row, measure_amax, threads);
  const SpanEncoder enc(o);
  const uint32_t sign_mask = rht_sign_mask(o.rht_seed);
  const bool bf16 = in.type == InputType::kBFloat16;
  const int64_t tile_rows = ceil_div(in.rows, kTileRows), tile_cols = ceil_div(in.cols, kTileCols);
  const int64_t tiles = tile_rows * tile_cols;
  float amax = 0.0f;
  bool nan = false, transform_nan = false;
  const int team = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(tiles, threads)));
#pragma omp parallel num_threads(team) reduction(max : amax) reduction(|| : nan, transform_nan)
  {
    auto sp = std::make_unique<Scratch>();
    Scratch& s = *sp;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < tiles; ++t) {
      if (t + 1 < tiles) prefetch_tile(in, t + 1, tile_cols);
      const TileView v = load_tile(in, (t / tile_cols) * kTileRows, (t % tile_cols) * kTileCols, s);
      const bool block_1d = !two_d && !quest && o.scheme != Scheme::kFP8Tensor;
      // QuEST takes the amax inside its transform (every element passes through it once per copy).
      QuestInputStats quest_input;
      if (measure_amax && !(row && block_1d) && !quest) {
        for (int64_t i = 0; i < v.rows; ++i) {
          const AmaxResult r = abs_max(v.row(i), v.cols);
          amax = std::max(amax, r.amax);
          nan = nan || r.nan;
        }
      }
      if (two_d) {
        tile_scales(o, v, value_for_inf, row->nvfp4_global_enc, s);
        if (o.scheme == Scheme::kFP8Block128x128 && row->out.scale)
          static_cast<float*>(row->out.scale)[(v.r0 / 128) * row->layout.scale_cols + v.c0 / 128] = s.sub_scales[0].scale_inv;
      }
      if (row && quest) {
        transform_nan = quest_rowwise_tile(enc, *row, v, s, measure_amax ? &quest_input : nullptr) || transform_nan;
        amax = std::max(amax, quest_input.amax);
        nan = nan || quest_input.nan;
      } else if (row && block_1d) {
        const AmaxResult r = encode_block_rows(enc, o, value_for_inf, *row, v.p, v.ld, v.rows, v.cols, v.r0, v.c0, s);
        if (measure_amax) {
          amax = std::max(amax, r.amax);
          nan = nan || r.nan;
        }
      } else if (row && o.scheme == Scheme::kFP8Tensor) {
        enc.finish_rows(*row, v.row(0), v.ld, row->tensor_scale.multiplier, v.rows, v.cols, v.r0, v.c0, s);
      } else if (row) {
        const BlockShape bs = block_shape(o.scheme);  // (two_d: every other scheme is handled above)
        for (int64_t i = 0; i < v.rows; ++i)
          enc.encode_2d(*row, v.row(i), v.cols, v.r0 + i, v.c0,
                        s.sub_scales + (i / bs.rows) * ceil_div(v.cols, bs.cols), s.tile_codes + i * kTileCols, s);
      }
      if (!col) continue;
      if (two_d) {
        transpose_2d_tile(o, v, *col, s);
        continue;
      }
      if (quest) {
        // (Both copies see every element: with the rowwise copy made, its stats suffice.)
        transform_nan =
            quest_columnwise_tile(enc, *col, v, s, measure_amax && !row ? &quest_input : nullptr) || transform_nan;
        amax = std::max(amax, quest_input.amax);
        nan = nan || quest_input.nan;
        continue;
      }
      transform_nan = transpose_tile(v, o.rht, sign_mask, bf16, s) || transform_nan;
      if (o.scheme == Scheme::kFP8Tensor) {
        enc.finish_rows(*col, s.transposed, kTileRows, col->tensor_scale.multiplier, v.cols, v.rows, v.c0, v.r0, s);
      } else {  // block_1d
        encode_block_rows(enc, o, value_for_inf, *col, s.transposed, kTileRows, v.cols, v.rows, v.c0, v.r0, s);
      }
    }
    store_fence();  // the non-temporal code stores of finish_rows
  }
  return PassResult{AmaxResult{amax, nan}, transform_nan};
}

}  // namespace nibble::precision::cpu
