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

// Stochastic-rounding random bits: `r` uniform bits (1..16) that `stochastic` rounding adds just below the
// kept mantissa bits before truncating (NUMERICS.md: r = 8 mirrors the hardware cvt.rs instruction).
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
NIBBLE_HOST_DEVICE uint32_t encode_scalar(float x, Format fmt, Rounding rounding, RandomBits random = {}) {
  const uint32_t u = float_bits(x);
  const uint32_t sign = u >> 31;
  const uint32_t a = u & 0x7FFFFFFFu;
  if (a > 0x7F800000u) return fmt.has_nan() ? fmt.nan_code() : fmt.max_finite_code();
  if (!fmt.is_signed && sign && a != 0) return fmt.has_nan() ? fmt.nan_code() : 0u;
  const uint32_t sign_code = (fmt.is_signed && sign) ? fmt.sign_bit() : 0u;

  // Significand with its implicit bit at bit 23, and the unbiased exponent. FP32 subnormals are normalised
  // so that formats without subnormals (E8M0, whose smallest value 2^-127 is an FP32 subnormal) see them
  // on their own grid.
  const int exp32 = static_cast<int>(a >> 23);
  uint64_t sig = (a & 0x7FFFFFu) | 0x800000u;
  int e_unbiased = exp32 - 127;
  if (exp32 == 0) {
    const uint32_t man = a & 0x7FFFFFu;
    const int shift = man ? count_leading_zeros(man) - 8 : 0;
    sig = static_cast<uint64_t>(man) << shift;
    e_unbiased = -126 - shift;
  }
  const int e_field = e_unbiased + fmt.bias;  // the target exponent field, if x were normal there

  // Every code is base + (significand >> drop): below the smallest normal, the format's subnormals keep
  // the exponent fixed and drop more bits; a carry out of the mantissa lands in the next exponent exactly.
  const int min_field = fmt.has_subnormals ? 1 : 0;
  int drop = 23 - fmt.mbits + (e_field < min_field ? (min_field - e_field) : 0);
  if (drop > 48) drop = 48;  // everything is below half an ulp by then; keep the shifts defined
  const int field = e_field < min_field ? min_field : e_field;
  // With subnormals the implicit bit of sig >> drop adds one to the exponent field, hence field - 1.
  const int64_t base = static_cast<int64_t>(field - 1) << fmt.mbits;

  uint64_t kept = sig >> drop;
  const uint64_t rem = sig & ((uint64_t{1} << drop) - 1u);
  if (rounding == Rounding::kNearestEven) {
    const uint64_t half = uint64_t{1} << (drop - 1);
    // Ties go to the even *code*; for mbits = 0 (E8M0) the code's last bit is the exponent's, not kept's.
    const bool odd = ((static_cast<uint64_t>(base) + kept) & 1u) != 0;
    kept += (rem > half || (rem == half && odd)) ? 1u : 0u;
  } else if (rounding == Rounding::kStochastic) {
    const uint64_t r = random.value & ((1u << random.count) - 1u);
    const uint64_t aligned = drop >= random.count ? (r << (drop - random.count)) : (r >> (random.count - drop));
    kept = (sig + aligned) >> drop;
  }
  int64_t code = base + static_cast<int64_t>(kept);
  if (!fmt.has_subnormals && e_field < 0) {
    // No zero and no subnormals (E8M0): everything below 2^-bias sits nearest to the smallest code.
    code = 0;
  }
  if (code < 0) code = 0;
  if (code > static_cast<int64_t>(fmt.max_finite_code())) code = fmt.max_finite_code();
  return sign_code | static_cast<uint32_t>(code);
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
