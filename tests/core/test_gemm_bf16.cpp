// The CPU GEMM: the BF16 kernel (cpu::gemm_bf16_tn), each of its micro-kernels, on odd shapes against a
// double-precision reference and against each other bit for bit (the Highway one on every Highway target
// this CPU runs),
// and core::gemm on quantized operands (every block-scaled scheme, mixed formats) against an FP64 matmul of
// the dequantized operands; the decode itself is checked value by value through an identity B.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "core/cpu/gemm_bf16.h"
#include "core/gemm.h"
#include "precision/format.h"
#include "precision/quantize.h"

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
#include "precision/cpu/simd_targets.h"
#endif

namespace nibble::core {
namespace {

uint16_t to_bf16(float f) {  // RNE (finite inputs)
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

double from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Bf16Matrix {
  int64_t rows, cols;
  std::vector<uint16_t> v;
  Bf16Matrix(int64_t r, int64_t c, std::mt19937& rng) : rows(r), cols(c), v(static_cast<size_t>(r * c)) {
    std::normal_distribution<float> n;
    for (auto& x : v) x = to_bf16(n(rng));
  }
  cpu::RowSource source() const {
    return [this](int64_t r0, int64_t nr, int64_t k0, int64_t kc, uint16_t* out, int64_t ld) {
      EXPECT_GE(r0, 0);
      EXPECT_LE(r0 + nr, rows);
      EXPECT_GE(k0, 0);
      EXPECT_LE(k0 + kc, cols);
      for (int64_t r = 0; r < nr; ++r) std::memcpy(out + r * ld, v.data() + (r0 + r) * cols + k0, kc * 2);
    };
  }
};

// Runs gemm_bf16_tn (C with a padded leading dimension) and checks every element against double
// precision: |c - ref| <= (K + 2) * 2^-23 * sum_k |a b| * |alpha| (FP32 accumulation of exact products).
void check_kernel(int64_t M, int64_t N, int64_t K, float alpha = 1.0f,
                  cpu::GemmKernel kernel = cpu::GemmKernel::kAuto) {
  SCOPED_TRACE("M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) + " kernel " +
               cpu::gemm_kernel_name(kernel));
  std::mt19937 rng(static_cast<uint32_t>(M * 7919 + N * 31 + K));
  const Bf16Matrix a(M, K, rng), b(N, K, rng);
  const int64_t ldc = N + 3;
  std::vector<float> c(static_cast<size_t>(M * ldc), std::numeric_limits<float>::quiet_NaN());
  cpu::gemm_bf16_tn(M, N, K, a.source(), b.source(), c.data(), ldc, alpha, kernel);
  double err2 = 0, ref2 = 0;
  for (int64_t m = 0; m < M; ++m)
    for (int64_t n = 0; n < N; ++n) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = from_bf16(a.v[m * K + k]) * from_bf16(b.v[n * K + k]);
        ref += p;
        mag += std::fabs(p);
      }
      ref *= alpha;
      mag *= std::fabs(alpha);
      const double got = c[m * ldc + n];
      ASSERT_LE(std::fabs(got - ref), (K + 2) * 0x1p-23 * mag + 1e-30) << "at (" << m << ", " << n << ")";
      err2 += (got - ref) * (got - ref);
      ref2 += ref * ref;
    }
  if (ref2 > 0) {
    EXPECT_LT(std::sqrt(err2 / ref2), 1e-5);
  }
  for (int64_t m = 0; m < M; ++m)  // the padding past N is untouched
    for (int64_t n = N; n < ldc; ++n) ASSERT_TRUE(std::isnan(c[m * ldc + n]));
}

const int64_t kOddShapes[][3] = {
    {1, 1, 1},     {1, 1, 2},     {3, 5, 1},      {13, 17, 3},    {14, 32, 32},   {15, 33, 31},
    {29, 31, 47},  {2, 100, 65},  {100, 2, 65},   {57, 70, 512},  {57, 70, 513},  {229, 263, 1025},
    {31, 45, 1537}, {225, 257, 96}, {448, 64, 40}, {7, 1000, 33}, {600, 9, 1100},
};

// C = alpha · A · Bᵀ with a dense C (ldc = N).
std::vector<float> product(const Bf16Matrix& a, const Bf16Matrix& b, float alpha, cpu::GemmKernel kernel) {
  std::vector<float> c(static_cast<size_t>(a.rows * b.rows));
  cpu::gemm_bf16_tn(a.rows, b.rows, a.cols, a.source(), b.source(), c.data(), b.rows, alpha, kernel);
  return c;
}

std::vector<cpu::GemmKernel> available_kernels() {
  std::vector<cpu::GemmKernel> out;
  for (auto k : {cpu::GemmKernel::kFma32, cpu::GemmKernel::kDpbf16, cpu::GemmKernel::kHwy, cpu::GemmKernel::kScalar})
    if (cpu::gemm_kernel_available(k)) out.push_back(k);
  return out;
}

TEST(GemmBf16Kernel, OddShapes) {
  for (cpu::GemmKernel kernel : available_kernels())
    for (const auto& s : kOddShapes) check_kernel(s[0], s[1], s[2], 1.0f, kernel);
}

// body(a, b, alpha) on random BF16 operands of every odd shape and of one K over four K blocks, with alpha 1
// and -0.3; stops at the first fatal failure.
template <class Body>
void on_odd_products(const Body& body) {
  std::vector<std::vector<int64_t>> shapes;
  for (const auto& s : kOddShapes) shapes.push_back({s[0], s[1], s[2]});
  shapes.push_back({23, 77, 4 * cpu::gemm_bf16_k_block() - 5});
  for (const auto& s : shapes)
    for (float alpha : {1.0f, -0.3f}) {
      const int64_t M = s[0], N = s[1], K = s[2];
      SCOPED_TRACE("M=" + std::to_string(M) + " N=" + std::to_string(N) + " K=" + std::to_string(K) +
                   " alpha=" + std::to_string(alpha));
      std::mt19937 rng(static_cast<uint32_t>(M * 31 + N * 7 + K));
      const Bf16Matrix a(M, K, rng), b(N, K, rng);
      body(a, b, alpha);
      if (::testing::Test::HasFatalFailure()) return;
    }
}

// The kernels round the same sums in the same order (each k-pair odd product first), so without subnormals
// they agree to the bit, on every shape and K-block split, with and without alpha.
TEST(GemmBf16Kernel, KernelsAgreeBitForBit) {
  const std::vector<cpu::GemmKernel> kernels = available_kernels();
  ASSERT_FALSE(kernels.empty());
  on_odd_products([&](const Bf16Matrix& a, const Bf16Matrix& b, float alpha) {
    std::vector<std::vector<float>> results;
    for (cpu::GemmKernel kernel : kernels) results.push_back(product(a, b, alpha, kernel));
    for (size_t i = 1; i < results.size(); ++i)
      ASSERT_EQ(0, std::memcmp(results[0].data(), results[i].data(), results[0].size() * 4))
          << cpu::gemm_kernel_name(kernels[0]) << " vs " << cpu::gemm_kernel_name(kernels[i]);
  });
}

#if defined(NIBBLE_HAVE_HWY) && NIBBLE_HAVE_HWY
// The Highway kernel blocks registers per target (rows per micro-tile, vectors per panel) and widens with
// that target's instructions: on every target this CPU runs, forced one at a time, it must still give the
// scalar kernel's bits (and so the others').
TEST(GemmBf16Kernel, HwyAgreesBitForBitOnEveryTarget) {
  ASSERT_TRUE(cpu::gemm_kernel_available(cpu::GemmKernel::kHwy));
  const std::vector<int64_t> targets = precision::simd::runnable_targets();
  on_odd_products([&](const Bf16Matrix& a, const Bf16Matrix& b, float alpha) {
    const std::vector<float> want = product(a, b, alpha, cpu::GemmKernel::kScalar);
    for (const int64_t target : targets) {
      precision::simd::force_target(target);
      ASSERT_EQ(precision::simd::current_target(), target);
      const std::vector<float> got = product(a, b, alpha, cpu::GemmKernel::kHwy);
      precision::simd::force_target(0);
      ASSERT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4))
          << "hwy on " << precision::simd::target_name(target) << " vs scalar";
    }
  });
  EXPECT_GE(targets.size(), 2u);
}
#endif

