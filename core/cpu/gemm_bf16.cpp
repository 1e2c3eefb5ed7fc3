// BF16 GEMM in the GotoBLAS shape. K is cut into blocks of at most kKcMax (balanced, multiples of 32).
// Per block, both operands are decoded (RowSource, once per panel) and packed for one of two micro-kernels
// that give the same bits (see "Kernels" below):
//   dpbf16: A as row-major rows of k-pairs with a fixed stride of kLdaW 32-bit words, so a micro-kernel
//           reads the k-pair p of its row i at a[i * kLdaW + p] (a constant displacement: one pointer, no
//           index math); B as 32-column panels of (k-pair, column) 32-bit words, transposed 16 x 16 words
//           at a time. Per k-pair: two loads of B, kMr broadcasts of A, 2 * kMr vdpbf16ps.
//   fma32:  the same values widened to FP32 (exact), stride kLdaF floats, B panels of (k, column) floats;
//           per k: two loads of B, kMr broadcasts of A, 2 * kMr vfmadd231ps.
// A kMr x 32 micro-kernel keeps 2 * kMr zmm accumulators (28 of the 32 registers). C is updated straight
// from the registers (masked at the N edge, a smaller kMr at the M edge): stored on the first K block,
// added to on the others, multiplied by alpha on the last.
//
// Kernels. vdpbf16ps adds a k-pair's two exact products into the FP32 accumulator one after the other, odd
// k first (Intel SDM, VDPBF16PS; DAZ/FTZ). The fma32 kernel packs each pair in that order (k ^ 1), so it
// rounds the same sums in the same order and gives the same bits unless a subnormal is involved (fma32
// keeps subnormals). Which is faster depends on the CPU: on Intel Sapphire/Emerald Rapids vdpbf16ps zmm
// issues at a quarter of the FMA rate (measured here: 1.5 vs 6.0 G instructions/s on one core, so FP32
// FMAs do twice the FLOPs); on AMD Zen 4/5 it issues at the FMA rate and does twice the FLOPs. The default
// follows the vendor; NIBBLE_CPU_GEMM_KERNEL=fma32|dpbf16|hwy|scalar overrides it. Without AVX512_BF16 at
// compile time the default is "hwy": the fma32 packing and micro-kernel written once in Highway
// (gemm_bf16_lanes.cpp) and dispatched at run time to the CPU's best target (AVX2, AVX-512, NEON, ...),
// same layout, same bits.
//
// Threads: one parallel region for the whole GEMM and no barrier inside it. The work is one ordered list
// of tasks, K block by K block: packing tasks (A row chunks, B panels), then tile tasks (kMc x kNc blocks
// of C). Threads claim tasks in that order from an atomic counter; a task waits (on completion stamps)
// only for the tasks whose results it reads or whose buffer it overwrites. Packed buffers alternate
// between two slots, so packing block k+1 overlaps the last tiles of block k, and a thread descheduled by
// other work on the machine stalls only the tasks that depend on its own.
#include "core/cpu/gemm_bf16.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

#include "core/cpu/gemm_bf16_lanes.h"
#include "core/cpu/gemm_bf16_panels.h"
#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
#include "precision/cpu/transpose_lanes.h"
#define NIBBLE_GEMM_HWY 1
#endif

#if defined(__AVX512BF16__) && defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized on their own _mm512_undefined_* (GCC PR 105593).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#define NIBBLE_NATIVE_BF16 1
#endif

