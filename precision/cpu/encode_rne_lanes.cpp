// The RNE lanes of encode_rne_lanes.h, written once in Highway and compiled per target: foreach_target.h
// re-includes this file once per target in HWY_TARGETS, each copy inside its own hwy::N_<TARGET> namespace
// with that target's instruction-set attributes; HWY_EXPORT collects the copies into a table and
// HWY_DYNAMIC_DISPATCH calls the best one the CPU supports (or the one hwy::SetSupportedTargetsForTest
// forces). This file is compiled without -march=native (precision/CMakeLists.txt) so that every target below
// the machine's own is still generated and holds only its own instructions.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "precision/cpu/encode_rne_lanes.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <cstring>

#include "precision/cpu/encode_rne_lanes.h"

HWY_BEFORE_NAMESPACE();
namespace nibble::precision::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// The kernel for one format; encode_rne_lanes.h says why each step equals encode_scalar.
template <const Format& F>
struct RneLanes {
  static_assert(F.mbits >= 1 && F.mbits <= 3 && F.is_signed && F.has_subnormals, "E4M3, E5M2, E2M1");
  static constexpr int kMb = F.mbits;
  static constexpr uint32_t kMinNormal = static_cast<uint32_t>(127 + 1 - F.bias) << 23;
  static constexpr uint32_t kMagic = static_cast<uint32_t>(127 + 24 - F.bias - kMb) << 23;  // 2^23 * step
  static constexpr uint32_t kRebias = static_cast<uint32_t>(127 - F.bias) << kMb;
  static constexpr uint32_t kNanResult = F.has_nan() ? F.nan_code() : F.max_finite_code();

  using DF = hn::ScalableTag<float>;
  using DU = hn::RebindToUnsigned<DF>;
  using DI = hn::RebindToSigned<DF>;
  using VF = hn::Vec<DF>;
  using VU = hn::Vec<DU>;

  // The codes of one vector of floats (times scale), one per 32-bit lane.
  static HWY_INLINE VU encode(const VF xs, const VF vscale) {
    const DF df;
    const DU du;
    const DI di;
    const VU u = hn::BitCast(du, hn::Mul(xs, vscale));
    const VU a = hn::And(u, hn::Set(du, 0x7FFFFFFFu));
    // Normal: round the mantissa to kMb bits (ties to even), rebias, clamp. An a below the smallest normal
    // wraps below zero here and is clamped, then not selected: the unsigned Min is what the clamp needs.
    const VU lsb = hn::And(hn::ShiftRight<23 - kMb>(a), hn::Set(du, 1u));
    const VU r = hn::Add(hn::Add(a, hn::Set(du, (1u << (22 - kMb)) - 1u)), lsb);
    const VU normal =
        hn::Min(hn::Sub(hn::ShiftRight<23 - kMb>(r), hn::Set(du, kRebias)), hn::Set(du, F.max_finite_code()));
    // Subnormal: steps of 2^(1-bias-mbits) counted by a float32 add.
    const VU magic = hn::Set(du, kMagic);
    const VU sub = hn::Sub(hn::BitCast(du, hn::Add(hn::BitCast(df, a), hn::BitCast(df, magic))), magic);
    // a < 2^31, so signed compares order it as unsigned ones would (AVX2 has no unsigned compare); a >= x
    // as a > x - 1 (Highway 1.0 has no integer >=).
    const auto ai = hn::BitCast(di, a);
    const auto is_normal = hn::RebindMask(du, hn::Gt(ai, hn::Set(di, static_cast<int32_t>(kMinNormal) - 1)));
    VU code = hn::IfThenElse(is_normal, normal, sub);
    code = hn::Or(code, hn::ShiftLeft<F.ebits + F.mbits>(hn::ShiftRight<31>(u)));
    const auto is_nan = hn::RebindMask(du, hn::Gt(ai, hn::Set(di, 0x7F800000)));
    return hn::IfThenElse(is_nan, hn::Set(du, kNanResult), code);
  }