TEST(GemmBf16Kernel, DefaultKernelIsAvailable) {
  EXPECT_TRUE(cpu::gemm_kernel_available(cpu::gemm_default_kernel()));
  EXPECT_NE(cpu::gemm_default_kernel(), cpu::GemmKernel::kAuto);
}

TEST(GemmBf16Kernel, LargeK) {
  for (cpu::GemmKernel kernel : available_kernels()) check_kernel(40, 50, 5003, 1.0f, kernel);
}

TEST(GemmBf16Kernel, Alpha) {
  check_kernel(37, 41, 77, 0.375f);
  check_kernel(37, 41, 1300, -3.0f);
}

TEST(GemmBf16Kernel, ThreadCounts) {
  const int saved = omp_get_max_threads();
  for (int t : {1, 2, 3, 5}) {
    omp_set_num_threads(t);
    for (cpu::GemmKernel kernel : available_kernels()) check_kernel(129, 97, 700, 1.0f, kernel);
  }
  omp_set_num_threads(saved);
}

TEST(GemmBf16Kernel, EmptyAndZeroK) {
  std::mt19937 rng(1);
  const Bf16Matrix a(3, 4, rng), b(5, 4, rng);
  std::vector<float> c(15, 7.0f);
  cpu::gemm_bf16_tn(3, 5, 0, a.source(), b.source(), c.data(), 5);
  for (float x : c) EXPECT_EQ(x, 0.0f);
  cpu::gemm_bf16_tn(0, 5, 4, a.source(), b.source(), c.data(), 5);
  cpu::gemm_bf16_tn(3, 0, 4, a.source(), b.source(), c.data(), 5);
}

