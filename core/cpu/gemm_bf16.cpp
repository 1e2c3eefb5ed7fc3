// BF16 GEMM in the GotoBLAS shape: K is cut into blocks of kKc; per block, B is packed into 32-column
// panels of (k-pair, column) 32-bit words and A into 8-row micro-panels of k-pairs; an 8x32 micro-kernel
// keeps 16 zmm accumulators and issues one vdpbf16ps per (row, 16 columns, k-pair): each instruction
// multiplies two BF16 pairs exactly and adds them into FP32.
#include "core/cpu/gemm_bf16.h"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#if defined(__AVX512BF16__) && defined(__AVX512F__)
#include <immintrin.h>
#define NIBBLE_NATIVE_BF16 1
#endif

namespace nibble::nn::cpu {
namespace {

constexpr int64_t kMr = 8;    // rows of A per micro-kernel
constexpr int64_t kNr = 32;   // columns of B per micro-kernel (two zmm of 16 floats)
constexpr int64_t kKc = 384;  // K per block (even): a B micro-panel (32 x 384 BF16 = 24 KiB) stays in L1
constexpr int64_t kMc = 192;  // rows of A per packed block (192 x 384 BF16 = 144 KiB, in L2)

int64_t round_up(int64_t a, int64_t b) { return (a + b - 1) / b * b; }

// Packs rows [r0, r0 + nr) x k-block of an operand into panels of `width` rows: for each panel, for each
// k-pair p, `width` 32-bit words (row i's elements 2p and 2p+1). Rows past nr and the odd k tail are zero.
void pack_panels(const RowSource& src, int64_t r0, int64_t nr, int64_t k0, int64_t kc, int64_t width,
                 uint32_t* packed, std::vector<uint16_t>& scratch) {
  const int64_t kc_even = round_up(kc, 2);
  scratch.assign(static_cast<size_t>(width * kc_even), 0);
  for (int64_t p0 = 0; p0 < nr; p0 += width) {
    const int64_t rows = std::min(width, nr - p0);
    std::fill(scratch.begin(), scratch.end(), uint16_t{0});
    src(r0 + p0, rows, k0, kc, scratch.data(), kc_even);
    uint32_t* panel = packed + (p0 / width) * width * (kc_even / 2);
    for (int64_t p = 0; p < kc_even / 2; ++p)
      for (int64_t i = 0; i < width; ++i) {
        const uint16_t lo = scratch[i * kc_even + 2 * p], hi = scratch[i * kc_even + 2 * p + 1];
        panel[p * width + i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
      }
  }
}

[[maybe_unused]] float bf16_to_float(uint32_t bits16) {
  const uint32_t u = bits16 << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// acc (kMr x kNr, row-major) = A micro-panel · B micro-panel over `pairs` k-pairs.
void micro_kernel(const uint32_t* a, const uint32_t* b, int64_t pairs, float* acc) {
#if NIBBLE_NATIVE_BF16
  __m512 c[kMr][2];
  for (int i = 0; i < kMr; ++i) c[i][0] = c[i][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < pairs; ++p) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * kNr);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + p * kNr + 16);
    for (int i = 0; i < kMr; ++i) {
      const __m512bh ai = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[p * kMr + i]));
      c[i][0] = _mm512_dpbf16_ps(c[i][0], ai, b0);
      c[i][1] = _mm512_dpbf16_ps(c[i][1], ai, b1);
    }
  }
  for (int i = 0; i < kMr; ++i) {
    _mm512_storeu_ps(acc + i * kNr, c[i][0]);
    _mm512_storeu_ps(acc + i * kNr + 16, c[i][1]);
  }
#else
  for (int64_t i = 0; i < kMr * kNr; ++i) acc[i] = 0.0f;
  for (int64_t p = 0; p < pairs; ++p)
    for (int64_t i = 0; i < kMr; ++i) {
      const uint32_t av = a[p * kMr + i];
      const float a0 = bf16_to_float(av & 0xFFFFu), a1 = bf16_to_float(av >> 16);
      for (int64_t j = 0; j < kNr; ++j) {
        const uint32_t bv = b[p * kNr + j];
        acc[i * kNr + j] += a0 * bf16_to_float(bv & 0xFFFFu) + a1 * bf16_to_float(bv >> 16);
      }
    }
#endif
}

}  // namespace

bool gemm_bf16_has_native_kernel() {
#if NIBBLE_NATIVE_BF16
  return true;
#else
  return false;
#endif
}

void gemm_bf16_tn(int64_t M, int64_t N, int64_t K, const RowSource& a, const RowSource& b, float* c, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    for (int64_t m = 0; m < M; ++m) std::fill(c + m * ldc, c + m * ldc + N, 0.0f);
    return;
  }
  const int64_t n_panels = round_up(N, kNr) / kNr;
  std::vector<uint32_t> packed_b(static_cast<size_t>(n_panels * kNr * (kKc / 2)));
  const int64_t m_blocks = round_up(M, kMc) / kMc;
  for (int64_t k0 = 0; k0 < K; k0 += kKc) {
    const int64_t kc = std::min(kKc, K - k0);
    const int64_t pairs = round_up(kc, 2) / 2;
    const bool first = k0 == 0;
#pragma omp parallel
    {
      std::vector<uint16_t> scratch;
      // B: every thread packs a share of the 32-column panels.
#pragma omp for schedule(static)
      for (int64_t p = 0; p < n_panels; ++p) {
        const int64_t n0 = p * kNr;
        pack_panels(b, n0, std::min(kNr, N - n0), k0, kc, kNr, packed_b.data() + p * kNr * pairs, scratch);
      }
      std::vector<uint32_t> packed_a(static_cast<size_t>(kMc * (kKc / 2)));
      alignas(64) float acc[kMr * kNr];
#pragma omp for schedule(dynamic, 1)
      for (int64_t mb = 0; mb < m_blocks; ++mb) {
        const int64_t m0 = mb * kMc, mc = std::min(kMc, M - m0);
        pack_panels(a, m0, mc, k0, kc, kMr, packed_a.data(), scratch);
        for (int64_t p = 0; p < n_panels; ++p) {
          const int64_t n0 = p * kNr, nr = std::min(kNr, N - n0);
          for (int64_t mi = 0; mi < mc; mi += kMr) {
            micro_kernel(packed_a.data() + (mi / kMr) * kMr * pairs, packed_b.data() + p * kNr * pairs, pairs, acc);
            const int64_t mr = std::min(kMr, mc - mi);
            for (int64_t i = 0; i < mr; ++i) {
              float* row = c + (m0 + mi + i) * ldc + n0;
              const float* src = acc + i * kNr;
              if (first) {
                std::memcpy(row, src, static_cast<size_t>(nr) * sizeof(float));
              } else {
                for (int64_t j = 0; j < nr; ++j) row[j] += src[j];
              }
            }
          }
        }
      }
    }
  }
}

}  // namespace nibble::nn::cpu