namespace nibble::core::cpu {
namespace {

#if NIBBLE_NATIVE_BF16
constexpr bool kHaveNative = true;
#else
constexpr bool kHaveNative = false;
#endif
#if NIBBLE_GEMM_HWY
constexpr bool kHaveHwy = true;
#else
constexpr bool kHaveHwy = false;
#endif

constexpr int kMr = 14;                       // rows of A per micro-kernel (2 * 14 accumulators)
constexpr int64_t kLda = kKcMax + 32;         // packed/scratch A row stride in BF16; +64 B keeps rows off 4 KiB aliasing
constexpr int64_t kLdaW = kLda / 2;           // ... in 32-bit k-pair words (dpbf16 layout)
constexpr int64_t kMc = 16 * kMr;             // rows of C per tile (A block 224 x 1024 BF16 = 448 KiB, in L2)
constexpr int64_t kNc = 4 * kNr;              // columns of C per tile (~60 MFLOP per tile and K block)
constexpr int64_t kAChunk = 4 * kMr;          // rows of A per packing task
constexpr int64_t kScratchRows = std::max<int64_t>(kNr, kAChunk);  // per-thread decode scratch, kLda BF16 each

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// A 64-byte aligned scratch buffer, kept per calling thread and grown on demand, so repeated GEMMs of the
// same shapes neither allocate nor page-fault.
struct Workspace {
  struct Free {
    void operator()(void* p) const { std::free(p); }
  };
  std::unique_ptr<void, Free> mem;
  size_t bytes = 0;
  void* get(size_t need) {
    need = round_up(static_cast<int64_t>(need), 4096);
    if (need > bytes) {
      mem.reset();
      void* p = std::aligned_alloc(4096, need);
      if (!p) throw std::bad_alloc();
      mem.reset(p);
      bytes = need;
    }
    return mem.get();
  }
};

// ---- micro-kernels ------------------------------------------------------------------------------------

// C[i, j] (i < MR, j < nr) = alpha? (C? + sum_p A[i, p] · B[p, j]) over `steps` k-steps (k-pairs for
// dpbf16, single k for fma32); A row-major with a fixed word stride, B a packed panel of kNr words per step.
struct Update {
  bool load_c;   // add to C (not the first K block)
  bool scale;    // multiply by alpha (the last K block, alpha != 1)
  float alpha;
};

#if NIBBLE_NATIVE_BF16
// Writes a micro-tile's accumulators to C (both kernels end here, so they update C identically).
template <int MR, bool kMasked>
inline void store_tile(__m512 (&acc)[MR][2], float* c, int64_t ldc, Update u, __mmask16 m0, __mmask16 m1) {
  const __m512 va = _mm512_set1_ps(u.alpha);
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    float* row = c + i * ldc;
    __m512 v0 = acc[i][0], v1 = acc[i][1];
    if constexpr (kMasked) {
      if (u.load_c) {
        v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), v0);
        v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row + 16), v1);
      }
      if (u.scale) {
        v0 = _mm512_mul_ps(v0, va);
        v1 = _mm512_mul_ps(v1, va);
      }
      _mm512_mask_storeu_ps(row, m0, v0);
      _mm512_mask_storeu_ps(row + 16, m1, v1);
    } else {
      if (u.load_c) {
        v0 = _mm512_add_ps(_mm512_loadu_ps(row), v0);
        v1 = _mm512_add_ps(_mm512_loadu_ps(row + 16), v1);
      }
      if (u.scale) {
        v0 = _mm512_mul_ps(v0, va);
        v1 = _mm512_mul_ps(v1, va);
      }
      _mm512_storeu_ps(row, v0);
      _mm512_storeu_ps(row + 16, v1);
    }
  }
}

template <int MR>
inline void start_tile(__m512 (&acc)[MR][2], float* c, int64_t ldc) {
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i) {
    acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16), _MM_HINT_T0);
  }
}

template <int MR, bool kMasked>
void micro_kernel_dpbf16(const uint32_t* __restrict a, const uint32_t* __restrict b, int64_t pairs, float* c,
                         int64_t ldc, Update u, __mmask16 m0, __mmask16 m1) {
  __m512 acc[MR][2];
  start_tile(acc, c, ldc);
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b + p * kNr);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(b + p * kNr + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i * kLdaW + p]));
      acc[i][0] = _mm512_dpbf16_ps(acc[i][0], b0, ai);
      acc[i][1] = _mm512_dpbf16_ps(acc[i][1], b1, ai);
    }
  }
  store_tile<MR, kMasked>(acc, c, ldc, u, m0, m1);
}