// ---- core::gemm ---------------------------------------------------------------------------------------

torch::Tensor reference(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::mm(a.to(torch::kFloat64), b.to(torch::kFloat64).t());
}

double rel_frobenius(const torch::Tensor& got, const torch::Tensor& ref) {
  const double den = ref.norm().item<double>();
  const double num = (got.to(torch::kFloat64) - ref).norm().item<double>();
  return den > 0 ? num / den : num;
}

// Gaussian rows, each times its own power of two in [2^-lo, 2^hi], so the block scales vary.
torch::Tensor test_matrix(int64_t rows, int64_t cols, uint64_t seed, int lo = 12, int hi = 12) {
  torch::manual_seed(seed);
  torch::Tensor x = torch::randn({rows, cols});
  torch::Tensor e = torch::randint(-lo, hi + 1, {rows, 1}).to(torch::kFloat32);
  return x * torch::pow(2.0, e);
}

precision::QuantizeOptions options_for(const std::string& scheme) {
  precision::Format f;
  precision::QuantizeOptions o = precision::default_options(precision::parse_scheme(scheme, &f));
  o.element = f;
  return o;
}

struct Quantized {
  QuantizedTensor q;
  precision::QuantizeOptions o;
  Quantized(const torch::Tensor& x, const precision::QuantizeOptions& opt) : q(quantize(x, opt)), o(opt) {}
  GemmOperand op() const { return GemmOperand::quantized(*q.rowwise, o); }
  torch::Tensor dequantized() const { return dequantize(*q.rowwise, o); }
};

const char* kSchemes[] = {"fp8_tensor", "fp8_tensor_e5m2", "fp8_block128", "fp8_block128x128", "fp8_block16",
                          "mxfp8", "nvfp4", "nvfp4_2d", "mxfp4"};

