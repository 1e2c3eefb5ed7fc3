// CPU bulk encode/decode. The rounding arithmetic is precision/format.h's encode_scalar; this file only
// arranges it so the compiler can vectorise it and so the threads split the work in fixed chunks:
//  - the rounding mode and the common formats are compile-time constants inside the hot loops, and
//    encode_scalar is branch-free 32-bit code, so each element loop becomes straight SIMD code;
//  - the hot loops are plain `for` loops over arrays (no per-element lambdas, no loop-carried state but
//    OR reductions), each doing one job: draw random bits, encode, pack;
//  - stochastic rounding's Philox runs 32 counters side by side (philox_lanes), not one call per group.
#include <omp.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <string>

#include "precision/convert.h"
#include "precision/cpu/encode_rne_lanes.h"
#include "precision/cpu/encode_span.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "precision/stochastic.h"

namespace nibble::precision {
namespace {

// Elements per task: a multiple of every Philox group size (at most 4 * 32 elements) and even (FP4 pairs).
constexpr size_t kChunk = 8192;
// Elements per block inside a task: random bits, codes and input of one block stay in L1.
constexpr size_t kBlock = 2048;
static_assert(kChunk % kBlock == 0 && kBlock % 128 == 0, "blocks split chunks on Philox group boundaries");

std::atomic<int> g_threads{0};

int threads_for(size_t n) {
  const int wanted = g_threads.load() > 0 ? g_threads.load() : omp_get_max_threads();
  const size_t chunks = (n + kChunk - 1) / kChunk;
  return static_cast<int>(std::max<size_t>(1, std::min<size_t>(chunks, static_cast<size_t>(wanted))));
}

inline float load(const float* x, size_t i) { return x[i]; }
inline float load(const uint16_t* x, size_t i) { return bits_float(static_cast<uint32_t>(x[i]) << 16); }

// ---- Stochastic rounding's random bits (precision/stochastic.h gives the element -> bits mapping) ----

constexpr int kPhiloxLanes = 32;

#if defined(__AVX512F__)
// philox_block(seed, offset, first + l) for l = 0..kPhiloxLanes-1, with words[4 * l + w] = word w of lane l:
// four vectors of 8 lanes, one Philox state word per 64-bit lane. vpmuludq multiplies the low 32 bits of each
// lane into the full 64-bit product, so a round is two multiplies, two shifts and two three-way XORs per 8 lanes,
// and no word is masked back to 32 bits: a lane's upper half may carry garbage wherever only its low half is
// read next (the multiplies, the XORs' low halves, the stored words). (GCC's vectorisation of the portable
// loops below uses the 3-uop vpmullq and masks every word: ~2x the instructions.)
void philox_lanes(uint64_t seed, uint64_t offset, uint64_t first, uint32_t* __restrict words) {
  using namespace philox_detail;
  static_assert(kPhiloxLanes == 32, "four vectors of 8 lanes");
  constexpr __mmask8 kAll8 = 0xFF;  // masked forms: GCC 12's unmasked ones trip -Wmaybe-uninitialized
  const __m512i mul0 = _mm512_set1_epi64(kMul0), mul1 = _mm512_set1_epi64(kMul1);
  __m512i c0[4], c1[4], c2[4], c3[4];
  for (int v = 0; v < 4; ++v) {
    const __m512i subsequence = _mm512_add_epi64(_mm512_set1_epi64(static_cast<int64_t>(first + 8u * v)),
                                                 _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
    c0[v] = _mm512_set1_epi64(static_cast<int64_t>(offset & 0xFFFFFFFFu));
    c1[v] = _mm512_set1_epi64(static_cast<int64_t>(offset >> 32));
    c2[v] = subsequence;  // its high half is only ever under a multiply's ignored bits
    c3[v] = _mm512_maskz_srli_epi64(kAll8, subsequence, 32);
  }
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    const __m512i key0 = _mm512_set1_epi64(k0), key1 = _mm512_set1_epi64(k1);
    for (int v = 0; v < 4; ++v) {
      const __m512i p0 = _mm512_maskz_mul_epu32(kAll8, c0[v], mul0);  // hi0:lo0
      const __m512i p1 = _mm512_maskz_mul_epu32(kAll8, c2[v], mul1);  // hi1:lo1
      c0[v] = _mm512_ternarylogic_epi64(_mm512_maskz_srli_epi64(kAll8, p1, 32), c1[v], key0, 0x96);  // hi1 ^ c1 ^ k0
      c2[v] = _mm512_ternarylogic_epi64(_mm512_maskz_srli_epi64(kAll8, p0, 32), c3[v], key1, 0x96);  // hi0 ^ c3 ^ k1
      c1[v] = p1;  // lo1 in the low half
      c3[v] = p0;  // lo0 in the low half
    }
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  // Lane l's four words are 16 consecutive bytes: pair (c0, c1) and (c2, c3) into 64-bit lanes, then interleave.
  const __m512i first_half = _mm512_set_epi64(11, 3, 10, 2, 9, 1, 8, 0);
  const __m512i second_half = _mm512_set_epi64(15, 7, 14, 6, 13, 5, 12, 4);
  for (int v = 0; v < 4; ++v) {
    const __m512i w01 = _mm512_mask_blend_epi32(0xAAAA, c0[v], _mm512_maskz_slli_epi64(kAll8, c1[v], 32));
    const __m512i w23 = _mm512_mask_blend_epi32(0xAAAA, c2[v], _mm512_maskz_slli_epi64(kAll8, c3[v], 32));
    _mm512_storeu_si512(words + 32 * v, _mm512_permutex2var_epi64(w01, first_half, w23));
    _mm512_storeu_si512(words + 32 * v + 16, _mm512_permutex2var_epi64(w01, second_half, w23));
  }
}
#else
// philox_block(seed, offset, first + l) for l = 0..kPhiloxLanes-1, with words[4 * l + w] = word w of lane
// l. The rounds run lane by lane over arrays, so the compiler keeps the counters in vector registers and
// does the 32x32->64 multiplies 8 at a time instead of one scalar Philox call per group; 32 lanes give
// enough independent work to hide the multiply latency. The 32-bit state words live in 64-bit lanes
// (upper half zero): each product is then one 64-bit multiply, without the widening and narrowing
// shuffles that uint32 arrays cost. `omp simd` keeps GCC from fully unrolling the lane loops into scalar
// code before it gets to vectorise them.
void philox_lanes(uint64_t seed, uint64_t offset, uint64_t first, uint32_t* __restrict words) {
  using namespace philox_detail;
  constexpr uint64_t kLow = 0xFFFFFFFFu;
  uint64_t c0[kPhiloxLanes], c1[kPhiloxLanes], c2[kPhiloxLanes], c3[kPhiloxLanes];
#pragma omp simd
  for (int l = 0; l < kPhiloxLanes; ++l) {
    const uint64_t subsequence = first + static_cast<uint64_t>(l);
    c0[l] = offset & kLow;
    c1[l] = offset >> 32;
    c2[l] = subsequence & kLow;
    c3[l] = subsequence >> 32;
  }
  uint64_t k0 = seed & kLow, k1 = seed >> 32;
  for (int round = 0; round < 10; ++round) {
    // One round of philox4x32_10 on every lane: the same arithmetic, in 64-bit lanes.
#pragma omp simd
    for (int l = 0; l < kPhiloxLanes; ++l) {
      const uint64_t p0 = uint64_t{kMul0} * c0[l];
      const uint64_t p1 = uint64_t{kMul1} * c2[l];
      const uint64_t n0 = (p1 >> 32) ^ c1[l] ^ k0;
      const uint64_t n2 = (p0 >> 32) ^ c3[l] ^ k1;
      c0[l] = n0;
      c1[l] = p1 & kLow;
      c2[l] = n2;
      c3[l] = p0 & kLow;
    }
    k0 = (k0 + kWeyl0) & kLow;
    k1 = (k1 + kWeyl1) & kLow;
  }
#pragma omp simd
  for (int l = 0; l < kPhiloxLanes; ++l) {
    words[4 * l + 0] = static_cast<uint32_t>(c0[l]);
    words[4 * l + 1] = static_cast<uint32_t>(c1[l]);
    words[4 * l + 2] = static_cast<uint32_t>(c2[l]);
    words[4 * l + 3] = static_cast<uint32_t>(c3[l]);
  }
}

#endif

// Splits words into per-element fields: element j reads word j / K, bits [(j % K) * r, (j % K + 1) * r).
// K is a template constant so the field loop unrolls into fixed shifts.
template <int K>
void unpack_fields(const uint32_t* words, size_t nwords, int r, uint16_t* bits) {
  if constexpr (K == 2 && std::endian::native == std::endian::little) {
    // 16-bit fields (bfloat16 SR): field f of word w is the word's f-th half in memory, so the fields are
    // the words' bytes as they lie.
    if (r == 16) {
      std::memcpy(bits, words, nwords * sizeof(uint32_t));
      return;
    }
  }
  const uint32_t mask = (1u << r) - 1u;
  for (size_t w = 0; w < nwords; ++w)
    for (int f = 0; f < K; ++f) bits[K * w + f] = static_cast<uint16_t>((words[w] >> (f * r)) & mask);
}

// Scratch for the random bits of one block: Philox words and the per-element fields, from the Philox
// group boundary at or before the block's first element.
struct RandomScratch {
  // A block needs at most kBlock / 4 + 2 Philox calls (group >= 4), rounded up to whole philox_lanes batches.
  static constexpr size_t kMaxCalls = (kBlock / 4 + 2 + kPhiloxLanes - 1) / kPhiloxLanes * kPhiloxLanes;
  alignas(64) std::array<uint32_t, 4 * kMaxCalls> words;
  // Elements from the group boundary: at most (group - 1) before the block and a word's worth after it.
  alignas(64) std::array<uint16_t, kBlock + 128 + 32> bits;
};

// The r random bits (1..16) of global elements [first, first + n), n <= kBlock: returns p with p[j] the
// bits of element first + j, exactly stochastic_bits(seed, offset, first + j, r).
// (A template so encode_span.h's SpanRandomScratch, the same arrays as plain members, shares the code.)
template <class Scratch>
const uint16_t* random_bits(uint64_t seed, uint64_t offset, uint64_t first, size_t n, int r, Scratch& s) {
  const int k = elements_per_random_word(r);
  const uint64_t group = elements_per_philox_call(r);
  const size_t lead = static_cast<size_t>(first % group);
  const uint64_t first_call = first / group;
  const size_t calls = (lead + n + group - 1) / group;
  for (size_t c = 0; c < calls; c += kPhiloxLanes) philox_lanes(seed, offset, first_call + c, &s.words[4 * c]);
  const size_t nwords = (lead + n + k - 1) / k;
  switch (k) {
    case 32: unpack_fields<32>(&s.words[0], nwords, r, &s.bits[0]); break;
    case 16: unpack_fields<16>(&s.words[0], nwords, r, &s.bits[0]); break;
    case 8: unpack_fields<8>(&s.words[0], nwords, r, &s.bits[0]); break;
    case 4: unpack_fields<4>(&s.words[0], nwords, r, &s.bits[0]); break;
    case 2: unpack_fields<2>(&s.words[0], nwords, r, &s.bits[0]); break;
    default: unpack_fields<1>(&s.words[0], nwords, r, &s.bits[0]); break;
  }
  return &s.bits[0] + lead;
}

// ---- Encoding ----

struct ChunkFlags {
  bool nan = false;
  bool negative = false;
};

// Encodes x[0, n) into out[0, n) (one code per element, Out wide enough for the format). `random` holds
// each element's random bits under stochastic rounding and is unused otherwise. The NaN / negative checks
// look at the unscaled input, as the error report after the pass does.
template <Rounding R, class Src, class GetFormat, class Out>
ChunkFlags encode_block(const Src* __restrict x, size_t n, GetFormat get_format, float scale,
                        const uint16_t* __restrict random, int r, Out* __restrict out) {
  // Asked here rather than passed in, so the format stays a compile-time constant even if the compiler
  // does not inline this function into its caller.
  const Format fmt = get_format();
  uint32_t nan_any = 0, neg_any = 0;
  // No `omp simd` here: GCC 12 then privatises the RandomBits temporary into an array of structs and gives
  // up; with the __restrict pointers the plain loop vectorises (check with -fopt-info-vec).
  for (size_t j = 0; j < n; ++j) {
    const float v = load(x, j);
    const uint32_t u = float_bits(v);
    nan_any |= (u & 0x7FFFFFFFu) > 0x7F800000u ? 1u : 0u;
    neg_any |= u > 0x80000000u ? 1u : 0u;  // negative and not -0
    const uint32_t value = R == Rounding::kStochastic ? random[j] : 0u;
    out[j] = static_cast<Out>(encode_scalar(v * scale, fmt, R, RandomBits{value, r}));
  }
  return ChunkFlags{nan_any != 0, neg_any != 0};
}

// Packs 4-bit codes two per byte, element 2p in the low nibble; an odd count leaves the last high nibble 0.
void pack_nibbles(const uint8_t* __restrict nibbles, size_t n, uint8_t* __restrict out) {
  const size_t pairs = n / 2;
#pragma omp simd
  for (size_t p = 0; p < pairs; ++p)
    out[p] = static_cast<uint8_t>(nibbles[2 * p] | (nibbles[2 * p + 1] << 4));
  if (n % 2) out[pairs] = nibbles[n - 1];
}

// Stores 16-bit codes little-endian.
void store_le16(const uint16_t* __restrict wide, size_t n, uint8_t* __restrict out) {
#pragma omp simd
  for (size_t j = 0; j < n; ++j) {
    out[2 * j] = static_cast<uint8_t>(wide[j]);
    out[2 * j + 1] = static_cast<uint8_t>(wide[j] >> 8);
  }
}

// Encodes elements [begin, end) of x into codes, block by block; get_format() yields the format (a
// constant for the common ones, so encode_block folds it in).
template <Rounding R, class Src, class GetFormat>
ChunkFlags encode_chunk(const Src* x, size_t begin, size_t end, GetFormat get_format, const EncodeOptions& opt,
                        int r, uint64_t index_base, uint8_t* codes) {
  const int width = get_format().bits();
  RandomScratch scratch;
  alignas(64) std::array<uint8_t, kBlock> narrow;  // 4-bit codes before packing
  alignas(64) std::array<uint16_t, kBlock> wide;   // codes of formats wider than 8 bits
  ChunkFlags flags;
  for (size_t b = begin; b < end; b += kBlock) {
    const size_t n = std::min(kBlock, end - b);
    const uint16_t* random = nullptr;
    if constexpr (R == Rounding::kStochastic)
      random = random_bits(opt.seed, opt.offset, index_base + b, n, r, scratch);
    ChunkFlags f;
    if (width <= 4) {
      f = encode_block<R>(x + b, n, get_format, opt.scale, random, r, narrow.data());
      pack_nibbles(narrow.data(), n, codes + b / 2);  // b is even: blocks start at multiples of kBlock
    } else if (width <= 8) {
      f = encode_block<R>(x + b, n, get_format, opt.scale, random, r, codes + b);
    } else {
      f = encode_block<R>(x + b, n, get_format, opt.scale, random, r, wide.data());
      store_le16(wide.data(), n, codes + 2 * b);
    }
    flags.nan = flags.nan || f.nan;
    flags.negative = flags.negative || f.negative;
  }
  return flags;
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

// A named format as a compile-time constant: encode_block asks it for the format, so every field folds
// into the loop and the loop vectorises.
template <const Format& F>
struct ConstantFormat {
  constexpr Format operator()() const { return F; }
};

template <Rounding R, class Src>
ChunkFlags dispatch_format(const Src* x, size_t n, const Format& fmt, const EncodeOptions& opt, int r,
                           uint64_t index_base, uint8_t* codes) {
  using namespace formats;
  auto run = [&](auto get_format) { return encode_all<R>(x, n, get_format, opt, r, index_base, codes); };
  if (fmt == kE4M3) return run(ConstantFormat<kE4M3>{});
  if (fmt == kE5M2) return run(ConstantFormat<kE5M2>{});
  if (fmt == kE2M1) return run(ConstantFormat<kE2M1>{});
  if (fmt == kE3M2) return run(ConstantFormat<kE3M2>{});
  if (fmt == kE2M3) return run(ConstantFormat<kE2M3>{});
  if (fmt == kUE4M3) return run(ConstantFormat<kUE4M3>{});
  if (fmt == kE8M0) return run(ConstantFormat<kE8M0>{});
  if (fmt == kBF16) return run(ConstantFormat<kBF16>{});
  if (fmt == kFP16) return run(ConstantFormat<kFP16>{});
  // Research formats: the same code with a runtime Format. GCC 12 leaves this loop scalar (the format's
  // branches stay in it and block if-conversion).
  return run([fmt] { return fmt; });
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

// Decodes n one-byte codes by table lookup. __restrict: the output must not be suspected of overwriting
// the table, or every lookup reloads it and the loop stays scalar.
void decode_bytes(const uint8_t* __restrict codes, size_t n, const float* __restrict table,
                  float* __restrict out) {
  for (size_t i = 0; i < n; ++i) out[i] = table[codes[i]];
}

// The two decoded values of every byte of packed 4-bit codes (low nibble first): FP4 decodes a byte, i.e.
// two elements, per lookup.
struct NibblePair {
  float lo, hi;
};

std::array<NibblePair, 256> nibble_pair_table(const std::array<float, 256>& table) {
  std::array<NibblePair, 256> pairs{};
  for (uint32_t b = 0; b < 256; ++b) pairs[b] = NibblePair{table[b & 0xFu], table[b >> 4]};
  return pairs;
}

// Decodes n 4-bit codes packed two per byte (element 2p in the low nibble); `codes` starts at a byte.
void decode_nibbles(const uint8_t* __restrict codes, size_t n, const NibblePair* __restrict pairs,
                    float* __restrict out) {
  for (size_t p = 0; p < n / 2; ++p) {
    const NibblePair v = pairs[codes[p]];
    out[2 * p] = v.lo;
    out[2 * p + 1] = v.hi;
  }
  if (n % 2) out[n - 1] = pairs[codes[n / 2]].lo;
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
  const std::array<NibblePair, 256> pairs = nibble_pair_table(table);
#pragma omp parallel for schedule(static) num_threads(threads_for(n))
  for (size_t c = 0; c < chunks; ++c) {
    const size_t begin = c * kChunk, count = std::min(n, (c + 1) * kChunk) - begin;
    if (bits <= 4) {
      decode_nibbles(codes + begin / 2, count, pairs.data(), out + begin);  // begin is even
    } else {
      decode_bytes(codes + begin, count, table.data(), out + begin);
    }
  }
}

void set_num_threads(int n) {
  if (n < 0) throw InvalidArgument("set_num_threads: thread count must be >= 0 (0 = all), got " + std::to_string(n));
  g_threads.store(n);
}

int num_threads() { return g_threads.load() > 0 ? g_threads.load() : omp_get_max_threads(); }

const uint16_t* random_span_bits(uint64_t seed, uint64_t offset, uint64_t first, size_t n, int r,
                                 SpanRandomScratch& scratch) {
  static_assert(kMaxRandomSpan == kBlock && sizeof(scratch.words) >= sizeof(RandomScratch::words) &&
                    sizeof(scratch.bits) >= sizeof(RandomScratch::bits),
                "SpanRandomScratch holds what random_bits writes for kBlock elements");
  if (n > kMaxRandomSpan)
    throw InvalidArgument("random_span_bits: at most " + std::to_string(kMaxRandomSpan) + " elements, got " +
                          std::to_string(n));
  return random_bits(seed, offset, first, n, r, scratch);
}

void encode_span(const float* x, size_t n, float scale, const Format& fmt, Rounding rounding,
                 const uint16_t* random, int r, uint8_t* codes) {
  using namespace formats;
  if (fmt.bits() > 8) throw InvalidArgument("encode_span: codes of " + format_name(fmt) + " do not fit a byte");
  // The quantizers' common case: the few-op RNE lanes (encode_rne_lanes.h). A preprocessor guard, not
  // `if constexpr`: without AVX-512 the template is not declared at all.
#if NIBBLE_HAVE_RNE_LANES
  if (rounding == Rounding::kNearestEven) {
    if (fmt == kE4M3) return encode_rne_lanes<kE4M3>(x, n, scale, codes);
    if (fmt == kE5M2) return encode_rne_lanes<kE5M2>(x, n, scale, codes);
    if (fmt == kE2M1) return encode_rne_lanes<kE2M1>(x, n, scale, codes);
  }
#endif
  auto run = [&](auto get_format) {
    switch (rounding) {
      case Rounding::kNearestEven: encode_block<Rounding::kNearestEven>(x, n, get_format, scale, random, r, codes); break;
      case Rounding::kStochastic: encode_block<Rounding::kStochastic>(x, n, get_format, scale, random, r, codes); break;
      case Rounding::kTowardZero: encode_block<Rounding::kTowardZero>(x, n, get_format, scale, random, r, codes); break;
    }
  };
  if (fmt == kE4M3) return run(ConstantFormat<kE4M3>{});
  if (fmt == kE5M2) return run(ConstantFormat<kE5M2>{});
  if (fmt == kE2M1) return run(ConstantFormat<kE2M1>{});
  run([fmt] { return fmt; });
}

void encode_span_rows(const float* x, int64_t ld, int64_t rows, int64_t n, float scale, const Format& fmt,
                      uint8_t* codes, int64_t ldc, bool stream) {
  using namespace formats;
  if (fmt.bits() > 8) throw InvalidArgument("encode_span_rows: codes of " + format_name(fmt) + " do not fit a byte");
  if (ld == n && ldc == n && !stream)
    return encode_span(x, static_cast<size_t>(rows * n), scale, fmt, Rounding::kNearestEven, nullptr, 0, codes);
#if NIBBLE_HAVE_RNE_LANES
  {
    auto lanes = [&](auto encode) {
      for (int64_t i = 0; i < rows; ++i) encode(x + i * ld, static_cast<size_t>(n), scale, codes + i * ldc);
    };
    if (stream) {
      if (fmt == kE4M3) return lanes(encode_rne_lanes<kE4M3, true>);
      if (fmt == kE5M2) return lanes(encode_rne_lanes<kE5M2, true>);
      if (fmt == kE2M1) return lanes(encode_rne_lanes<kE2M1, true>);
    }
    if (fmt == kE4M3) return lanes(encode_rne_lanes<kE4M3>);
    if (fmt == kE5M2) return lanes(encode_rne_lanes<kE5M2>);
    if (fmt == kE2M1) return lanes(encode_rne_lanes<kE2M1>);
  }
#endif
  auto run = [&](auto get_format) {
    for (int64_t i = 0; i < rows; ++i)
      encode_block<Rounding::kNearestEven>(x + i * ld, static_cast<size_t>(n), get_format, scale, nullptr, 0,
                                           codes + i * ldc);
  };
  if (fmt == kE4M3) return run(ConstantFormat<kE4M3>{});
  if (fmt == kE5M2) return run(ConstantFormat<kE5M2>{});
  if (fmt == kE2M1) return run(ConstantFormat<kE2M1>{});
  run([fmt] { return fmt; });
}

void pack_nibble_span(const uint8_t* nibbles, size_t n, uint8_t* out) { pack_nibbles(nibbles, n, out); }

}  // namespace nibble::precision
