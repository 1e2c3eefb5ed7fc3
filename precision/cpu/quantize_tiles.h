#pragma once
// The CPU quantizer's tile pass (internal to precision/cpu): the input is walked in 128x128 tiles; each
// tile, while in cache, yields its part of the rowwise copy and of the columnwise copy (transposed in
// cache, RHT-transformed when asked), so the input is read once per pass and never transposed in memory.
// Threads take whole tiles; every output byte is a function of the input alone (SR bits are keyed by
// element index), so results do not depend on the thread count.
#include <cmath>  // before block_scale.h: scaling.h uses INFINITY
#include <cstdint>

#include "precision/block_scale.h"
#include "precision/quantize.h"
#include "precision/scheme_facts.h"

namespace nibble::precision::cpu {

inline constexpr int64_t kTileRows = 128;  // a multiple of every block height along M (16, 32, 128)
inline constexpr int64_t kTileCols = 128;  // a multiple of every block width along K (16, 32, 128)

struct BlockShape {
  int64_t rows;  // 0 = the whole tensor (per-tensor scaling)
  int64_t cols;
};
// From precision/scheme_facts.h, the one table of per-scheme facts.
inline BlockShape block_shape(Scheme s) {
  return {scheme_facts(s).block_rows, scheme_facts(s).block_cols};
}
inline bool is_fp4(Scheme s) {
  return scheme_facts(s).fp4;
}
inline bool is_2d(Scheme s) {
  return scheme_facts(s).block_rows > 1;
}

struct TileInput {
  const void* data;
  InputType type;
  int64_t rows;
  int64_t cols;
};

// One copy to fill. out.data / out.scale may be null (the rowwise codes of a 2-D scheme whose rowwise copy
// was not asked for: the tiles still encode them, to transpose them into the columnwise copy).
struct CopyTarget {
  CopyLayout layout;
  QuantizedCopy out;
  uint64_t offset;            // SR counter offset of this copy
  SrCopyIndexing sr;          // SR element index of (row, col) of this copy
  float nvfp4_global_enc;     // NVFP4's S_enc from this copy's global amax
  BlockScale tensor_scale;    // per-tensor schemes
};

struct AmaxResult {
  float amax = 0.0f;  // max|x|, NaN ignored
  bool nan = false;   // x has NaN
};

// max|x| over the input.
AmaxResult input_amax(const TileInput& in, int threads);

// max|x| and max|RHT16(column groups of x)| (the columnwise copy's global amax under RHT; rows % 16 == 0)
// in one read of the input. transformed.nan is set when a transformed group is NaN (only possible when the
// input has Inf of both signs or NaN).
struct RhtAmaxResult {
  AmaxResult input;
  AmaxResult transformed;
};
RhtAmaxResult rht_amax(const TileInput& in, uint32_t sign_mask, bool round_to_bf16, int threads);

struct PassResult {
  AmaxResult input;            // filled when measure_amax
  bool transform_nan = false;  // a Hadamard group (RHT or QuEST) became NaN
};

// Fills the requested copies (row and/or col non-null); the rowwise copy alone of a 1-D scheme is walked in
// row order instead of tiles (no transpose needed). For 2-D schemes `row` must be given (its codes
// are the columnwise copy's). measure_amax: also take max|x| and the NaN flag on the way (schemes whose
// scales do not need the global amax up front get away with one pass).
PassResult quantize_tiles(const TileInput& in, const QuantizeOptions& o, float value_for_inf, const CopyTarget* row,
                          const CopyTarget* col, bool measure_amax, int threads);

}  // namespace nibble::precision::cpu
