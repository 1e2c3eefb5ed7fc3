#pragma once
// Element types a Communicator moves, and the reductions it applies. Counts are always elements of one of
// these types: a buffer is (pointer, element count, DType), never (pointer, bytes).
#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

namespace nibble::parallel {

// bfloat16 carried as its 16 raw bits. A distinct type (not uint16_t) so a span of bfloat16 can never be
// mistaken for integers: precision/ keeps bfloat16 as uint16_t, and as_bf16() relabels such a buffer.
struct BFloat16 {
  uint16_t bits = 0;
  friend constexpr bool operator==(BFloat16 a, BFloat16 b) { return a.bits == b.bits; }
};
static_assert(sizeof(BFloat16) == 2 && alignof(BFloat16) == 2);

inline float bf16_to_float(BFloat16 x) {
  return std::bit_cast<float>(static_cast<uint32_t>(x.bits) << 16);
}

// Round to nearest, ties to even; NaN stays a (quiet) NaN.
inline BFloat16 float_to_bf16(float f) {
  const uint32_t u = std::bit_cast<uint32_t>(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return BFloat16{static_cast<uint16_t>((u >> 16) | 0x0040u)};
  const uint32_t rounded = u + 0x7fffu + ((u >> 16) & 1u);
  return BFloat16{static_cast<uint16_t>(rounded >> 16)};
}

enum class DType : uint8_t { kFloat32, kFloat64, kInt32, kInt64, kUInt8, kBFloat16 };

template <class T>
struct dtype_traits;  // only the six element types below are communicable
template <>
struct dtype_traits<float> {
  static constexpr DType value = DType::kFloat32;
};
template <>
struct dtype_traits<double> {
  static constexpr DType value = DType::kFloat64;
};
template <>
struct dtype_traits<int32_t> {
  static constexpr DType value = DType::kInt32;
};
template <>
struct dtype_traits<int64_t> {
  static constexpr DType value = DType::kInt64;
};
template <>
struct dtype_traits<uint8_t> {
  static constexpr DType value = DType::kUInt8;
};
template <>
struct dtype_traits<BFloat16> {
  static constexpr DType value = DType::kBFloat16;
};

template <class T>
concept Element = requires {
  dtype_traits<std::remove_const_t<T>>::value;
};

template <Element T>
inline constexpr DType dtype_of = dtype_traits<std::remove_const_t<T>>::value;

constexpr size_t element_size(DType t) {
  switch (t) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat64:
      return 8;
    case DType::kInt32:
      return 4;
    case DType::kInt64:
      return 8;
    case DType::kUInt8:
      return 1;
    case DType::kBFloat16:
      return 2;
  }
  return 0;
}

constexpr bool is_floating(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat64 || t == DType::kBFloat16;
}

const char* dtype_name(DType t);  // "float32", "bfloat16", ...

// kAvg is the sum divided by the group size, defined for floating types only (an integer average would
// silently truncate). Integer sums wrap as the C++ type does (uint8 modulo 256).
enum class ReduceOp : uint8_t { kSum, kMax, kAvg };

const char* reduce_op_name(ReduceOp op);            // "sum", "max", "avg"
ReduceOp parse_reduce_op(const std::string& name);  // throws InvalidArgument naming the valid ops

// A typed, type-erased buffer: what the backends see. Built from spans, so the count is in elements.
struct ConstView {
  const void* data = nullptr;
  size_t count = 0;
  DType dtype = DType::kFloat32;
  size_t bytes() const { return count * element_size(dtype); }
};
struct View {
  void* data = nullptr;
  size_t count = 0;
  DType dtype = DType::kFloat32;
  size_t bytes() const { return count * element_size(dtype); }
  operator ConstView() const { return ConstView{data, count, dtype}; }
};

}  // namespace nibble::parallel
