#pragma once
// Round-to-nearest-even encoding (satfinite, as format.h's encode_scalar) of whole vectors of floats for the
// small formats the quantizers store (E4M3, E5M2, E2M1): a few integer ops per vector instead of
// encode_scalar's general shift-and-round, which GCC vectorises at ~10 instructions per element.
//
// The kernel (encode_rne_lanes.cpp) is written once with Highway and compiled for every target Highway can
// reach on the architecture (x86: AVX-512, AVX2, SSE4, SSSE3, emulated 128-bit; ARM: NEON, SVE); the best
// one this CPU supports is chosen at run time (HWY_DYNAMIC_DISPATCH), so an AVX2-only or ARM machine runs
// vector code too. A build without Highway (NIBBLE_HAVE_HWY unset: the carried-deps GPU build) has no lanes:
// NIBBLE_HAVE_RNE_LANES is 0 and callers take the scalar rules, which give the same bits.
//
// Why it equals encode_scalar (checked exhaustively over all 2^32 inputs for each format):
//  - |v| >= the format's smallest normal 2^(1-bias): RNE of the float32 mantissa to mbits bits is
//    a + (2^(22-mbits) - 1) + lsb, truncated (a mantissa carry moves into the exponent exactly, as in the
//    code); the code is the rounded exponent/mantissa minus the exponent-bias difference, clamped to the
//    largest finite code (satfinite; Inf lands there too).
//  - below it: the subnormal step is s = 2^(1-bias-mbits); |v| + 2^23 s rounds (float32 RNE) to a multiple
//    of s, and its mantissa bits count the steps, ties to the even count; a carry reaches the first
//    normal code 2^mbits, which is right. A float32 subnormal |v| gives 0 either way (with or without
//    denormals-are-zero), being far below half a step.
//  - the sign bit is ORed in (so -0 keeps it), NaN gives the format's NaN code (or, for E2M1 without NaN,
//    the unsigned largest code), as encode_scalar does.
#include <cstddef>
#include <cstdint>

#include "precision/format.h"

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
#define NIBBLE_HAVE_RNE_LANES 1
#else
#define NIBBLE_HAVE_RNE_LANES 0  // callers must guard with #if: the functions below are then not defined
#endif

namespace nibble::precision {

inline constexpr bool kHaveRneLanes = NIBBLE_HAVE_RNE_LANES;

// The formats the lanes encode, as the dispatching entry point takes them.
enum class RneLanesFormat : int { kE4M3, kE5M2, kE2M1 };

// codes[j] = encode_scalar(x[j] * scale, F, kNearestEven) for j < n, on the dispatched target. Stream: when
// codes is 64-byte aligned and n a multiple of 64, write with non-temporal stores (output written once and
// not read back soon: no read-for-ownership, no cache pollution); the caller then owes a stream_fence()
// before the codes are read by another thread.
void encode_rne_lanes_dispatch(RneLanesFormat f, bool stream, const float* __restrict x, size_t n, float scale,
                               uint8_t* __restrict codes);

// Orders this thread's non-temporal stores before what follows (sfence on x86; nothing where Stream is a
// plain store).
void stream_fence();

template <const Format& F>
constexpr RneLanesFormat rne_lanes_format() {
  // By value, not by address: GCC cannot fold the address comparison of two distinct globals in a constant
  // expression under -fsanitize=address (scripts/sanitize.sh), which gives them redzones.
  static_assert(F == formats::kE4M3 || F == formats::kE5M2 || F == formats::kE2M1, "E4M3, E5M2, E2M1");
  if constexpr (F == formats::kE4M3) return RneLanesFormat::kE4M3;
  if constexpr (F == formats::kE5M2) return RneLanesFormat::kE5M2;
  return RneLanesFormat::kE2M1;
}

// The form the callers use: the format fixed at compile time, as when the lanes were AVX-512 templates.
template <const Format& F, bool Stream = false>
void encode_rne_lanes(const float* __restrict x, size_t n, float scale, uint8_t* __restrict codes) {
  encode_rne_lanes_dispatch(rne_lanes_format<F>(), Stream, x, n, scale, codes);
}

}  // namespace nibble::precision
