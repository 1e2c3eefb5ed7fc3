// transpose_lanes.h's transpose in Highway, compiled once per target (encode_rne_lanes.cpp says how
// foreach_target.h and the dispatch table work). 256-bit and wider targets (AVX2, AVX-512) take 8x8 blocks
// with 256-bit vectors, the hand-written AVX kernel's shuffles one for one (unpacklo/hi_ps = InterleaveLower/
// Upper on floats, shuffle_ps (1,0,1,0)/(3,2,3,2) = InterleaveLower/Upper on 64-bit pairs, permute2f128
// 0x20/0x31 = ConcatLowerLower/UpperUpper); 128-bit targets (SSE4, SSSE3, NEON) 4x4 blocks with the first two
// stages; the scalar target the loop.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "precision/cpu/transpose_lanes.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/highway.h>

#include <cstdint>

#include "precision/cpu/transpose_lanes.h"

HWY_BEFORE_NAMESPACE();
namespace nibble::precision::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_SCALAR
constexpr int64_t kBlock = 0;  // no blocks: the loop below takes everything
HWY_INLINE void transpose_block(const float*, int64_t, float*, int64_t) {}
#elif HWY_MAX_BYTES >= 32 && !HWY_HAVE_SCALABLE
constexpr int64_t kBlock = 8;
// One 8x8 block: t[j * ldt + i] = x[i * ldx + j], in registers.
HWY_INLINE void transpose_block(const float* HWY_RESTRICT x, int64_t ldx, float* HWY_RESTRICT t, int64_t ldt) {
  const hn::FixedTag<float, 8> d;
  const hn::Repartition<uint64_t, decltype(d)> d64;
  using V = hn::Vec<decltype(d)>;
  V r[8], u[8], v[8];
  for (int i = 0; i < 8; ++i) r[i] = hn::LoadU(d, x + i * ldx);
  for (int i = 0; i < 8; i += 2) {
    u[i] = hn::InterleaveLower(d, r[i], r[i + 1]);
    u[i + 1] = hn::InterleaveUpper(d, r[i], r[i + 1]);
  }
  auto lo64 = [&](V a, V b) { return hn::BitCast(d, hn::InterleaveLower(d64, hn::BitCast(d64, a), hn::BitCast(d64, b))); };
  auto hi64 = [&](V a, V b) { return hn::BitCast(d, hn::InterleaveUpper(d64, hn::BitCast(d64, a), hn::BitCast(d64, b))); };
  for (int i = 0; i < 8; i += 4) {
    v[i] = lo64(u[i], u[i + 2]);
    v[i + 1] = hi64(u[i], u[i + 2]);
    v[i + 2] = lo64(u[i + 1], u[i + 3]);
    v[i + 3] = hi64(u[i + 1], u[i + 3]);
  }
  for (int j = 0; j < 4; ++j) {
    hn::StoreU(hn::ConcatLowerLower(d, v[j + 4], v[j]), d, t + j * ldt);
    hn::StoreU(hn::ConcatUpperUpper(d, v[j + 4], v[j]), d, t + (j + 4) * ldt);
  }
}
#else
constexpr int64_t kBlock = 4;
// One 4x4 block: t[j * ldt + i] = x[i * ldx + j], in registers.
HWY_INLINE void transpose_block(const float* HWY_RESTRICT x, int64_t ldx, float* HWY_RESTRICT t, int64_t ldt) {
  const hn::FixedTag<float, 4> d;
  const hn::Repartition<uint64_t, decltype(d)> d64;
  using V = hn::Vec<decltype(d)>;
  const V r0 = hn::LoadU(d, x), r1 = hn::LoadU(d, x + ldx), r2 = hn::LoadU(d, x + 2 * ldx),
          r3 = hn::LoadU(d, x + 3 * ldx);
  const auto u0 = hn::BitCast(d64, hn::InterleaveLower(d, r0, r1));  // x00 x10 x01 x11
  const auto u1 = hn::BitCast(d64, hn::InterleaveUpper(d, r0, r1));  // x02 x12 x03 x13
  const auto u2 = hn::BitCast(d64, hn::InterleaveLower(d, r2, r3));  // x20 x30 x21 x31
  const auto u3 = hn::BitCast(d64, hn::InterleaveUpper(d, r2, r3));  // x22 x32 x23 x33
  hn::StoreU(hn::BitCast(d, hn::InterleaveLower(d64, u0, u2)), d, t);
  hn::StoreU(hn::BitCast(d, hn::InterleaveUpper(d64, u0, u2)), d, t + ldt);
  hn::StoreU(hn::BitCast(d, hn::InterleaveLower(d64, u1, u3)), d, t + 2 * ldt);
  hn::StoreU(hn::BitCast(d, hn::InterleaveUpper(d64, u1, u3)), d, t + 3 * ldt);
}
#endif

void TransposeFloats(const float* HWY_RESTRICT x, int64_t ldx, int64_t rows, int64_t cols, float* HWY_RESTRICT t,
                     int64_t ldt) {
  int64_t full_rows = 0, full_cols = 0;
  if constexpr (kBlock > 0) {
    full_rows = rows / kBlock * kBlock;
    full_cols = cols / kBlock * kBlock;
    for (int64_t i0 = 0; i0 < full_rows; i0 += kBlock)
      for (int64_t j0 = 0; j0 < full_cols; j0 += kBlock)
        transpose_block(x + i0 * ldx + j0, ldx, t + j0 * ldt + i0, ldt);
  }
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = (i < full_rows ? full_cols : 0); j < cols; ++j) t[j * ldt + i] = x[i * ldx + j];
}

}  // namespace nibble::precision::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble::precision {

HWY_EXPORT(TransposeFloats);

void transpose_floats_lanes(const float* __restrict x, int64_t ldx, int64_t rows, int64_t cols, float* __restrict t,
                            int64_t ldt) {
  HWY_DYNAMIC_DISPATCH(TransposeFloats)(x, ldx, rows, cols, t, ldt);
}

}  // namespace nibble::precision
#endif  // HWY_ONCE
