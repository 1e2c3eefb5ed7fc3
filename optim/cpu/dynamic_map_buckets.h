#pragma once
// The int8 dynamic-map encoder's bucket table (dynamic_map_lanes.h says why buckets), shared by the AVX-512
// lanes (dynamic_map_lanes.cpp) and the Highway lanes (dynamic_map_hwy.cpp), which index it the same way.
//
// Buckets per sign: |x| below 2^-24 (one bucket: every threshold's magnitude is above 1e-7), the 24 binades of
// [2^-24, 1) cut into 2^7 buckets each (the finest threshold spacing, 0.9 / 128 in [0.1, 1), is wider than a
// bucket of [0.5, 1)), and |x| >= 1 (Inf included; no threshold there). Bucket b of a magnitude's bits `a`
// (a <= 0x7FFFFFFF) is (a >> 16) minus kFirstBinadeBucket, clamped to [0, kBuckets - 1].
//
// Word i: the bucket of negative magnitude bucket kBuckets - 1 - i (i < kBuckets) or positive i - kBuckets, in
// value order. word = base | threshold_low << 16, base = the number of thresholds below the bucket's smallest
// value, threshold_low = the low 16 bits of the one threshold inside the bucket; for a bucket without one, a
// value no lane compares past (0xFFFF for positive x, which needs low > it; 0 for negative x, which needs
// low < it). The code of x is base, plus one where x is past the bucket's threshold; 0 for NaN.
#include <cstdint>

namespace nibble::optim::dynamic_map_buckets {

constexpr int kFractionBits = 7;
constexpr int kLowBits = 23 - kFractionBits;  // the bits a threshold shares with nothing but its bucket
constexpr int32_t kLowExponent = 127 - 24;
constexpr int32_t kBuckets = (24 << kFractionBits) + 2;
constexpr int32_t kFirstBinadeBucket = (kLowExponent << kFractionBits) - 1;  // (a >> kLowBits) - this = b
static_assert(kLowBits == 16, "the table keeps a threshold's low 16 bits");

// The 2 * kBuckets words for dynamic_map(is_signed) (built once, 64-byte aligned).
const uint32_t* words(bool is_signed);

}  // namespace nibble::optim::dynamic_map_buckets