template <int MR, bool kMasked>
void micro_kernel_fma32(const uint32_t* __restrict aw, const uint32_t* __restrict bw, int64_t steps, float* c,
                        int64_t ldc, Update u, __mmask16 m0, __mmask16 m1) {
  const float* __restrict a = reinterpret_cast<const float*>(aw);
  const float* __restrict b = reinterpret_cast<const float*>(bw);
  __m512 acc[MR][2];
  start_tile(acc, c, ldc);
  for (int64_t p = 0; p < steps; ++p) {
    const __m512 b0 = _mm512_load_ps(b + p * kNr);
    const __m512 b1 = _mm512_load_ps(b + p * kNr + 16);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * kLdaF + p]);
      acc[i][0] = _mm512_fmadd_ps(ai, b0, acc[i][0]);
      acc[i][1] = _mm512_fmadd_ps(ai, b1, acc[i][1]);
    }
  }
  store_tile<MR, kMasked>(acc, c, ldc, u, m0, m1);
}

using KernelFn = void (*)(const uint32_t*, const uint32_t*, int64_t, float*, int64_t, Update, __mmask16, __mmask16);

template <bool kFma, bool kMasked, size_t... I>
constexpr std::array<KernelFn, kMr + 1> kernel_table(std::index_sequence<I...>) {
  if constexpr (kFma)
    return {nullptr, &micro_kernel_fma32<static_cast<int>(I) + 1, kMasked>...};
  else
    return {nullptr, &micro_kernel_dpbf16<static_cast<int>(I) + 1, kMasked>...};
}
constexpr auto kDpFull = kernel_table<false, false>(std::make_index_sequence<kMr>{});
constexpr auto kDpMasked = kernel_table<false, true>(std::make_index_sequence<kMr>{});
constexpr auto kFmaFull = kernel_table<true, false>(std::make_index_sequence<kMr>{});
constexpr auto kFmaMasked = kernel_table<true, true>(std::make_index_sequence<kMr>{});

template <bool kFma>
void run_native(int mr, int nr, const uint32_t* a, const uint32_t* b, int64_t steps, float* c, int64_t ldc, Update u) {
  if (nr == kNr) {
    (kFma ? kFmaFull : kDpFull)[mr](a, b, steps, c, ldc, u, 0xFFFF, 0xFFFF);
  } else {
    const __mmask16 m0 = static_cast<__mmask16>(nr >= 16 ? 0xFFFFu : (1u << nr) - 1u);
    const __mmask16 m1 = static_cast<__mmask16>(nr <= 16 ? 0u : (1u << (nr - 16)) - 1u);
    (kFma ? kFmaMasked : kDpMasked)[mr](a, b, steps, c, ldc, u, m0, m1);
  }
}

// Transposes a 16 x 16 matrix of 32-bit words held in 16 registers (row i in r[i]) in place.
inline void transpose16x16(__m512i r[16]) {
  __m512i t[16];
#pragma GCC unroll 8
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 16; i += 4) {  // r[i + e], lane L: element 4L + e of rows i..i+3
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
#pragma GCC unroll 4
  for (int e = 0; e < 4; ++e) {
    const __m512i u0 = _mm512_shuffle_i32x4(r[e], r[4 + e], 0x88);
    const __m512i u1 = _mm512_shuffle_i32x4(r[e], r[4 + e], 0xDD);
    const __m512i u2 = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0x88);
    const __m512i u3 = _mm512_shuffle_i32x4(r[8 + e], r[12 + e], 0xDD);
    t[e] = _mm512_shuffle_i32x4(u0, u2, 0x88);
    t[8 + e] = _mm512_shuffle_i32x4(u0, u2, 0xDD);
    t[4 + e] = _mm512_shuffle_i32x4(u1, u3, 0x88);
    t[12 + e] = _mm512_shuffle_i32x4(u1, u3, 0xDD);
  }
