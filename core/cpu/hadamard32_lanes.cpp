#include "core/cpu/hadamard32_lanes.h"

#include <cmath>
#include <cstring>

namespace nibble::core::cpu {
namespace {

typedef double f64x8 __attribute__((vector_size(64)));
typedef float f32x8 __attribute__((vector_size(32)));

// The stage of butterfly half-width `len` (1, 2 or 4) inside one vector of 8 lanes: lane j pairs with lane
// j ^ len; the pair's first lane (bit len clear) gets a + b = v + s, its second a - b = s - v (s: the
// partner's value, which for the second lane is the pair's first, a).
inline f64x8 stage_in_vector1(f64x8 v) {
  const f64x8 s = __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
  return __builtin_shufflevector(v + s, s - v, 0, 9, 2, 11, 4, 13, 6, 15);
}
inline f64x8 stage_in_vector2(f64x8 v) {
  const f64x8 s = __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
  return __builtin_shufflevector(v + s, s - v, 0, 1, 10, 11, 4, 5, 14, 15);
}
inline f64x8 stage_in_vector4(f64x8 v) {
  const f64x8 s = __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  return __builtin_shufflevector(v + s, s - v, 0, 1, 2, 3, 12, 13, 14, 15);
}

// One group: v[q] holds elements 8q .. 8q + 7.
inline void butterfly32(f64x8 (&v)[4]) {
  for (auto& x : v) x = stage_in_vector4(stage_in_vector2(stage_in_vector1(x)));
  // len 8: elements j and j + 8 are vectors 0/1 and 2/3; len 16: vectors 0/2 and 1/3.
  const f64x8 a0 = v[0] + v[1], a1 = v[0] - v[1], a2 = v[2] + v[3], a3 = v[2] - v[3];
  v[0] = a0 + a2;
  v[1] = a1 + a3;
  v[2] = a0 - a2;
  v[3] = a1 - a3;
}

}  // namespace

void hadamard32_groups_lanes(const float* in, float* out, int64_t groups) {
  const double norm = 1.0 / std::sqrt(32.0);  // hadamard32_butterfly's factor, computed the same way
  for (int64_t g = 0; g < groups; ++g) {
    f64x8 v[4];
    for (int q = 0; q < 4; ++q) {
      f32x8 x;
      std::memcpy(&x, in + g * 32 + 8 * q, sizeof x);
      v[q] = __builtin_convertvector(x, f64x8);
    }
    butterfly32(v);
    for (int q = 0; q < 4; ++q) {
      const f32x8 y = __builtin_convertvector(v[q] * norm, f32x8);
      std::memcpy(out + g * 32 + 8 * q, &y, sizeof y);
    }
  }
}

void hadamard32_groups_lanes(const double* in, double* out, int64_t groups) {
  const double norm = 1.0 / std::sqrt(32.0);
  for (int64_t g = 0; g < groups; ++g) {
    f64x8 v[4];
    std::memcpy(v, in + g * 32, sizeof v);
    butterfly32(v);
    for (auto& x : v) x *= norm;
    std::memcpy(out + g * 32, v, sizeof v);
  }
}

}  // namespace nibble::core::cpu