TEST(Gemm, QuantizedSchemesAgainstFp64) {
  const int64_t shapes[][3] = {{1, 1, 1}, {5, 3, 7}, {37, 45, 77}, {130, 33, 1}, {70, 150, 1025}, {260, 20, 300}};
  for (const char* scheme : kSchemes)
    for (const auto& s : shapes) {
      SCOPED_TRACE(std::string(scheme) + " M=" + std::to_string(s[0]) + " N=" + std::to_string(s[1]) +
                   " K=" + std::to_string(s[2]));
      const precision::QuantizeOptions o = options_for(scheme);
      const Quantized a(test_matrix(s[0], s[2], 1), o), b(test_matrix(s[1], s[2], 2), o);
      const torch::Tensor c = gemm(a.op(), b.op());
      ASSERT_EQ(c.sizes(), (std::vector<int64_t>{s[0], s[1]}));
      EXPECT_LT(rel_frobenius(c, reference(a.dequantized(), b.dequantized())), 1e-5);
    }
}

TEST(Gemm, MixedFormatsAndDense) {
  const torch::Tensor x = test_matrix(45, 200, 3), w = test_matrix(66, 200, 4);
  const Quantized a8(x, options_for("fp8_tensor")), b4(w, options_for("nvfp4")), bmx(w, options_for("mxfp8"));
  const Quantized b5(w, options_for("fp8_tensor_e5m2"));
  EXPECT_LT(rel_frobenius(gemm(a8.op(), b4.op()), reference(a8.dequantized(), b4.dequantized())), 1e-5);
  EXPECT_LT(rel_frobenius(gemm(a8.op(), bmx.op()), reference(a8.dequantized(), bmx.dequantized())), 1e-5);
  EXPECT_LT(rel_frobenius(gemm(a8.op(), b5.op()), reference(a8.dequantized(), b5.dequantized())), 1e-5);
  // Dense operands are rounded to BF16 (RNE) first.
  const torch::Tensor xb = x.to(torch::kBFloat16), wb = w.to(torch::kBFloat16);
  const torch::Tensor ref = reference(xb, wb);
  EXPECT_LT(rel_frobenius(gemm(GemmOperand::high_precision(x), GemmOperand::high_precision(w)), ref), 1e-5);
  EXPECT_LT(rel_frobenius(gemm(GemmOperand::high_precision(xb), GemmOperand::high_precision(wb)), ref), 1e-5);
  EXPECT_LT(rel_frobenius(gemm(GemmOperand::high_precision(xb), GemmOperand::high_precision(w)), ref), 1e-5);
  EXPECT_LT(rel_frobenius(gemm(a8.op(), GemmOperand::high_precision(wb)), reference(a8.dequantized(), wb)), 1e-5);
}

// A · Iᵀ = A: every decoded element (times alpha) against the dequantized copy, on a K that exercises the
// vector decode, its scalar head and tail, and several K blocks.
TEST(Gemm, DecodeIsExactThroughIdentity) {
  for (const char* scheme : kSchemes)
    for (int64_t K : {1, 31, 64, 77, 200, 1100}) {
      SCOPED_TRACE(std::string(scheme) + " K=" + std::to_string(K));
      const Quantized a(test_matrix(19, K, 5), options_for(scheme));
      const torch::Tensor eye = torch::eye(K).to(torch::kBFloat16);
      const torch::Tensor c = gemm(a.op(), GemmOperand::high_precision(eye));
      const torch::Tensor d = a.dequantized();
      const double err = (c - d).abs().max().item<double>() / std::max(1e-30, d.abs().max().item<double>());
      // Exact up to how alpha was applied (NVFP4's global decode scale rounds differently): ~1 ulp.
      EXPECT_LT(err, 2e-7);
      EXPECT_TRUE(torch::equal(c.eq(0), d.eq(0)));
    }
}

