#pragma once
// What each quantization scheme is, in one table: its block shape, how its block scales are stored, whether it
// carries a tensor-wide factor, its element format. The CPU and CUDA quantizers' layouts, both GEMM back-ends and
// tensor-parallel quantization read the facts here instead of re-deriving them in switches of their own.
#include <cstdint>

#include "precision/format.h"
#include "precision/host_device.h"
#include "precision/quantize.h"

namespace nibble::precision {

struct SchemeFacts {
  int block_rows = 0;     // rows one scale covers: 1 (1-D blocks), 16 or 128 (2-D tiles); 0 = per tensor
  int block_cols = 0;     // elements along a row (K) one scale covers; 0 = one scale for the tensor
  int scale_row_div = 1;  // rows sharing one stored row of scales (128x128 tiles: 128; NVFP4 16x16: 1, replicated)
  ScaleStorage scale = ScaleStorage::kFloat32;
  bool tensor_factor = false;       // an FP32 factor for the whole tensor: FP8's scale, NVFP4's global amax (S_dec)
  bool fp4 = false;                 // E2M1 elements by default, two per byte
  bool mask = false;                // QuEST's clip mask travels with the copy
  bool pow2_scale = false;          // power-of-two scales by default (FP8 1x128 and 128x128, as TE's recipe)
  Format element = formats::kE4M3;  // the default element format
};

NIBBLE_HOST_DEVICE constexpr SchemeFacts scheme_facts(Scheme s) {
  SchemeFacts f;
  switch (s) {
    case Scheme::kFP8Tensor:
      f.tensor_factor = true;
      break;
    case Scheme::kFP8Block128:
      f.block_rows = 1, f.block_cols = 128, f.pow2_scale = true;
      break;
    case Scheme::kFP8Block16:
      f.block_rows = 1, f.block_cols = 16;
      break;
    case Scheme::kFP8Block128x128:
      f.block_rows = f.block_cols = f.scale_row_div = 128, f.pow2_scale = true;
      break;
    case Scheme::kMXFP8:
      f.block_rows = 1, f.block_cols = 32, f.scale = ScaleStorage::kE8M0;
      break;
    case Scheme::kNVFP4:
      f.block_rows = 1, f.block_cols = 16, f.scale = ScaleStorage::kUE4M3, f.tensor_factor = f.fp4 = true;
      break;
    case Scheme::kNVFP4_2D:
      f.block_rows = f.block_cols = 16, f.scale = ScaleStorage::kUE4M3, f.tensor_factor = f.fp4 = true;
      break;
    case Scheme::kMXFP4:
      f.block_rows = 1, f.block_cols = 32, f.scale = ScaleStorage::kE8M0, f.fp4 = true;
      break;
    case Scheme::kMXFP4Quest:
      f.block_rows = 1, f.block_cols = 32, f.scale = ScaleStorage::kE8M0, f.fp4 = f.mask = true;
      break;
  }
  if (f.fp4) f.element = formats::kE2M1;
  return f;
}

}  // namespace nibble::precision
