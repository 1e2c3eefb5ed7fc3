// gemm_bf16_lanes.h's kernels in Highway, compiled once per target (precision/cpu/encode_rne_lanes.cpp says
// how foreach_target.h and the dispatch table work; core/CMakeLists.txt builds this file without
// -march=native so that every target is generated).
//
// Same bits as the other kernels. A product of two BF16 values is exact in FP32 (8 + 8 significand bits),
// so the fused multiply-add of the fma32 kernel rounds exactly once per product, into the accumulator, as
// vdpbf16ps and the scalar loop do; the packing puts each k-pair odd k first (vdpbf16ps's order) and every
// target adds the products of one C element in that same k order, starting from zero, then applies the same
// epilogue (C + acc, then times alpha). Targets without an FMA instruction (SSE4, SSSE3, the emulated ones)
// get MulAdd as a multiply and an add: the multiply is exact, so the add rounds the same sum (only products
// that overflow or fall into the subnormals differ, as they already do between the other kernels).
//
// Register blocking follows the target: a micro-tile is two vectors of C columns (a capped tag keeps two
// vectors within the kNr-column panel, so a panel is one micro-tile wide on AVX-512 and SVE-512, two on
// AVX2, four on NEON and SSE4) by kRows rows, so that 2 * kRows accumulators, two B vectors and the
// broadcast A value fit the register file.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "core/cpu/gemm_bf16_lanes.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <utility>

#include "core/cpu/gemm_bf16_lanes.h"
#include "core/cpu/gemm_bf16_panels.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the k-pair packing below assumes little-endian 32- and 64-bit words"
#endif

HWY_BEFORE_NAMESPACE();
namespace nibble::core::cpu::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::CappedTag<float, kNr / 2>;
using VF = hn::Vec<DF>;

// 32 vector registers on AVX-512, NEON, SVE and RVV: 14 rows (28 accumulators, as the AVX-512 kernel);
// 16 on AVX2 and SSE, and few that matter on the emulated targets: 6 rows (12 accumulators).
#if HWY_TARGET == HWY_SCALAR || HWY_TARGET == HWY_EMU128 || (HWY_ARCH_X86 && HWY_TARGET > HWY_AVX3)
constexpr int kRows = 6;
#else
constexpr int kRows = 14;
#endif

struct Epilogue {
  bool load_c;
  bool scale;
  float alpha;
};

// One row of a micro-tile into C: `cols` columns (two vectors' worth, or fewer at the panel's N edge).
HWY_INLINE void StoreRow(DF d, VF lo, VF hi, float* HWY_RESTRICT c, size_t cols, const Epilogue& e) {
  const size_t n = hn::Lanes(d);
  if (cols == 2 * n) {
    if (e.load_c) {
      lo = hn::Add(hn::LoadU(d, c), lo);
      hi = hn::Add(hn::LoadU(d, c + n), hi);
    }
    if (e.scale) {
      lo = hn::Mul(lo, hn::Set(d, e.alpha));
      hi = hn::Mul(hi, hn::Set(d, e.alpha));
    }
    hn::StoreU(lo, d, c);
    hn::StoreU(hi, d, c + n);
    return;
  }
  // The edge through a buffer: a masked load would read past C's last row on targets without masked loads.
  HWY_ALIGN float acc[2 * hn::MaxLanes(DF())];
  hn::Store(lo, d, acc);
  hn::Store(hi, d, acc + n);
  for (size_t j = 0; j < cols; ++j) {
    float v = acc[j];
    if (e.load_c) v = c[j] + v;
    if (e.scale) v *= e.alpha;
    c[j] = v;
  }
}

// The accumulators are named variables, not an array: SVE's and RVV's vector types cannot be array elements.
#define NIBBLE_GEMM_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
static_assert(kRows <= 14, "NIBBLE_GEMM_ROWS names 14 rows");

