// The round-to-nearest encoder of the quantizers (precision/cpu/encode_rne_lanes.h, Highway with run-time
// dispatch) against format.h's encode_scalar, the reference every quantizer is bit-exact to: a strided sweep
// over all 2^32 float32 bit patterns (every 61st: ~70 M inputs per format, all exponents and most mantissa
// patterns, NaN and Inf included), with partial-vector tails and the streaming (non-temporal) variant, on the
// target dispatch picks and then on every other compiled target this CPU runs (forced one at a time). The
// exhaustive sweep was run once when the encoder was written (0 mismatches); this keeps a subset of it.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "precision/cpu/encode_rne_lanes.h"

#if NIBBLE_HAVE_RNE_LANES
#include "precision/cpu/simd_targets.h"
#endif

namespace nibble::precision {
namespace {

#if NIBBLE_HAVE_RNE_LANES
template <const Format& F, bool Stream>
int64_t mismatches(float scale, uint32_t stride) {
  constexpr size_t kChunk = 4096;
  alignas(64) static float x[kChunk];
  alignas(64) static uint8_t codes[kChunk];
  int64_t bad = 0, checked = 0;
  uint64_t bits = 0;
  for (size_t round = 0; bits < (uint64_t{1} << 32); ++round) {
    size_t n = 0;
    for (; n < kChunk && bits < (uint64_t{1} << 32); ++n, bits += stride) {
      const auto u = static_cast<uint32_t>(bits);
      std::memcpy(&x[n], &u, sizeof u);
    }
    // Streaming needs whole cache lines; otherwise exercise a partial-vector tail every other round.
    const size_t len = Stream ? n / 64 * 64 : (round % 2 ? n - 3 : n);
    encode_rne_lanes<F, Stream>(x, len, scale, codes);
    if (Stream) stream_fence();
    for (size_t i = 0; i < len; ++i)
      if (codes[i] != encode_scalar(x[i] * scale, F, Rounding::kNearestEven)) ++bad;
    checked += len;
  }
  // Every stride-th pattern was encoded (a masked tail drops 3 per other chunk, streaming the partial line).
  EXPECT_GT(checked, static_cast<int64_t>((uint64_t{1} << 32) / stride * 9 / 10));
  return bad;
}

TEST(EncodeRneLanes, EqualsEncodeScalarOnAStridedSweepOfEveryBitPattern) {
  EXPECT_EQ((mismatches<formats::kE4M3, false>(1.0f, 61)), 0);
  EXPECT_EQ((mismatches<formats::kE5M2, false>(1.0f, 61)), 0);
  EXPECT_EQ((mismatches<formats::kE2M1, false>(1.0f, 61)), 0);
  EXPECT_EQ((mismatches<formats::kE2M1, false>(0.3f, 997)), 0);  // a scale that is not a power of two
  EXPECT_EQ((mismatches<formats::kE4M3, true>(1.0f, 997)), 0);
}

// Each compiled target the CPU supports, forced through Highway's target selection: an AVX2-only or SSE4
// machine (or one where AVX-512 is disabled) runs these, and they must give the same bits as the best one.
TEST(EncodeRneLanes, EveryCompiledTargetEqualsEncodeScalar) {
  const std::vector<int64_t> targets = simd::runnable_targets();
  for (const int64_t target : targets) {
    simd::force_target(target);
    ASSERT_EQ(simd::current_target(), target);
    SCOPED_TRACE(simd::target_name(target));
    EXPECT_EQ((mismatches<formats::kE4M3, false>(1.0f, 1021)), 0);
    EXPECT_EQ((mismatches<formats::kE5M2, false>(1.0f, 1021)), 0);
    EXPECT_EQ((mismatches<formats::kE2M1, false>(0.3f, 1021)), 0);
    EXPECT_EQ((mismatches<formats::kE2M1, true>(1.0f, 4093)), 0);
  }
  simd::force_target(0);
  // x86 compiles SSSE3, SSE4, AVX2, AVX-512 and a scalar fallback; every x86-64 CPU runs at least three.
  EXPECT_GE(targets.size(), 2u) << "targets compiled: " << simd::compiled_targets();
}
#else
TEST(EncodeRneLanes, EqualsEncodeScalarOnAStridedSweepOfEveryBitPattern) {
  GTEST_SKIP() << "this build has no Highway (NIBBLE_HAVE_HWY): no encode_rne_lanes";
}
#endif

}  // namespace
}  // namespace nibble::precision