#pragma GCC unroll 16
  for (int i = 0; i < 16; ++i) r[i] = t[i];
}

// 16 BF16 values (k..k+15 of a row, 32 bytes) as 16 FP32 bit patterns in the fma32 order: each k-pair
// swapped (odd k first, as vdpbf16ps adds them).
inline __m512i widen16_swapped(const uint16_t* in) {
  const __m256i pairs = _mm256_ror_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in)), 16);
  return _mm512_slli_epi32(_mm512_cvtepu16_epi32(pairs), 16);
}
#endif

float bf16_to_float(uint32_t bits16) {
  const uint32_t u = bits16 << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// The portable kernel, dpbf16 layout: per pair the odd product first, as vdpbf16ps adds them.
void run_scalar(int mr, int nr, const uint32_t* a, const uint32_t* b, int64_t pairs, float* c, int64_t ldc, Update u) {
  float acc[kMr * kNr] = {};
  for (int64_t p = 0; p < pairs; ++p)
    for (int i = 0; i < mr; ++i) {
      const uint32_t av = a[i * kLdaW + p];
      const float a0 = bf16_to_float(av & 0xFFFFu), a1 = bf16_to_float(av >> 16);
      for (int j = 0; j < nr; ++j) {
        const uint32_t bv = b[p * kNr + j];
        float& s = acc[i * kNr + j];
        s += a1 * bf16_to_float(bv >> 16);
        s += a0 * bf16_to_float(bv & 0xFFFFu);
      }
    }
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) {
      float v = acc[i * kNr + j];
      if (u.load_c) v = c[i * ldc + j] + v;
      if (u.scale) v *= u.alpha;
      c[i * ldc + j] = v;
    }
}

