#pragma once
// Element formats: one descriptor for every ExMy floating-point format nibble handles, and the scalar
// encode/decode rules (NUMERICS.md "Element formats"). Everything here is NIBBLE_HOST_DEVICE: the CPU bulk
// kernels and the CUDA kernels call these same functions, so the CPU tests check the GPU's arithmetic.
#include <cstdint>
#include <cstring>

#include "precision/host_device.h"

namespace nibble::precision {

// What the all-ones exponent field means.
enum class Special : uint8_t {
  kIEEE,    // all-ones exponent: mantissa 0 = Inf, else NaN (E5M2, BF16, FP16, ml_dtypes' float8_e4m3/e3m4)
  kFN,      // "finite, NaN": only the all-ones code (exponent and mantissa) is NaN, no Inf (E4M3, E8M0)
  kFinite,  // every code is a finite number; no Inf, no NaN (E2M1, E3M2, E2M3)
};

enum class Rounding : uint8_t {
  kNearestEven,  // RNE, ties to the even code
  kStochastic,   // round up with probability (x - lo) / (hi - lo), random bits from Philox
  kTowardZero,   // truncate the dropped bits
};

// A floating-point element format: sign bit (optional), `ebits` exponent bits, `mbits` mantissa bits.
struct Format {
  int8_t ebits = 4;
  int8_t mbits = 3;
  int16_t bias = 7;
  Special special = Special::kFN;
  bool is_signed = true;
  // E8M0 has no zero and no subnormals: exponent field 0 is the normal value 2^-bias.
  bool has_subnormals = true;

  NIBBLE_HOST_DEVICE constexpr int bits() const { return (is_signed ? 1 : 0) + ebits + mbits; }
  NIBBLE_HOST_DEVICE constexpr uint32_t magnitude_mask() const { return (1u << (ebits + mbits)) - 1u; }
  NIBBLE_HOST_DEVICE constexpr uint32_t sign_bit() const { return is_signed ? (1u << (ebits + mbits)) : 0u; }
  NIBBLE_HOST_DEVICE constexpr uint32_t exponent_mask() const { return (1u << ebits) - 1u; }
  NIBBLE_HOST_DEVICE constexpr uint32_t mantissa_mask() const { return (1u << mbits) - 1u; }
  NIBBLE_HOST_DEVICE constexpr bool has_nan() const { return special != Special::kFinite; }
  NIBBLE_HOST_DEVICE constexpr bool has_inf() const { return special == Special::kIEEE; }

  // Largest finite magnitude code (the satfinite clamp).
  NIBBLE_HOST_DEVICE constexpr uint32_t max_finite_code() const {
    switch (special) {
      case Special::kIEEE: return ((exponent_mask() - 1u) << mbits) | mantissa_mask();
      case Special::kFN: return magnitude_mask() - 1u;
      case Special::kFinite: break;
    }
    return magnitude_mask();
  }
  // The canonical (positive, quiet) NaN code; meaningful only when has_nan().
  NIBBLE_HOST_DEVICE constexpr uint32_t nan_code() const {
    if (special == Special::kIEEE) return (exponent_mask() << mbits) | (mbits > 0 ? (1u << (mbits - 1)) : 0u);
    return magnitude_mask();
  }
  NIBBLE_HOST_DEVICE constexpr bool is_nan_code(uint32_t code) const {
    const uint32_t mag = code & magnitude_mask();
    if (special == Special::kIEEE) return (mag >> mbits) == exponent_mask() && (mag & mantissa_mask()) != 0;
    if (special == Special::kFN) return mag == magnitude_mask();
    return false;
  }
  NIBBLE_HOST_DEVICE constexpr bool is_inf_code(uint32_t code) const {
    return special == Special::kIEEE && (code & magnitude_mask()) == (exponent_mask() << mbits);
  }
  friend constexpr bool operator==(const Format& a, const Format& b) {
    return a.ebits == b.ebits && a.mbits == b.mbits && a.bias == b.bias && a.special == b.special &&
           a.is_signed == b.is_signed && a.has_subnormals == b.has_subnormals;
  }
  friend constexpr bool operator!=(const Format& a, const Format& b) { return !(a == b); }
};

// The named formats of NUMERICS.md.
namespace formats {
inline constexpr Format kE4M3{4, 3, 7, Special::kFN, true, true};
inline constexpr Format kE5M2{5, 2, 15, Special::kIEEE, true, true};
inline constexpr Format kE2M1{2, 1, 1, Special::kFinite, true, true};
inline constexpr Format kE3M2{3, 2, 3, Special::kFinite, true, true};
inline constexpr Format kE2M3{2, 3, 1, Special::kFinite, true, true};
inline constexpr Format kE8M0{8, 0, 127, Special::kFN, false, false};
inline constexpr Format kUE4M3{4, 3, 7, Special::kFN, false, true};
inline constexpr Format kBF16{8, 7, 127, Special::kIEEE, true, true};
inline constexpr Format kFP16{5, 10, 15, Special::kIEEE, true, true};
}  // namespace formats

// A research ExMy format with the conventional bias 2^(e-1)-1 and subnormals.
constexpr Format make_exmy(int ebits, int mbits, Special special = Special::kFinite) {
  return Format{static_cast<int8_t>(ebits), static_cast<int8_t>(mbits),
                static_cast<int16_t>((1 << (ebits - 1)) - 1), special, true, true};
}

NIBBLE_HOST_DEVICE uint32_t float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}