// MR rows x (two vectors, `cols` of them stored) of C from A rows (stride kLdaF) and a B panel (stride kNr).
template <int MR>
void MicroTile(const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t steps, float* c, int64_t ldc,
               size_t cols, const Epilogue& e) {
  const DF d;
  const size_t n = hn::Lanes(d);
#define NIBBLE_GEMM_START(i)                        \
  [[maybe_unused]] VF lo##i = hn::Zero(d), hi##i = hn::Zero(d); \
  if constexpr (i < MR) hwy::Prefetch(c + i * ldc);
  NIBBLE_GEMM_ROWS(NIBBLE_GEMM_START)
#undef NIBBLE_GEMM_START
  for (int64_t p = 0; p < steps; ++p) {
    const VF b0 = hn::Load(d, b + p * kNr);
    const VF b1 = hn::Load(d, b + p * kNr + n);
#define NIBBLE_GEMM_STEP(i)                          \
  if constexpr (i < MR) {                            \
    const VF ai = hn::Set(d, a[i * kLdaF + p]);      \
    lo##i = hn::MulAdd(ai, b0, lo##i);               \
    hi##i = hn::MulAdd(ai, b1, hi##i);               \
  }
    NIBBLE_GEMM_ROWS(NIBBLE_GEMM_STEP)
#undef NIBBLE_GEMM_STEP
  }
#define NIBBLE_GEMM_STORE(i) \
  if constexpr (i < MR) StoreRow(d, lo##i, hi##i, c + i * ldc, cols, e);
  NIBBLE_GEMM_ROWS(NIBBLE_GEMM_STORE)
#undef NIBBLE_GEMM_STORE
}
#undef NIBBLE_GEMM_ROWS

using MicroTileFn = void (*)(const float*, const float*, int64_t, float*, int64_t, size_t, const Epilogue&);

template <size_t... I>
constexpr std::array<MicroTileFn, kRows + 1> MicroTiles(std::index_sequence<I...>) {
  return {nullptr, &MicroTile<static_cast<int>(I) + 1>...};
}

void Fma32Panel(int rows, int nr, const float* HWY_RESTRICT a, const float* HWY_RESTRICT b, int64_t steps,
                float* c, int64_t ldc, bool load_c, bool scale, float alpha) {
  static constexpr auto kTiles = MicroTiles(std::make_index_sequence<kRows>{});
  const Epilogue e{load_c, scale, alpha};
  const int width = static_cast<int>(2 * hn::Lanes(DF()));
  // Column blocks outer: one block's B columns are reread from L1/L2 by every row block of the tile.
  for (int j0 = 0; j0 < nr; j0 += width) {
    const size_t cols = static_cast<size_t>(std::min(width, nr - j0));
    int i = 0;
    for (; i + kRows <= rows; i += kRows) MicroTile<kRows>(a + i * kLdaF, b + j0, steps, c + i * ldc + j0, ldc, cols, e);
    if (i < rows) kTiles[rows - i](a + i * kLdaF, b + j0, steps, c + i * ldc + j0, ldc, cols, e);
  }
}

// Each 32-bit word holds a k-pair (even k in the low half); as one 64-bit lane, zero-extended, its two FP32
// values are the low half moved to the top (even k, second) and the high half in place (odd k, first).
void WidenPairsSwapped(const uint16_t* HWY_RESTRICT in, int64_t pairs, uint32_t* HWY_RESTRICT out) {
  const hn::ScalableTag<uint64_t> d64;
  const hn::Rebind<uint32_t, decltype(d64)> d32;
  const int64_t n = static_cast<int64_t>(hn::Lanes(d64));
  const uint32_t* words = reinterpret_cast<const uint32_t*>(in);
  uint64_t* out64 = reinterpret_cast<uint64_t*>(out);
  const auto odd_mask = hn::Set(d64, uint64_t{0xFFFF0000u});
  int64_t p = 0;
  for (; p + n <= pairs; p += n) {
    const auto x = hn::PromoteTo(d64, hn::LoadU(d32, words + p));
    hn::StoreU(hn::Or(hn::ShiftLeft<48>(x), hn::And(x, odd_mask)), d64, out64 + p);
  }
  for (; p < pairs; ++p) {
    out[2 * p] = static_cast<uint32_t>(in[2 * p + 1]) << 16;
    out[2 * p + 1] = static_cast<uint32_t>(in[2 * p]) << 16;
  }
}

}  // namespace nibble::core::cpu::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble::core::cpu {

HWY_EXPORT(Fma32Panel);
HWY_EXPORT(WidenPairsSwapped);

void fma32_panel_lanes(int rows, int nr, const float* a, const float* b, int64_t steps, float* c, int64_t ldc,
                       bool load_c, bool scale, float alpha) {
  HWY_DYNAMIC_DISPATCH(Fma32Panel)(rows, nr, a, b, steps, c, ldc, load_c, scale, alpha);
}

void widen_pairs_swapped_lanes(const uint16_t* in, int64_t pairs, uint32_t* out) {
  HWY_DYNAMIC_DISPATCH(WidenPairsSwapped)(in, pairs, out);
}

}  // namespace nibble::core::cpu
#endif  // HWY_ONCE