// Spins briefly, then yields the core (the thread it waits for may need it on a loaded machine).
template <class Ready>
void wait_until(Ready ready) {
  for (int spins = 0; !ready(); ++spins) {
    if (spins < 256) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
}

// ---- packing ------------------------------------------------------------------------------------------

// Decodes rows [r0, r0 + nr) x [k0, k0 + kc) into `out` (stride kLda BF16), a zero after an odd kc, and
// zero rows from nr up to `rows`.
void decode_rows(const RowSource& src, int64_t r0, int64_t nr, int64_t rows, int64_t k0, int64_t kc, uint16_t* out) {
  src(r0, nr, k0, kc, out, kLda);
  if (kc % 2)
    for (int64_t r = 0; r < nr; ++r) out[r * kLda + kc] = 0;
  for (int64_t r = nr; r < rows; ++r) std::memset(out + r * kLda, 0, static_cast<size_t>(round_up(kc, 2)) * 2);
}

// dpbf16 A: rows [r0, r0 + nr) of the block, row-major with stride kLda BF16 (kLdaW pair words).
void pack_a_pairs(const RowSource& src, int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t*, uint32_t* packed) {
  decode_rows(src, r0, nr, nr, k0, kc, reinterpret_cast<uint16_t*>(packed) + r0 * kLda);
}

// dpbf16 B: one kNr-column panel, rows [n0, n0 + nr) decoded into `scratch` (kNr rows, stride kLda), then
// transposed into packed[p * kNr + j] = (B[n0 + j, k0 + 2p], B[n0 + j, k0 + 2p + 1]). Rows past nr and the
// odd-k tail are zero.
void pack_b_pairs(const RowSource& src, int64_t n0, int64_t nr, int64_t k0, int64_t kc, uint16_t* scratch,
                  uint32_t* packed) {
  const int64_t pairs = ceil_div(kc, 2);
  decode_rows(src, n0, nr, kNr, k0, kc, scratch);
  int64_t p = 0;
#if NIBBLE_NATIVE_BF16
  for (; p + 16 <= pairs; p += 16)
    for (int h = 0; h < 2; ++h) {
      __m512i r[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) r[j] = _mm512_loadu_si512(scratch + (16 * h + j) * kLda + 2 * p);
      transpose16x16(r);
#pragma GCC unroll 16
      for (int q = 0; q < 16; ++q) _mm512_store_si512(packed + (p + q) * kNr + 16 * h, r[q]);
    }
#endif
  for (; p < pairs; ++p)
    for (int64_t j = 0; j < kNr; ++j) std::memcpy(packed + p * kNr + j, scratch + j * kLda + 2 * p, 4);
}

#if NIBBLE_NATIVE_BF16
// fma32 A: the same rows widened to FP32 with each k-pair swapped, stride kLdaF floats; an odd kc's last
// step pairs the zero pad first, as the dpbf16 layout does.
void pack_a_fma32(const RowSource& src, int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* scratch,
                  uint32_t* packed) {
  const int64_t kce = round_up(kc, 2);
  decode_rows(src, r0, nr, nr, k0, kc, scratch);
  for (int64_t r = 0; r < nr; ++r) {
    const uint16_t* in = scratch + r * kLda;
    uint32_t* out = packed + (r0 + r) * kLdaF;
    int64_t k = 0;
    for (; k + 16 <= kce; k += 16) _mm512_store_si512(out + k, widen16_swapped(in + k));
    for (; k < kce; ++k) out[k] = static_cast<uint32_t>(in[k ^ 1]) << 16;
  }
}

// fma32 B: packed[s * kNr + j] = B[n0 + j, k0 + (s ^ 1)] as FP32, s < kc rounded up to even.
void pack_b_fma32(const RowSource& src, int64_t n0, int64_t nr, int64_t k0, int64_t kc, uint16_t* scratch,
                  uint32_t* packed) {
  const int64_t kce = round_up(kc, 2);
  decode_rows(src, n0, nr, kNr, k0, kc, scratch);
  int64_t s = 0;
  for (; s + 16 <= kce; s += 16)
    for (int h = 0; h < 2; ++h) {
      __m512i r[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) r[j] = widen16_swapped(scratch + (16 * h + j) * kLda + s);
      transpose16x16(r);
#pragma GCC unroll 16
      for (int q = 0; q < 16; ++q) _mm512_store_si512(packed + (s + q) * kNr + 16 * h, r[q]);
    }
  for (; s < kce; ++s)
    for (int64_t j = 0; j < kNr; ++j) packed[s * kNr + j] = static_cast<uint32_t>(scratch[j * kLda + (s ^ 1)]) << 16;
}
#endif

#if NIBBLE_GEMM_HWY
// hwy A: pack_a_fma32's layout, widened by the Highway kernel of the CPU's best target.
void pack_a_hwy(const RowSource& src, int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* scratch,
                uint32_t* packed) {
  decode_rows(src, r0, nr, nr, k0, kc, scratch);
  for (int64_t r = 0; r < nr; ++r) widen_pairs_swapped_lanes(scratch + r * kLda, ceil_div(kc, 2), packed + (r0 + r) * kLdaF);
}

// hwy B: pack_b_fma32's layout; kChunk k at a time, the panel's rows are widened into a buffer and
// transposed into place by precision's float transpose (also Highway, also dispatched).
void pack_b_hwy(const RowSource& src, int64_t n0, int64_t nr, int64_t k0, int64_t kc, uint16_t* scratch,
                uint32_t* packed) {
  constexpr int64_t kChunk = 64;
  alignas(64) uint32_t rows[kNr * kChunk];
  const int64_t kce = round_up(kc, 2);
  decode_rows(src, n0, nr, kNr, k0, kc, scratch);
  for (int64_t s = 0; s < kce; s += kChunk) {
    const int64_t w = std::min(kChunk, kce - s);
    for (int64_t j = 0; j < kNr; ++j) widen_pairs_swapped_lanes(scratch + j * kLda + s, w / 2, rows + j * kChunk);
    precision::transpose_floats_lanes(reinterpret_cast<const float*>(rows), kChunk, kNr, w,
                                      reinterpret_cast<float*>(packed + s * kNr), kNr);
  }
}

void run_hwy(int rows, int nr, const uint32_t* a, const uint32_t* b, int64_t steps, float* c, int64_t ldc, Update u) {
  fma32_panel_lanes(rows, nr, reinterpret_cast<const float*>(a), reinterpret_cast<const float*>(b), steps, c, ldc,
                    u.load_c, u.scale, u.alpha);
}
#endif

// One kernel's packed layout and entry points.
struct KernelPlan {
  int64_t a_ld_words;     // packed A row stride, 32-bit words
  int64_t panel_words;    // one packed B panel at the largest K block
  int64_t step_k;         // k per micro-kernel step (2 for pairs, 1 for fma32)
  int64_t run_rows;       // rows of C per `run` call: kMr, or a whole tile for hwy (its own row blocks)
  void (*pack_a)(const RowSource&, int64_t, int64_t, int64_t, int64_t, uint16_t*, uint32_t*);
  void (*pack_b)(const RowSource&, int64_t, int64_t, int64_t, int64_t, uint16_t*, uint32_t*);
  void (*run)(int, int, const uint32_t*, const uint32_t*, int64_t, float*, int64_t, Update);
};

constexpr GemmKernel kKernels[] = {GemmKernel::kFma32, GemmKernel::kDpbf16, GemmKernel::kHwy, GemmKernel::kScalar};

// What a kernel missing from this build needs.
std::string missing_reason(GemmKernel kernel) {
  return kernel == GemmKernel::kHwy ? "it needs Highway, libhwy-dev"
                                    : "it needs AVX512_BF16: -DNIBBLE_NATIVE=ON on such a CPU";
}

// The kernels this build has, "hwy or scalar".
std::string available_names() {
  std::string out;
  for (GemmKernel k : kKernels)
    if (gemm_kernel_available(k)) out += (out.empty() ? "" : ", ") + std::string(gemm_kernel_name(k));
  const size_t last = out.rfind(", ");
  return last == std::string::npos ? out : out.replace(last, 2, " or ");
}

KernelPlan plan_for(GemmKernel kernel) {
  switch (kernel) {
#if NIBBLE_NATIVE_BF16
    case GemmKernel::kFma32:
      return {kLdaF, kNr * kKcMax, 1, kMr, &pack_a_fma32, &pack_b_fma32, &run_native<true>};
    case GemmKernel::kDpbf16:
      return {kLdaW, kNr * kKcMax / 2, 2, kMr, &pack_a_pairs, &pack_b_pairs, &run_native<false>};
#endif
#if NIBBLE_GEMM_HWY
    case GemmKernel::kHwy:
      return {kLdaF, kNr * kKcMax, 1, kMc, &pack_a_hwy, &pack_b_hwy, &run_hwy};
#endif
    case GemmKernel::kScalar:
      return {kLdaW, kNr * kKcMax / 2, 2, kMr, &pack_a_pairs, &pack_b_pairs, &run_scalar};
    default:
      throw std::invalid_argument("GEMM kernel " + std::string(gemm_kernel_name(kernel)) +
                                  " is not compiled into this build (" + missing_reason(kernel) + "); use " +
                                  available_names());
  }
}

GemmKernel resolve_default_kernel() {
  if (const char* env = std::getenv("NIBBLE_CPU_GEMM_KERNEL"); env && *env) {
    const std::string v = env;
    for (GemmKernel k : kKernels)
      if (v == gemm_kernel_name(k)) {
        if (!gemm_kernel_available(k))
          throw std::invalid_argument("NIBBLE_CPU_GEMM_KERNEL=" + v + ": that kernel is not compiled into this build (" +
                                      missing_reason(k) + "); use " + available_names());
        return k;
      }
    throw std::invalid_argument("NIBBLE_CPU_GEMM_KERNEL=" + v +
                                " is not a CPU GEMM kernel; use fma32, dpbf16, hwy or scalar");
  }
#if NIBBLE_NATIVE_BF16
  // vdpbf16ps issues at the FMA rate on AMD (twice the FLOPs), at a quarter of it on Intel (half the FLOPs).
  return __builtin_cpu_is("amd") ? GemmKernel::kDpbf16 : GemmKernel::kFma32;
#elif NIBBLE_GEMM_HWY
  return GemmKernel::kHwy;
#else
  return GemmKernel::kScalar;
#endif
}

}  // namespace