NIBBLE_HOST_DEVICE float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

NIBBLE_HOST_DEVICE int count_leading_zeros(uint32_t x) {
#if defined(__CUDA_ARCH__)
  return __clz(x);
#else
  return x ? __builtin_clz(x) : 32;
#endif
}

// Stochastic-rounding random bits: `count` uniform bits (1..16) that `stochastic` rounding adds just below
// the kept mantissa bits before truncating (NUMERICS.md: r = 8 mirrors the hardware cvt.rs instruction).
struct RandomBits {
  uint32_t value = 0;
  int count = 8;
};

// Encodes float32 `x` into `fmt`: round (RNE, stochastic or toward zero) onto the format's grid including
// subnormals, then satfinite (|x| > max, Inf included, becomes ±max: PTX cvt .satfinite semantics).
// NaN becomes the format's NaN code; formats without NaN get +max (callers that must not see NaN check
// first: the bulk kernels report NaN as an error by default).
// For unsigned formats a negative input has no representation: it encodes to NaN where the format has one.
// Returns the code in the low fmt.bits() bits.
//
// Written without branches on the value and in 32-bit arithmetic only, so that a loop over elements with a
// constant `fmt` and `rounding` vectorises (the CPU bulk kernels rely on it); the special inputs (NaN,
// negative to unsigned) are selected at the end instead of returned early.
NIBBLE_HOST_DEVICE uint32_t encode_scalar(float x, Format fmt, Rounding rounding, RandomBits random = {}) {
  const uint32_t u = float_bits(x);
  const bool negative = (u >> 31) != 0;
  const uint32_t a = u & 0x7FFFFFFFu;

  // |x| = sig * 2^(e_unbiased - 23) with sig < 2^24. FP32 subnormals keep the exponent of the smallest
  // normal (sig without implicit bit). With subnormals and bias <= 127 that is the same value in the
  // format's subnormal range, where only the value counts; otherwise (E8M0: no subnormals, and its
  // smallest value 2^-127 is an FP32 subnormal) they are normalised to be seen on the format's own grid.
  // (Normalising always would give the same codes, but the data-dependent shift stops GCC 12 from
  // vectorising the bulk loops; with a constant format this branch folds away.)
  const uint32_t exp32 = a >> 23;
  const uint32_t man = a & 0x7FFFFFu;
  uint32_t sig = exp32 != 0 ? (man | 0x800000u) : man;
  int e_unbiased = (exp32 != 0 ? static_cast<int>(exp32) : 1) - 127;
  if (!fmt.has_subnormals || fmt.bias > 127) {
    const int shift = (exp32 == 0 && man != 0) ? count_leading_zeros(man) - 8 : 0;
    sig <<= shift;
    e_unbiased -= shift;
  }
  const int e_field = e_unbiased + fmt.bias;  // the target exponent field, if x were normal there

  // Every code is base + (sig >> drop) rounded: below the smallest normal, the format's subnormals keep
  // the exponent fixed and drop more bits; a carry out of the mantissa lands in the next exponent exactly.
  const int min_field = fmt.has_subnormals ? 1 : 0;
  const int field = e_field < min_field ? min_field : e_field;
  int drop = 23 - fmt.mbits + (field - e_field);  // >= 13 (mbits <= 10)
  // With subnormals the implicit bit of sig >> drop adds one to the exponent field, hence field - 1.
  const int32_t base = (field - 1) * (int32_t{1} << fmt.mbits);

  // kept = sig >> drop, and the dropped bits as a 32-bit binary fraction of one code step (bit 31 = half a
  // step). drop is capped where the outcome can no longer change, which keeps every shift below 32.
  uint32_t kept, frac;
  if (rounding == Rounding::kStochastic) {
    // Past 40 nothing rounds up: sig < 2^24 stays below one step minus the largest random add (16 bits).
    // Past 32 the fraction is truncated to 32 bits, which cannot change its comparison below with a whole
    // number of 2^-32 steps.
    if (drop > 40) drop = 40;
    kept = sig >> (drop < 24 ? drop : 24);  // sig >> 24 is already 0
    frac = drop <= 24 ? sig << (32 - drop) : (sig << 8) >> (drop - 24);
  } else {
    // Past 25 the whole significand (< 2^24) is below half a step: RNE and truncation both give 0.
    if (drop > 25) drop = 25;
    kept = sig >> drop;
    frac = sig << (32 - drop);
  }

  uint32_t up = 0;
  if (rounding == Rounding::kNearestEven) {
    // Ties go to the even *code*; for mbits = 0 (E8M0) the code's last bit is the exponent's, not kept's.
    const uint32_t odd = (static_cast<uint32_t>(base) + kept) & 1u;
    up = static_cast<uint32_t>(frac > 0x80000000u) | (static_cast<uint32_t>(frac == 0x80000000u) & odd);
  } else if (rounding == Rounding::kStochastic) {
    // Round up when the random bits, placed just below the kept bits, carry into them: frac + r * 2^-count
    // reaches one step exactly when the 32-bit sum of the two fractions overflows.
    const uint32_t r = random.value & ((1u << random.count) - 1u);
    up = frac > ~(r << (32 - random.count)) ? 1u : 0u;
  }
  int32_t code = base + static_cast<int32_t>(kept + up);
  // No zero and no subnormals (E8M0): everything below 2^-bias sits nearest to the smallest code.
  if (!fmt.has_subnormals && e_field < 0) code = 0;
  if (code < 0) code = 0;
  if (code > static_cast<int32_t>(fmt.max_finite_code())) code = static_cast<int32_t>(fmt.max_finite_code());

  uint32_t result = static_cast<uint32_t>(code) | ((fmt.is_signed && negative) ? fmt.sign_bit() : 0u);
  if (!fmt.is_signed && (negative & (a != 0))) result = fmt.has_nan() ? fmt.nan_code() : 0u;
  if (a > 0x7F800000u) result = fmt.has_nan() ? fmt.nan_code() : fmt.max_finite_code();
  return result;
}

