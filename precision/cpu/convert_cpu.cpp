// CPU bulk encode/decode. The rounding arithmetic is precision/format.h's encode_scalar; this file only
// arranges it so the compiler can vectorise it (the rounding mode and the common formats are compile-time
// constants inside the hot loops) and so the threads split the work in fixed chunks.
#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <string>

#include "precision/convert.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "precision/stochastic.h"

namespace nibble::precision {
namespace {

// Elements per task: a multiple of every Philox group size (16, 8 or 4 elements) and even (FP4 pairs).
constexpr size_t kChunk = 8192;

std::atomic<int> g_threads{0};

int threads_for(size_t n) {
  const int wanted = g_threads.load() > 0 ? g_threads.load() : omp_get_max_threads();
  const size_t chunks = (n + kChunk - 1) / kChunk;
  return static_cast<int>(std::max<size_t>(1, std::min<size_t>(chunks, static_cast<size_t>(wanted))));
}

NIBBLE_HOST_DEVICE float load(const float* x, size_t i) { return x[i]; }
NIBBLE_HOST_DEVICE float load(const uint16_t* x, size_t i) { return bits_float(static_cast<uint32_t>(x[i]) << 16); }

// Fills words[] with the random words of elements [begin, begin + count); begin is a multiple of the
// Philox group size. Element begin + j then reads word j / k.
void fill_random_words(uint64_t seed, uint64_t offset, uint64_t begin, size_t count, int r, uint32_t* words) {
  const int k = elements_per_random_word(r);
  const uint64_t group = 4u * k;
  const uint64_t first_subsequence = begin / group;
  const size_t calls = (count + group - 1) / group;
  for (size_t c = 0; c < calls; ++c) {
    const Philox4x32Output out = philox_block(seed, offset, first_subsequence + c);
    for (int w = 0; w < 4; ++w) words[4 * c + w] = out.v[w];
  }
}

struct ChunkFlags {
  bool nan = false;
  bool negative = false;
};

// Encodes elements [begin, end) of x into codes; F() yields the format (a constant for the common ones).
template <Rounding R, class Src, class GetFormat>
ChunkFlags encode_chunk(const Src* x, size_t begin, size_t end, GetFormat get_format, const EncodeOptions& opt,
                        int r, uint64_t index_base, uint8_t* codes) {
  const Format fmt = get_format();
  const size_t count = end - begin;
  // Stochastic rounding: the random words of the chunk, from the Philox group that holds its first element
  // (index_base need not be group-aligned, so `lead` elements of the first group precede the chunk).
  std::array<uint32_t, kChunk + 16> words;
  const int per_word = elements_per_random_word(r);
  size_t lead = 0;
  if constexpr (R == Rounding::kStochastic) {
    const uint64_t group = elements_per_philox_call(r);
    const uint64_t first = index_base + begin;
    lead = static_cast<size_t>(first % group);
    fill_random_words(opt.seed, opt.offset, first - lead, count + lead, r, words.data());
  }
  const uint32_t mask = (1u << r) - 1u;
  auto random_of = [&](size_t j) -> RandomBits {
    if constexpr (R == Rounding::kStochastic) {
      const size_t e = j + lead;
      return RandomBits{(words[e / per_word] >> ((e % per_word) * r)) & mask, r};
    } else {
      (void)j;
      return RandomBits{};
    }
  };
  const float scale = opt.scale;
  uint32_t nan_any = 0, neg_any = 0;
  auto code_of = [&](size_t j) -> uint32_t {
    const float v = load(x, begin + j);
    const uint32_t u = float_bits(v);
    nan_any |= (u & 0x7FFFFFFFu) > 0x7F800000u;
    neg_any |= (u > 0x80000000u);  // negative and not -0
    return encode_scalar(v * scale, fmt, R, random_of(j));
  };
  const int bits = fmt.bits();
  if (bits <= 4) {
    uint8_t* out = codes + begin / 2;
    const size_t pairs = count / 2;
    for (size_t p = 0; p < pairs; ++p) out[p] = static_cast<uint8_t>(code_of(2 * p) | (code_of(2 * p + 1) << 4));
    if (count % 2) out[pairs] = static_cast<uint8_t>(code_of(count - 1));
  } else if (bits <= 8) {
    uint8_t* out = codes + begin;
    for (size_t j = 0; j < count; ++j) out[j] = static_cast<uint8_t>(code_of(j));
  } else {
    uint8_t* out = codes + 2 * begin;
    for (size_t j = 0; j < count; ++j) {
      const uint32_t c = code_of(j);
      out[2 * j] = static_cast<uint8_t>(c);
      out[2 * j + 1] = static_cast<uint8_t>(c >> 8);
    }
  }
  return ChunkFlags{nan_any != 0, neg_any != 0};
}

template <class Src>
size_t first_index_where(const Src* x, size_t n, bool want_nan) {
  for (size_t i = 0; i < n; ++i) {
    const uint32_t u = float_bits(load(x, i));
    if (want_nan ? (u & 0x7FFFFFFFu) > 0x7F800000u : u > 0x80000000u) return i;
  }
  return n;
}

template <Rounding R, class Src, class GetFormat>
ChunkFlags encode_all(const Src* x, size_t n, GetFormat get_format, const EncodeOptions& opt, int r,
                      uint64_t index_base, uint8_t* codes) {
  const size_t chunks = (n + kChunk - 1) / kChunk;
  bool nan = false, negative = false;
#pragma omp parallel for schedule(static) num_threads(threads_for(n)) reduction(|| : nan, negative)
  for (size_t c = 0; c < chunks; ++c) {
    const size_t begin = c * kChunk;
    const ChunkFlags f =
        encode_chunk<R>(x, begin, std::min(n, begin + kChunk), get_format, opt, r, index_base, codes);
    nan = nan || f.nan;
    negative = negative || f.negative;
  }
  return ChunkFlags{nan, negative};
}

template <Rounding R, class Src>
ChunkFlags dispatch_format(const Src* x, size_t n, const Format& fmt, const EncodeOptions& opt, int r,
                           uint64_t index_base, uint8_t* codes) {
  // The formats training uses get their own instantiation, so their constants fold into the loop.
  if (fmt == formats::kE4M3)
    return encode_all<R>(x, n, [] { return formats::kE4M3; }, opt, r, index_base, codes);
  if (fmt == formats::kE5M2)
    return encode_all<R>(x, n, [] { return formats::kE5M2; }, opt, r, index_base, codes);
  if (fmt == formats::kE2M1)
    return encode_all<R>(x, n, [] { return formats::kE2M1; }, opt, r, index_base, codes);
  return encode_all<R>(x, n, [fmt] { return fmt; }, opt, r, index_base, codes);
}

template <class Src>
void encode_any(const Src* x, size_t n, const Format& fmt, const EncodeOptions& opt, uint8_t* codes,
                uint64_t index_base) {
  if (!(opt.scale > 0.0f) || !std::isfinite(opt.scale))
    throw InvalidArgument("encode: scale must be a finite positive number, got " + std::to_string(opt.scale));
  const int r = opt.random_bits == 0 ? default_random_bit_count(fmt) : opt.random_bits;
  if (opt.rounding == Rounding::kStochastic && (r < 1 || r > 16))
    throw InvalidArgument("encode: stochastic rounding takes 1..16 random bits per element, got " +
                          std::to_string(r));
  ChunkFlags flags;
  switch (opt.rounding) {
    case Rounding::kNearestEven:
      flags = dispatch_format<Rounding::kNearestEven>(x, n, fmt, opt, r, index_base, codes);
      break;
    case Rounding::kStochastic:
      flags = dispatch_format<Rounding::kStochastic>(x, n, fmt, opt, r, index_base, codes);
      break;
    case Rounding::kTowardZero:
      flags = dispatch_format<Rounding::kTowardZero>(x, n, fmt, opt, r, index_base, codes);
      break;
  }
  if (flags.nan && (opt.nan == NanPolicy::kError || !fmt.has_nan())) {
    const size_t i = first_index_where(x, n, true);
    throw InvalidArgument("encode to " + format_name(fmt) + ": input has NaN at element " + std::to_string(i) +
                          (fmt.has_nan() ? "; pass nan='propagate' to encode NaN as the format's NaN code"
                                         : "; " + format_name(fmt) + " has no NaN code"));
  }
  if (flags.negative && !fmt.is_signed) {
    const size_t i = first_index_where(x, n, false);
    throw InvalidArgument("encode to " + format_name(fmt) + ": the format is unsigned but element " +
                          std::to_string(i) + " is negative (" + std::to_string(load(x, i)) + ")");
  }
}

std::array<float, 256> decode_table(const Format& fmt) {
  std::array<float, 256> table{};
  const uint32_t codes = fmt.bits() <= 4 ? 16u : 256u;
  for (uint32_t c = 0; c < codes; ++c) table[c] = decode_scalar(c, fmt);
  return table;
}

}  // namespace

void encode_f32(const float* x, size_t n, const Format& fmt, const EncodeOptions& options, uint8_t* codes,
                uint64_t index_base) {
  encode_any(x, n, fmt, options, codes, index_base);
}

void encode_bf16(const uint16_t* x, size_t n, const Format& fmt, const EncodeOptions& options, uint8_t* codes,
                 uint64_t index_base) {
  encode_any(x, n, fmt, options, codes, index_base);
}

void decode_to_f32(const uint8_t* codes, size_t n, const Format& fmt, float* out) {
  const int bits = fmt.bits();
  const size_t chunks = (n + kChunk - 1) / kChunk;
  if (bits > 8) {
#pragma omp parallel for schedule(static) num_threads(threads_for(n))
    for (size_t c = 0; c < chunks; ++c)
      for (size_t i = c * kChunk; i < std::min(n, (c + 1) * kChunk); ++i)
        out[i] = decode_scalar(codes[2 * i] | (static_cast<uint32_t>(codes[2 * i + 1]) << 8), fmt);
    return;
  }
  const std::array<float, 256> table = decode_table(fmt);
#pragma omp parallel for schedule(static) num_threads(threads_for(n))
  for (size_t c = 0; c < chunks; ++c) {
    const size_t begin = c * kChunk, end = std::min(n, (c + 1) * kChunk);
    if (bits <= 4) {
      for (size_t i = begin; i < end; ++i) out[i] = table[(codes[i / 2] >> ((i % 2) * 4)) & 0xFu];
    } else {
      for (size_t i = begin; i < end; ++i) out[i] = table[codes[i]];
    }
  }
}

void set_num_threads(int n) {
  if (n < 0) throw InvalidArgument("set_num_threads: thread count must be >= 0 (0 = all), got " + std::to_string(n));
  g_threads.store(n);
}

int num_threads() { return g_threads.load() > 0 ? g_threads.load() : omp_get_max_threads(); }

}  // namespace nibble::precision