const char* gemm_kernel_name(GemmKernel kernel) {
  switch (kernel) {
    case GemmKernel::kAuto: return "auto";
    case GemmKernel::kFma32: return "fma32";
    case GemmKernel::kDpbf16: return "dpbf16";
    case GemmKernel::kHwy: return "hwy";
    case GemmKernel::kScalar: return "scalar";
  }
  return "?";
}

bool gemm_kernel_available(GemmKernel kernel) {
  switch (kernel) {
    case GemmKernel::kFma32:
    case GemmKernel::kDpbf16: return kHaveNative;
    case GemmKernel::kHwy: return kHaveHwy;
    case GemmKernel::kScalar: return true;
    case GemmKernel::kAuto: return false;
  }
  return false;
}

GemmKernel gemm_default_kernel() {
  static const GemmKernel kernel = resolve_default_kernel();
  return kernel;
}

int64_t gemm_bf16_k_block() { return kKcMax; }

void gemm_bf16_tn(int64_t M, int64_t N, int64_t K, const RowSource& a, const RowSource& b, float* c, int64_t ldc,
                  float alpha, GemmKernel kernel) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = 0; m < M; ++m) std::fill(c + m * ldc, c + m * ldc + N, 0.0f);
    return;
  }
  const KernelPlan kp = plan_for(kernel == GemmKernel::kAuto ? gemm_default_kernel() : kernel);
  // Balanced K blocks: as few as kKcMax allows, each a multiple of 32 (whole 16-step transposes).
  const int64_t kc = std::min(kKcMax, round_up(ceil_div(K, ceil_div(K, kKcMax)), 32));
  const int64_t nkb = ceil_div(K, kc);
  const int64_t n_panels = ceil_div(N, kNr), a_chunks = ceil_div(M, kAChunk);
  const int64_t n_tiles = ceil_div(N, kNc), tiles = ceil_div(M, kMc) * n_tiles;
  const int64_t packs = n_panels + a_chunks, per_block = packs + tiles, tasks = per_block * nkb;
  const int slots = nkb > 1 ? 2 : 1;

  // Small problems are not worth waking the other threads for.
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * static_cast<double>(K);
  const int threads = flops < 4e6 ? 1 : std::max(1, omp_get_max_threads());

  // Workspace: per slot, packed A (M rows) and B (n_panels panels); per thread, a decode scratch.
  const int64_t a_words = round_up(M * kp.a_ld_words, 16), b_words = n_panels * kp.panel_words;
  const int64_t slot_words = a_words + b_words;
  const int64_t scratch_words = kScratchRows * kLda / 2;
  thread_local Workspace workspace;
  uint32_t* const buffers =
      static_cast<uint32_t*>(workspace.get(static_cast<size_t>(slot_words * slots + scratch_words * threads) * 4));
  uint32_t* const scratch_base = buffers + slot_words * slots;

  // Completion stamps: pack_stamp[slot][task] = K block + 1 last packed there; tile_stamp[tile] = K blocks
  // accumulated into that tile of C; block_tiles[kb] = tiles of block kb done.
  std::unique_ptr<std::atomic<int64_t>[]> stamps(new std::atomic<int64_t>[static_cast<size_t>(2 * packs + tiles + nkb)]);
  for (int64_t i = 0; i < 2 * packs + tiles + nkb; ++i) stamps[i].store(0, std::memory_order_relaxed);
  std::atomic<int64_t>* const tile_stamp = stamps.get() + 2 * packs;
  std::atomic<int64_t>* const block_tiles = tile_stamp + tiles;
  std::atomic<int64_t> next{0};

  // Tasks are claimed in one global order (K block by K block: its packing tasks, then its C tiles) and
  // each waits only for what it reads or overwrites, all of it earlier in that order (so no deadlock):
  //   packing block kb into slot kb % 2: every tile of block kb - 2 (the slot's previous user) is done;
  //   a tile of block kb: the A chunks and B panels it reads are packed, and its block kb - 1 is in C.
  // A thread held up elsewhere on the machine stalls only the tasks that need its own.