// Decodes a code (low fmt.bits() bits) to float32; exact for every format here.
NIBBLE_HOST_DEVICE float decode_scalar(uint32_t code, Format fmt) {
  const bool negative = (code & fmt.sign_bit()) != 0;
  const uint32_t sign32 = negative ? 0x80000000u : 0u;
  if (fmt.is_nan_code(code)) return bits_float(0x7FC00000u | sign32);
  if (fmt.is_inf_code(code)) return bits_float(0x7F800000u | sign32);
  const uint32_t mag = code & fmt.magnitude_mask();
  const int e_field = static_cast<int>(mag >> fmt.mbits);
  const uint32_t man = mag & fmt.mantissa_mask();
  // value = significand * 2^(exponent - mbits); built as a product of exact FP32 numbers.
  uint32_t significand;
  int exponent;
  if (e_field == 0 && fmt.has_subnormals) {
    significand = man;
    exponent = 1 - fmt.bias;
  } else {
    significand = (1u << fmt.mbits) | man;
    exponent = e_field - fmt.bias;
  }
  int scale_exp = exponent - fmt.mbits;
  // 2^scale_exp as FP32 may be subnormal or need two factors (E8M0's 2^-127 = 2^-64 * 2^-63).
  float value = static_cast<float>(significand);
  while (scale_exp < -126) {
    value *= bits_float(0x00800000u);  // 2^-126, exact while value stays normal or exact subnormal
    scale_exp += 126;
  }
  while (scale_exp > 127) {
    value *= bits_float(0x7F000000u);  // 2^127
    scale_exp -= 127;
  }
  value *= bits_float(static_cast<uint32_t>(scale_exp + 127) << 23);
  return negative ? -value : value;
}

// Largest finite value of a format, as float32.
NIBBLE_HOST_DEVICE float max_finite(Format fmt) { return decode_scalar(fmt.max_finite_code(), fmt); }

}  // namespace nibble::precision