  static void run(bool stream, const float* HWY_RESTRICT x, size_t n, float scale, uint8_t* HWY_RESTRICT codes) {
    const DF df;
    const DI di;
    const hn::Rebind<uint8_t, DI> d8;  // one byte per 32-bit lane
    const size_t N = hn::Lanes(df);
    const VF vscale = hn::Set(df, scale);
    size_t j = 0;
#if HWY_TARGET != HWY_SCALAR  // the one-lane target has no byte vector; it takes the loop below
    // Four vectors at a time into one vector of bytes: lane i of the k-th deinterleaved vector is element
    // 4i+k, so its code goes to byte k of 32-bit lane i, which is byte 4i+k in memory (little-endian lanes,
    // as on every Highway target). Fewer shuffles than demoting each vector (AVX2 has no vpmovdb: its
    // i32->u8 demotion is three shuffles per 8 lanes, the port-5 bottleneck).
    const bool streamed = stream && n % 64 == 0 && n % (4 * N) == 0 &&
                          reinterpret_cast<uintptr_t>(codes) % 64 == 0 &&
                          reinterpret_cast<uintptr_t>(codes) % (4 * N) == 0;
    const hn::Repartition<uint8_t, DU> dbytes;
    for (; j + 4 * N <= n; j += 4 * N) {
      VF v0, v1, v2, v3;
      hn::LoadInterleaved4(df, x + j, v0, v1, v2, v3);
      const VU w = hn::Or(hn::Or(encode(v0, vscale), hn::ShiftLeft<8>(encode(v1, vscale))),
                          hn::Or(hn::ShiftLeft<16>(encode(v2, vscale)), hn::ShiftLeft<24>(encode(v3, vscale))));
      if (streamed) {
        hn::Stream(hn::BitCast(dbytes, w), dbytes, codes + j);
      } else {
        hn::StoreU(hn::BitCast(dbytes, w), dbytes, codes + j);
      }
    }
#else
    (void)stream;
#endif
    // The rest a vector at a time; the codes are <= 255, so the saturating demotion is a truncation.
    for (; j + N <= n; j += N)
      hn::StoreU(hn::DemoteTo(d8, hn::BitCast(di, encode(hn::LoadU(df, x + j), vscale))), d8, codes + j);
    if (j < n) {  // the tail through a zero-padded vector: no masked byte store on every target
      HWY_ALIGN float xt[HWY_MAX_BYTES / sizeof(float)] = {};
      HWY_ALIGN uint8_t ct[HWY_MAX_BYTES / sizeof(float)];
      std::memcpy(xt, x + j, (n - j) * sizeof(float));
      hn::Store(hn::DemoteTo(d8, hn::BitCast(di, encode(hn::Load(df, xt), vscale))), d8, ct);
      std::memcpy(codes + j, ct, n - j);
    }
  }
};

void EncodeE4M3(bool stream, const float* HWY_RESTRICT x, size_t n, float scale, uint8_t* HWY_RESTRICT codes) {
  RneLanes<formats::kE4M3>::run(stream, x, n, scale, codes);
}
void EncodeE5M2(bool stream, const float* HWY_RESTRICT x, size_t n, float scale, uint8_t* HWY_RESTRICT codes) {
  RneLanes<formats::kE5M2>::run(stream, x, n, scale, codes);
}
void EncodeE2M1(bool stream, const float* HWY_RESTRICT x, size_t n, float scale, uint8_t* HWY_RESTRICT codes) {
  RneLanes<formats::kE2M1>::run(stream, x, n, scale, codes);
}

}  // namespace nibble::precision::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble::precision {

HWY_EXPORT(EncodeE4M3);
HWY_EXPORT(EncodeE5M2);
HWY_EXPORT(EncodeE2M1);

void encode_rne_lanes_dispatch(RneLanesFormat f, bool stream, const float* __restrict x, size_t n, float scale,
                               uint8_t* __restrict codes) {
  switch (f) {
    case RneLanesFormat::kE4M3: return HWY_DYNAMIC_DISPATCH(EncodeE4M3)(stream, x, n, scale, codes);
    case RneLanesFormat::kE5M2: return HWY_DYNAMIC_DISPATCH(EncodeE5M2)(stream, x, n, scale, codes);
    case RneLanesFormat::kE2M1: return HWY_DYNAMIC_DISPATCH(EncodeE2M1)(stream, x, n, scale, codes);
  }
}

void stream_fence() { hwy::FlushStream(); }

}  // namespace nibble::precision
#endif  // HWY_ONCE