#pragma omp parallel num_threads(threads)
  {
    uint16_t* const scratch =
        reinterpret_cast<uint16_t*>(scratch_base + static_cast<int64_t>(omp_get_thread_num()) * scratch_words);
    for (int64_t t; (t = next.fetch_add(1, std::memory_order_relaxed)) < tasks;) {
      const int64_t kb = t / per_block, task = t % per_block;
      const int64_t k0 = kb * kc, kcb = std::min(kc, K - k0);
      const int64_t slot = kb % slots;
      uint32_t* const pa = buffers + slot * slot_words;
      uint32_t* const pb = pa + a_words;
      std::atomic<int64_t>* const packed = stamps.get() + slot * packs;
      if (task < packs) {
        if (kb >= 2) wait_until([&] { return block_tiles[kb - 2].load(std::memory_order_acquire) == tiles; });
        if (task < n_panels) {
          const int64_t n0 = task * kNr;
          kp.pack_b(b, n0, std::min<int64_t>(kNr, N - n0), k0, kcb, scratch, pb + task * kp.panel_words);
        } else {
          const int64_t r0 = (task - n_panels) * kAChunk;
          kp.pack_a(a, r0, std::min(kAChunk, M - r0), k0, kcb, scratch, pa);
        }
        packed[task].store(kb + 1, std::memory_order_release);
        continue;
      }
      const int64_t tile = task - packs;
      const int64_t m0 = (tile / n_tiles) * kMc, n0 = (tile % n_tiles) * kNc;
      const int64_t m1 = std::min(M, m0 + kMc), n1 = std::min(N, n0 + kNc);
      for (int64_t p = n0 / kNr; p <= (n1 - 1) / kNr; ++p)
        wait_until([&] { return packed[p].load(std::memory_order_acquire) == kb + 1; });
      for (int64_t q = m0 / kAChunk; q <= (m1 - 1) / kAChunk; ++q)
        wait_until([&] { return packed[n_panels + q].load(std::memory_order_acquire) == kb + 1; });
      wait_until([&] { return tile_stamp[tile].load(std::memory_order_acquire) == kb; });
      const Update u{kb > 0, kb == nkb - 1 && alpha != 1.0f, alpha};
      const int64_t steps = ceil_div(kcb, 2) * (2 / kp.step_k);
      for (int64_t jr = n0; jr < n1; jr += kNr) {
        const uint32_t* bp = pb + (jr / kNr) * kp.panel_words;
        const int nr = static_cast<int>(std::min<int64_t>(kNr, n1 - jr));
        for (int64_t ir = m0; ir < m1; ir += kp.run_rows) {
          const int mr = static_cast<int>(std::min(kp.run_rows, m1 - ir));
          kp.run(mr, nr, pa + ir * kp.a_ld_words, bp, steps, c + ir * ldc + jr, ldc, u);
        }
      }
      tile_stamp[tile].store(kb + 1, std::memory_order_release);
      block_tiles[kb].fetch_add(1, std::memory_order_release);
    }
  }
}

}  // namespace nibble::core::cpu