// Non-power-of-two FP32 block scales cannot be folded exactly: the FP32 path, same answer.
TEST(Gemm, NonPow2BlockScalesTakeTheFp32Path) {
  precision::QuantizeOptions o = options_for("fp8_block128");
  o.pow2_scale = false;
  const Quantized a(test_matrix(33, 300, 6), o), b(test_matrix(21, 300, 7), o);
  EXPECT_LT(rel_frobenius(gemm(a.op(), b.op()), reference(a.dequantized(), b.dequantized())), 1e-5);
}

// FP32 -> BF16 of dense operands: RNE with satfinite, as precision::encode_scalar (K = 1 and B = 1 make
// C the converted values; the vector path runs through an identity B).
TEST(Gemm, DenseFp32RoundsLikeEncodeScalar) {
  std::mt19937 rng(11);
  std::vector<float> vals;
  std::uniform_int_distribution<uint32_t> bits(0, 0xFFFFFFFFu);
  while (vals.size() < 4000) {
    const uint32_t u = bits(rng);
    const uint32_t e = (u >> 23) & 0xFF;
    if (e < 2 || e == 0xFF) continue;  // BF16 subnormals are flushed by the hardware; specials below
    float f;
    std::memcpy(&f, &u, 4);
    vals.push_back(f);
  }
  for (float f : {1.0f, -1.0f, 3.3895314e38f, -3.3895314e38f, 3.39e38f, 3.4028235e38f, -3.4028235e38f,
                  1.00390625f, 1.01171875f, 1.0039063f, 0.0f, -0.0f})
    vals.push_back(f);
  const int64_t n = static_cast<int64_t>(vals.size());
  auto expect_bf16 = [](float in, float got) {
    const uint32_t code = precision::encode_scalar(in, precision::formats::kBF16, precision::Rounding::kNearestEven);
    const float want = precision::decode_scalar(code, precision::formats::kBF16);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << in;
    } else {
      EXPECT_EQ(got, want) << in;
    }
  };
  {  // vector path: rows of 64 values times I(64)
    const int64_t K = 64, M = n / K;
    torch::Tensor a = torch::from_blob(vals.data(), {M, K}, torch::kFloat32).clone();
    const torch::Tensor c = gemm(GemmOperand::high_precision(a), GemmOperand::high_precision(torch::eye(K)));
    for (int64_t i = 0; i < M * K; ++i) expect_bf16(vals[i], c.data_ptr<float>()[i]);
  }
  for (float f : {std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::quiet_NaN()})
    vals.push_back(f);
  {  // scalar path, specials included: K = 1
    torch::Tensor a = torch::from_blob(vals.data(), {static_cast<int64_t>(vals.size()), 1}, torch::kFloat32).clone();
    const torch::Tensor c = gemm(GemmOperand::high_precision(a), GemmOperand::high_precision(torch::ones({1, 1})));
    for (size_t i = 0; i < vals.size(); ++i) expect_bf16(vals[i], c.data_ptr<float>()[i]);
  }
}

TEST(Gemm, BiasAccumulateAndBf16Output) {
  const Quantized a(test_matrix(20, 96, 8), options_for("mxfp8")), b(test_matrix(24, 96, 9), options_for("mxfp8"));
  const torch::Tensor ref = reference(a.dequantized(), b.dequantized());
  GemmOptions o;
  o.bias = torch::randn({24});
  EXPECT_LT(rel_frobenius(gemm(a.op(), b.op(), o), ref + o.bias->to(torch::kFloat64)), 1e-5);
  GemmOptions acc;
  acc.accumulate = torch::ones({20, 24});
  const torch::Tensor out = gemm(a.op(), b.op(), acc);
  EXPECT_LT(rel_frobenius(out, ref + 1.0), 1e-5);
  GemmOptions bf;
  bf.out_dtype = torch::kBFloat16;
  EXPECT_EQ(gemm(a.op(), b.op(), bf).scalar_type(), torch::kBFloat16);
}

}  // namespace
}  // namespace nibble::core
