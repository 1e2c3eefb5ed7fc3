// The E4M3 decode of e4m3_decode_hwy.h in Highway: foreach_target.h re-includes this file once per target
// (precision/cpu/encode_rne_lanes.cpp says how the dispatch works); compiled without -march=native
// (optim/CMakeLists.txt) so every target is generated.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "optim/cpu/e4m3_decode_hwy.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h

#include <hwy/highway.h>

#include "optim/cpu/e4m3_decode_hwy.h"

HWY_BEFORE_NAMESPACE();
namespace nibble::optim::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DU = hn::RebindToUnsigned<DF>;

// One vector of codes to floats without a table (a gather per vector costs more than this arithmetic). The
// magnitude bits eeee.mmm placed at FP16 bits 13..7 are the FP16 value 2^(e-15) * 1.mmm (subnormals: 2^-14 *
// 0.mmm), so converting FP16 -> FP32 and multiplying by 2^8 gives E4M3's 2^(e-7) * 1.mmm (2^-6 * 0.mmm)
// exactly; the sign bit moves to bit 31 and S.1111.111 is NaN, as in decode_scalar. The conversion is F16C's
// vcvtph2ps on AVX2 and AVX-512, exact integer arithmetic in Highway on the targets without it; the product
// is a normal float either way, so denormals-are-zero modes do not touch it.
HWY_INLINE hn::Vec<DF> decode(const uint8_t* HWY_RESTRICT codes) {
  const DF df;
  const DU du;
  const hn::Rebind<uint8_t, DF> d8;
  const hn::Rebind<uint16_t, DF> d16;
  const hn::Rebind<hwy::float16_t, DF> dh;
  const auto bytes = hn::LoadU(d8, codes);
  const auto half_bits = hn::ShiftLeft<7>(hn::And(hn::PromoteTo(d16, bytes), hn::Set(d16, 0x7F)));
  const auto magnitude = hn::Mul(hn::PromoteTo(df, hn::BitCast(dh, half_bits)), hn::Set(df, 256.0f));
  const auto c32 = hn::PromoteTo(du, bytes);
  const auto sign = hn::ShiftLeft<24>(hn::And(c32, hn::Set(du, 0x80u)));
  const auto nan = hn::Eq(hn::And(c32, hn::Set(du, 0x7Fu)), hn::Set(du, 0x7Fu));
  const auto bits = hn::IfThenElse(nan, hn::Set(du, 0x7FC00000u), hn::BitCast(du, magnitude));
  return hn::BitCast(df, hn::Or(bits, sign));
}

void DecodeE4M3(const uint8_t* HWY_RESTRICT codes, size_t n, float* HWY_RESTRICT out) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t j = 0;
  for (; j + N <= n; j += N) hn::StoreU(decode(codes + j), df, out + j);
  if (j < n) {  // the tail through a zero-padded vector
    HWY_ALIGN uint8_t ct[HWY_MAX_BYTES / sizeof(float)] = {};
    HWY_ALIGN float ot[HWY_MAX_BYTES / sizeof(float)];
    for (size_t i = 0; i < n - j; ++i) ct[i] = codes[j + i];
    hn::Store(decode(ct), df, ot);
    for (size_t i = 0; i < n - j; ++i) out[j + i] = ot[i];
  }
}

}  // namespace nibble::optim::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace nibble::optim {

HWY_EXPORT(DecodeE4M3);

void decode_e4m3_hwy(const uint8_t* __restrict codes, size_t n, float* __restrict out) {
  HWY_DYNAMIC_DISPATCH(DecodeE4M3)(codes, n, out);
}

}  // namespace nibble::optim
#endif  // HWY_ONCE
