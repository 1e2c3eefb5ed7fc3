// The int8 dynamic-map lanes of dynamic_map_hwy.h in Highway: foreach_target.h re-includes this file once per
// target (precision/cpu/encode_rne_lanes.cpp says how the dispatch works); compiled without -march=native
// (optim/CMakeLists.txt) so every target is generated.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "optim/cpu/dynamic_map_hwy.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/highway.h>

#include <cstring>

#include "optim/cpu/dynamic_map_buckets.h"
#include "optim/cpu/dynamic_map_hwy.h"

HWY_BEFORE_NAMESPACE();
namespace nibble::optim::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
namespace buckets = dynamic_map_buckets;

using DF = hn::ScalableTag<float>;
using DI = hn::RebindToSigned<DF>;
using VF = hn::Vec<DF>;
using VI = hn::Vec<DI>;

// dynamic_map_encode(x / norm) of one vector, one code per 32-bit lane. The steps are the AVX-512 lanes'
// (dynamic_map_lanes.cpp) in Highway's operations: the bucket from the magnitude's high bits, one gather of
// its word, one compare of the low 16 bits with the bucket's threshold. Signed compares and min / max
// throughout: every operand is below 2^31, and AVX2 has no unsigned ones.
HWY_INLINE VI encode(const VF x, const VF vnorm, const int32_t* HWY_RESTRICT words) {
  const DI di;
  const VI u = hn::BitCast(di, hn::Div(x, vnorm));  // the scalar rule's division, correctly rounded
  const VI a = hn::And(u, hn::Set(di, 0x7FFFFFFF));
  const VI b = hn::Min(hn::Max(hn::Sub(hn::ShiftRight<buckets::kLowBits>(a), hn::Set(di, buckets::kFirstBinadeBucket)),
                               hn::Zero(di)),
                       hn::Set(di, buckets::kBuckets - 1));
  const auto negative = hn::Lt(u, hn::Zero(di));
  const VI index = hn::IfThenElse(negative, hn::Sub(hn::Set(di, buckets::kBuckets - 1), b),
                                  hn::Add(b, hn::Set(di, buckets::kBuckets)));
  const VI entry = hn::GatherIndex(di, words, index);
  const VI base = hn::And(entry, hn::Set(di, 0xFF));
  const VI low = hn::And(a, hn::Set(di, 0xFFFF));
  const hn::RebindToUnsigned<DI> du;  // a logical shift: the threshold's bit 15 lands on the word's sign bit
  const VI threshold_low = hn::BitCast(di, hn::ShiftRight<16>(hn::BitCast(du, entry)));
  // x past the bucket's threshold: a larger magnitude for positive x, a smaller one for negative x.
  const auto up = hn::Or(hn::AndNot(negative, hn::Gt(low, threshold_low)), hn::And(negative, hn::Lt(low, threshold_low)));
  const VI code = hn::Sub(base, hn::VecFromMask(di, up));  // a set mask lane is -1
  // NaN compares false with every threshold: code 0.
  return hn::IfThenZeroElse(hn::Gt(a, hn::Set(di, 0x7F800000)), code);
}

void EncodeSpan(const float* HWY_RESTRICT x, size_t n, float norm, const uint32_t* words,
                uint8_t* HWY_RESTRICT codes) {
  const DF df;
  const DI di;
  const hn::Rebind<uint8_t, DI> d8;  // one byte per 32-bit lane
  const size_t N = hn::Lanes(df);
  const VF vnorm = hn::Set(df, norm);
  const int32_t* w = reinterpret_cast<const int32_t*>(words);
  size_t j = 0;
  // Codes are <= 255, so the saturating demotion is a truncation.
  for (; j + N <= n; j += N) hn::StoreU(hn::DemoteTo(d8, encode(hn::LoadU(df, x + j), vnorm, w)), d8, codes + j);
  if (j < n) {  // the tail through a zero-padded vector: no masked byte store on every target
    HWY_ALIGN float xt[HWY_MAX_BYTES / sizeof(float)] = {};
    HWY_ALIGN uint8_t ct[HWY_MAX_BYTES / sizeof(float)];
    std::memcpy(xt, x + j, (n - j) * sizeof(float));
    hn::Store(hn::DemoteTo(d8, encode(hn::Load(df, xt), vnorm, w)), d8, ct);
    std::memcpy(codes + j, ct, n - j);
  }
  (void)di;
}

// value[codes] * absmax: a gather of the 256 values per vector. (The AVX-512 VBMI lanes look bytes up with
// vpermi2b instead; Highway 1.0's AVX-512 target has no byte permutes across the vector, and AVX2 none at all.)
void DecodeSpan(const uint8_t* HWY_RESTRICT codes, size_t n, float absmax, const float* value,
                float* HWY_RESTRICT out) {
  const DF df;
  const DI di;
  const hn::Rebind<uint8_t, DI> d8;
  const size_t N = hn::Lanes(df);
  const VF vabsmax = hn::Set(df, absmax);
  size_t j = 0;
  for (; j + N <= n; j += N)
    hn::StoreU(hn::Mul(hn::GatherIndex(df, value, hn::PromoteTo(di, hn::LoadU(d8, codes + j))), vabsmax), df, out + j);
  for (; j < n; ++j) out[j] = value[codes[j]] * absmax;
}

}  // namespace nibble::optim::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble::optim {

HWY_EXPORT(EncodeSpan);
HWY_EXPORT(DecodeSpan);

void dynamic_map_encode_hwy(const float* __restrict x, size_t n, float norm, const uint32_t* words,
                            uint8_t* __restrict codes) {
  HWY_DYNAMIC_DISPATCH(EncodeSpan)(x, n, norm, words, codes);
}

void dynamic_map_decode_hwy(const uint8_t* __restrict codes, size_t n, float absmax, const float* value,
                            float* __restrict out) {
  HWY_DYNAMIC_DISPATCH(DecodeSpan)(codes, n, absmax, value, out);
}

}  // namespace nibble::optim
#endif  // HWY_ONCE
