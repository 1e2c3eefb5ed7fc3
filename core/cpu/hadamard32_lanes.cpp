#include "core/cpu/hadamard32_lanes.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/hadamard32_butterfly.h"

namespace nibble::core::cpu {
namespace {

typedef double f64x4 __attribute__((vector_size(32)));
typedef float f32x4 __attribute__((vector_size(16)));
typedef int64_t i64x4 __attribute__((vector_size(32)));

// Lane k of the result: lane idx[k] of the 8 lanes of (a, b). GCC's __builtin_shuffle exists since GCC 4.7 (its
// __builtin_shufflevector only since 12, and a GPU machine's host compiler may be older); Clang has the other.
#if defined(__clang__)
#define SHUFFLE2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE2(a, b, ...) __builtin_shuffle(a, b, i64x4{__VA_ARGS__})
#endif

// The stages of butterfly half-width 1 and 2 inside one vector of 4 lanes: lane j pairs with lane j ^ len; the
// pair's first lane (bit len clear) gets a + b = v + s, its second a - b = s - v (s: the partner's value, which
// for the second lane is the pair's first, a). Vectors pass by reference and are 32 bytes: a 64-byte vector by
// value changes the calling convention between AVX-512 and other builds (GCC's -Wpsabi), and AVX2 builds lower
// 64-byte shuffles element by element (~20x slower).
inline void stage_in_vector1(f64x4& v) {
  const f64x4 s = SHUFFLE2(v, v, 1, 0, 3, 2);
  v = SHUFFLE2(v + s, s - v, 0, 5, 2, 7);
}
inline void stage_in_vector2(f64x4& v) {
  const f64x4 s = SHUFFLE2(v, v, 2, 3, 0, 1);
  v = SHUFFLE2(v + s, s - v, 0, 1, 6, 7);
}

// One group: v[q] holds elements 4q .. 4q + 3. Half-widths 4, 8 and 16 pair whole vectors q and q + len / 4.
inline void butterfly32(f64x4 (&v)[8]) {
  for (auto& x : v) {
    stage_in_vector1(x);
    stage_in_vector2(x);
  }
  for (int step = 1; step < 8; step *= 2)
    for (int q = 0; q < 8; ++q)
      if ((q & step) == 0) {
        const f64x4 a = v[q], b = v[q + step];
        v[q] = a + b;
        v[q + step] = a - b;
      }
}

}  // namespace

// Builds without AVX (SSE2-only x86, NEON) run the reference loop itself: GCC lowers these 32-byte vectors
// there into pieces that made the groups 6x slower than the loop (9.3 against 1.5 ns an element on Zen 4 with
// SSE2 only; AVX2 and AVX-512 builds: 0.5).
#if defined(__AVX__)
constexpr bool kVectorGroups = true;
#else
constexpr bool kVectorGroups = false;
#endif

void hadamard32_groups_lanes(const float* in, float* out, int64_t groups) {
  if (!kVectorGroups) {
    for (int64_t g = 0; g < groups; ++g) hadamard32_butterfly(in + g * 32, out + g * 32);
    return;
  }
  const double norm = 1.0 / std::sqrt(32.0);  // hadamard32_butterfly's factor, computed the same way
  for (int64_t g = 0; g < groups; ++g) {
    f64x4 v[8];
    for (int q = 0; q < 8; ++q) {
      f32x4 x;
      std::memcpy(&x, in + g * 32 + 4 * q, sizeof x);
      v[q] = __builtin_convertvector(x, f64x4);
    }
    butterfly32(v);
    for (int q = 0; q < 8; ++q) {
      const f32x4 y = __builtin_convertvector(v[q] * norm, f32x4);
      std::memcpy(out + g * 32 + 4 * q, &y, sizeof y);
    }
  }
}

void hadamard32_groups_lanes(const double* in, double* out, int64_t groups) {
  if (!kVectorGroups) {
    for (int64_t g = 0; g < groups; ++g) hadamard32_butterfly(in + g * 32, out + g * 32);
    return;
  }
  const double norm = 1.0 / std::sqrt(32.0);
  for (int64_t g = 0; g < groups; ++g) {
    f64x4 v[8];
    std::memcpy(v, in + g * 32, sizeof v);
    butterfly32(v);
    for (auto& x : v) x *= norm;
    std::memcpy(out + g * 32, v, sizeof v);
  }
}

}  // namespace nibble::core::cpu
