// The CUDA GEMM path (core/cuda/gemm_cublaslt.h) against a double-precision reference of the dequantized
// operands (precision::dequantize, the CPU path's decode). Two parts:
// - GemmChecks: the host-side validation (path selection, shape and alignment rules, workspace sizes). Needs
//   no device: pointers are only checked for alignment, never read.
// - GemmCuda: real cuBLASLt GEMMs on quantized copies, every path the device supports.
// Without a CUDA device (the machines this project is developed and CI-tested on) only GemmChecks runs and
// the test exits 77, which CTest reports as a skip, never a pass.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/cuda/gemm_cublaslt.h"
#include "precision/cuda/convert_cuda.h"
#include "precision/cuda/device_buffer.h"
#include "precision/error.h"
#include "precision/format.h"
#include "precision/quantize.h"
#include "tests/common/cuda_availability.h"

namespace nibble::core::cuda {
namespace {

using precision::copy_layout;
using precision::CopyLayout;
using precision::Format;
using precision::QuantizeOptions;

QuantizeOptions options_for(const std::string& name) {
  Format element;
  QuantizeOptions o = precision::default_options(precision::parse_scheme(name, &element));
  o.element = element;
  return o;
}

// ---- host-side checks (no device) ---------------------------------------------------------------------

// An operand with fake, 256-byte aligned device addresses: check_gemm never dereferences them.
DeviceOperand fake_operand(const std::string& scheme, int64_t rows, int64_t k, uintptr_t base) {
  DeviceOperand op;
  op.options = options_for(scheme);
  op.layout = copy_layout(op.options, rows, k);
  op.copy.data = reinterpret_cast<uint8_t*>(base);
  op.copy.scale = reinterpret_cast<void*>(base + 0x1000000);
  op.copy.global_amax = reinterpret_cast<float*>(base + 0x2000000);
  return op;
}

GemmArgs fake_args(const std::string& a, const std::string& b, int64_t M, int64_t N, int64_t K) {
  GemmArgs g;
  g.a = fake_operand(a, M, K, 0x10000000);
  g.b = fake_operand(b, N, K, 0x20000000);
  g.out = reinterpret_cast<void*>(uintptr_t{0x30000000});
  g.name = "test_gemm";
  return g;
}

void expect_invalid(const GemmArgs& g, int sm, const std::string& needle) {
  try {
    check_gemm(g, sm);
    ADD_FAILURE() << "expected InvalidArgument containing '" << needle << "'";
  } catch (const InvalidArgument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("test_gemm"), std::string::npos) << "message names the GEMM: " << e.what();
  }
}

TEST(GemmChecks, PathsFollowSchemesAndArchitecture) {
  EXPECT_EQ(check_gemm(fake_args("fp8_tensor", "fp8_tensor", 64, 64, 128), 90), GemmPath::kFP8Tensor);
  EXPECT_EQ(check_gemm(fake_args("fp8_tensor", "fp8_tensor_e5m2", 64, 64, 128), 100), GemmPath::kFP8Tensor);
  EXPECT_EQ(check_gemm(fake_args("mxfp8", "mxfp8", 64, 64, 128), 100), GemmPath::kMXFP8);
  EXPECT_EQ(check_gemm(fake_args("nvfp4", "nvfp4_2d", 64, 64, 128), 100), GemmPath::kNVFP4);
  EXPECT_EQ(check_gemm(fake_args("nvfp4", "nvfp4", 64, 64, 128), 90), GemmPath::kDequantizeBf16);
  EXPECT_EQ(check_gemm(fake_args("mxfp4", "mxfp4", 64, 64, 128), 100), GemmPath::kDequantizeBf16);
  EXPECT_EQ(check_gemm(fake_args("nvfp4", "mxfp4_quest", 64, 64, 128), 90), GemmPath::kDequantizeBf16);
  EXPECT_EQ(check_gemm(fake_args("fp8_block128", "fp8_block128x128", 64, 64, 256), 90), GemmPath::kFP8Block);
  EXPECT_EQ(check_gemm(fake_args("fp8_block128x128", "fp8_block128", 64, 64, 256), 90), GemmPath::kFP8Block);
  EXPECT_EQ(check_gemm(fake_args("fp8_block128", "fp8_block128", 64, 64, 256), 90), GemmPath::kFP8Block);
}

// check_gemm runs exactly what core/gemm_path.h chooses, and refuses only pairs whose choice is the device
// dequantize fallback, which core/cuda implements for FP4 pairs only so far.
TEST(GemmChecks, AgreesWithTheOneGemmPathDecision) {
  const char* schemes[] = {"fp8_tensor", "fp8_tensor_e5m2", "fp8_block128", "fp8_block128x128", "fp8_block16", "mxfp8",
                           "nvfp4",      "nvfp4_2d",        "mxfp4",        "mxfp4_quest"};
  int native = 0, fallback = 0, refused = 0;
  for (int sm : {80, 89, 90, 100}) {
    for (const char* a : schemes) {
      for (const char* b : schemes) {
        const GemmArgs g = fake_args(a, b, 64, 64, 256);
        const GemmPath want = core::choose_gemm_path(g.a.options, g.b.options, core::GemmDevice{sm});
        try {
          EXPECT_EQ(check_gemm(g, sm), want) << a << " x " << b << " on sm_" << sm;
          (want == GemmPath::kDequantizeBf16 ? fallback : native) += 1;
        } catch (const InvalidArgument& e) {
          EXPECT_EQ(want, GemmPath::kDequantizeBf16) << a << " x " << b << " on sm_" << sm << ": " << e.what();
          ++refused;
        }
      }
    }
  }
  EXPECT_GT(native, 0);
  EXPECT_GT(fallback, 0);
  EXPECT_GT(refused, 0);
}

TEST(GemmChecks, UnsupportedCombinationsNameTheValidOnes) {
  expect_invalid(fake_args("fp8_tensor_e5m2", "fp8_tensor_e5m2", 64, 64, 128), 90, "E5M2 x E5M2");
  expect_invalid(fake_args("fp8_tensor", "mxfp8", 64, 64, 128), 100, "valid pairs");
  expect_invalid(fake_args("fp8_block16", "fp8_block16", 64, 64, 128), 90, "valid pairs");
  expect_invalid(fake_args("nvfp4", "fp8_tensor", 64, 64, 128), 100, "FP4 partner");
  expect_invalid(fake_args("mxfp8", "mxfp8", 64, 64, 128), 90, "sm_100");
  expect_invalid(fake_args("fp8_block128", "fp8_block128", 64, 64, 256), 100, "sm_90");
  expect_invalid(fake_args("fp8_block128x128", "fp8_block128x128", 64, 64, 256), 90, "fp8_block128 x fp8_block128x128");
  expect_invalid(fake_args("fp8_tensor", "fp8_tensor", 64, 64, 128), 80, "sm_89");
  GemmArgs fast_block = fake_args("fp8_block128", "fp8_block128", 64, 64, 256);
  fast_block.fast_accumulation = true;
  expect_invalid(fast_block, 90, "fast_accumulation is not offered");
  GemmArgs fast_tensor = fake_args("fp8_tensor", "fp8_tensor", 64, 64, 128);
  fast_tensor.fast_accumulation = true;  // Hopper's FP8 fast accumulation stays available per tensor
  EXPECT_EQ(check_gemm(fast_tensor, 90), GemmPath::kFP8Tensor);
}

TEST(GemmChecks, ShapeAndAlignmentRules) {
  expect_invalid(fake_args("fp8_tensor", "fp8_tensor", 64, 64, 72), 90, "K % 16 == 0");
  expect_invalid(fake_args("nvfp4", "nvfp4", 64, 64, 48), 100, "K % 32 == 0");
  expect_invalid(fake_args("mxfp8", "mxfp8", 64, 64, 48), 100, "K % 32 == 0");
  expect_invalid(fake_args("fp8_block128", "fp8_block128", 64, 64, 192), 90, "K % 128 == 0");
  expect_invalid(fake_args("nvfp4", "nvfp4", 40, 64, 128), 100, "M % 16 == 0");
  expect_invalid(fake_args("fp8_block128", "fp8_block128x128", 64, 24, 256), 90, "N % 16 == 0");
  GemmArgs bf16_out = fake_args("fp8_tensor", "fp8_tensor", 64, 20, 128);
  bf16_out.out_type = OutputType::kBFloat16;
  expect_invalid(bf16_out, 90, "N % 8 == 0");
  EXPECT_EQ(check_gemm(fake_args("fp8_tensor", "fp8_tensor", 64, 20, 128), 90), GemmPath::kFP8Tensor);  // fp32: N % 4
  GemmArgs misaligned = fake_args("fp8_tensor", "fp8_tensor", 64, 64, 128);
  misaligned.a.copy.data += 8;
  expect_invalid(misaligned, 90, "16-byte aligned");
  GemmArgs mismatch = fake_args("fp8_tensor", "fp8_tensor", 64, 64, 128);
  mismatch.b = fake_operand("fp8_tensor", 64, 256, 0x20000000);
  expect_invalid(mismatch, 90, "inner dimensions differ");
  GemmArgs acc = fake_args("fp8_tensor", "fp8_tensor", 64, 64, 128);
  acc.accumulate = true;
  acc.out_type = OutputType::kBFloat16;
  expect_invalid(acc, 90, "float32");
  GemmArgs layout = fake_args("mxfp8", "mxfp8", 64, 64, 128);
  layout.a.layout.scale_cols = 3;
  expect_invalid(layout, 100, "does not match copy_layout");
  GemmArgs no_amax = fake_args("nvfp4", "nvfp4", 64, 64, 128);
  no_amax.b.copy.global_amax = nullptr;
  expect_invalid(no_amax, 100, "global_amax");
  // The emulated path has no cuBLAS FP4/FP8 alignment rules: odd shapes are fine.
  EXPECT_EQ(check_gemm(fake_args("mxfp4", "nvfp4", 7, 9, 40), 90), GemmPath::kDequantizeBf16);
}

TEST(GemmChecks, WorkspaceHoldsSwizzledScalesAndDecodedOperands) {
  const size_t lt = size_t{32} << 20;
  const size_t fp8 = gemm_workspace_bytes(fake_args("fp8_tensor", "fp8_tensor", 64, 64, 128), 90);
  EXPECT_GE(fp8, lt);
  EXPECT_LT(fp8, lt + 4096);
  // MXFP8 (M=N=256, K=512): two 256 x 16 swizzled E8M0 arrays.
  EXPECT_GE(gemm_workspace_bytes(fake_args("mxfp8", "mxfp8", 256, 256, 512), 100), lt + 2 * 256 * 16);
  // Emulated FP4: both operands as BF16.
  EXPECT_GE(gemm_workspace_bytes(fake_args("nvfp4", "nvfp4", 128, 256, 512), 90), lt + (128 + 256) * 512 * 2);
}

// ---- GPU GEMMs ----------------------------------------------------------------------------------------

void check(cudaError_t err, const char* what) { precision::cuda::check_cuda(err, what); }

using precision::cuda::DeviceBuffer;

// A quantized copy on the host (from the CPU quantizer), its dequantized values, and a device mirror.
struct Operand {
  QuantizeOptions options;
  CopyLayout layout;
  std::vector<uint8_t> data, scale;
  float amax = 0;
  std::vector<float> dequantized;
  std::unique_ptr<DeviceBuffer> d_data, d_scale, d_amax;

  Operand(const std::string& scheme, int64_t rows, int64_t k, uint32_t seed) {
    options = options_for(scheme);
    layout = copy_layout(options, rows, k);
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(rows * k));
    for (size_t i = 0; i < x.size(); ++i) x[i] = normal(rng) * (1.0f + static_cast<float>(i % 97) / 8.0f);
    data.resize(static_cast<size_t>(layout.rows * layout.data_row_bytes));
    scale.resize(static_cast<size_t>(layout.scale_rows * layout.scale_cols *
                                     (layout.scale_storage == precision::ScaleStorage::kFloat32 ? 4 : 1)));
    std::vector<uint8_t> mask(layout.has_mask ? static_cast<size_t>(rows * k) : 0);
    precision::QuantizedCopy host{data.data(), scale.data(), &amax, layout.has_mask ? mask.data() : nullptr};
    precision::quantize(precision::QuantizeInput{x.data(), precision::InputType::kFloat32, rows, k, scheme}, options,
                        &host, nullptr);
    dequantized.resize(x.size());
    precision::dequantize(host, layout, options, dequantized.data());
    d_data = std::make_unique<DeviceBuffer>(data.size());
    d_scale = std::make_unique<DeviceBuffer>(scale.size());
    d_amax = std::make_unique<DeviceBuffer>(sizeof(float));
    check(cudaMemcpy(d_data->ptr, data.data(), data.size(), cudaMemcpyHostToDevice), "copy data");
    check(cudaMemcpy(d_scale->ptr, scale.data(), scale.size(), cudaMemcpyHostToDevice), "copy scale");
    check(cudaMemcpy(d_amax->ptr, &amax, sizeof(float), cudaMemcpyHostToDevice), "copy amax");
  }

  DeviceOperand device() const {
    DeviceOperand op;
    op.options = options;
    op.layout = layout;
    op.copy.data = static_cast<uint8_t*>(d_data->ptr);
    op.copy.scale = d_scale->ptr;
    op.copy.global_amax = static_cast<float*>(d_amax->ptr);
    return op;
  }
};

uint16_t bf16_bits(float f) {
  return static_cast<uint16_t>(precision::encode_scalar(f, precision::formats::kBF16, precision::Rounding::kNearestEven));
}
float bf16_value(uint16_t b) { return precision::decode_scalar(b, precision::formats::kBF16); }

struct Case {
  std::string a, b;
  OutputType out = OutputType::kFloat32;
  bool bias = false;
  bool accumulate = false;
};

std::string describe(const Case& c) {
  return c.a + " x " + c.b + (c.out == OutputType::kFloat32 ? " -> f32" : " -> bf16") + (c.bias ? " +bias" : "") +
         (c.accumulate ? " +=" : "");
}

// M = 80 (not a multiple of the 128-row scale tiles), N = 48, K = 384 (3 FP8 blocks of 128: the VEC128
// and BLK128x128 rows get padded to 4).
void run_case(const Case& c, int sm) {
  constexpr int64_t M = 80, N = 48, K = 384;
  SCOPED_TRACE(describe(c));
  const Operand a(c.a, M, K, 11), b(c.b, N, K, 23);
  std::vector<float> bias(N), init(static_cast<size_t>(M * N));
  std::vector<uint16_t> bias_bits(N);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 4.0f);
  for (int64_t j = 0; j < N; ++j) bias[j] = bf16_value(bias_bits[j] = bf16_bits(normal(rng)));
  for (float& v : init) v = normal(rng);

  GemmArgs g;
  g.a = a.device();
  g.b = b.device();
  g.out_type = c.out;
  g.accumulate = c.accumulate;
  g.name = describe(c);
  GemmPath path;
  try {
    path = check_gemm(g, sm);
  } catch (const InvalidArgument& e) {
    std::printf("  not on sm_%d: %s\n", sm, e.what());
    return;
  }
  const size_t out_elem = c.out == OutputType::kFloat32 ? 4 : 2;
  DeviceBuffer d_out(static_cast<size_t>(M * N) * out_elem), d_bias(N * 2);
  g.out = d_out.ptr;
  if (c.bias) {
    check(cudaMemcpy(d_bias.ptr, bias_bits.data(), N * 2, cudaMemcpyHostToDevice), "copy bias");
    g.bias = d_bias.ptr;
  }
  if (c.accumulate) check(cudaMemcpy(d_out.ptr, init.data(), init.size() * 4, cudaMemcpyHostToDevice), "copy init");
  const size_t ws_bytes = gemm_workspace_bytes(g, sm);
  DeviceBuffer ws(ws_bytes);
  gemm(g, ws.ptr, ws_bytes, nullptr);
  check(cudaDeviceSynchronize(), "gemm");

  std::vector<float> got(static_cast<size_t>(M * N));
  if (c.out == OutputType::kFloat32) {
    check(cudaMemcpy(got.data(), d_out.ptr, got.size() * 4, cudaMemcpyDeviceToHost), "copy out");
  } else {
    std::vector<uint16_t> bits(got.size());
    check(cudaMemcpy(bits.data(), d_out.ptr, bits.size() * 2, cudaMemcpyDeviceToHost), "copy out");
    for (size_t i = 0; i < bits.size(); ++i) got[i] = bf16_value(bits[i]);
  }
  int bad = 0;
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t j = 0; j < N; ++j) {
      double ref = 0, mag = 0;
      for (int64_t k = 0; k < K; ++k) {
        const double p = static_cast<double>(a.dequantized[i * K + k]) * b.dequantized[j * K + k];
        ref += p;
        mag += std::fabs(p);
      }
      if (c.bias) ref += bias[j], mag += std::fabs(bias[j]);
      if (c.accumulate) ref += init[i * N + j], mag += std::fabs(init[i * N + j]);
      // Not bit-exact: the tensor cores sum in their own order, and Hopper's FP8 MMAs keep fewer than 24
      // bits between promotions to FP32 (DeepSeek-V3 report, "limited accumulation precision"). 1e-4 of
      // sum |a*b| covers that; a wrong scale layout misplaces whole blocks and misses by O(1) of it.
      double tol = 1e-4 * mag + 1e-30;
      if (c.out == OutputType::kBFloat16) tol += std::fabs(ref) * (1.0 / 256);
      if (std::fabs(got[i * N + j] - ref) > tol && bad++ < 5)
        ADD_FAILURE() << gemm_path_name(path) << " C[" << i << "," << j << "] = " << got[i * N + j] << ", reference "
                      << ref << " (tolerance " << tol << ")";
    }
  }
  EXPECT_EQ(bad, 0) << gemm_path_name(path);
}

TEST(GemmCuda, MatchesDoublePrecisionReferenceOnEveryPath) {
  const int sm = current_device_sm();
  std::printf("device sm_%d\n", sm);
  const Case cases[] = {
      {"fp8_tensor", "fp8_tensor"},
      {"fp8_tensor", "fp8_tensor_e5m2", OutputType::kBFloat16},
      {"fp8_tensor_e5m2", "fp8_tensor", OutputType::kFloat32, true},
      {"fp8_tensor", "fp8_tensor", OutputType::kFloat32, true, true},
      {"mxfp8", "mxfp8"},
      {"mxfp8", "mxfp8", OutputType::kBFloat16, true},
      {"nvfp4", "nvfp4"},
      {"nvfp4", "nvfp4_2d", OutputType::kFloat32, false, true},
      {"nvfp4", "nvfp4", OutputType::kBFloat16, true},
      {"mxfp4", "mxfp4"},
      {"mxfp4", "nvfp4", OutputType::kFloat32, true},
      {"mxfp4", "mxfp4", OutputType::kBFloat16, true},
      {"fp8_block128", "fp8_block128"},
      {"fp8_block128", "fp8_block128x128", OutputType::kFloat32, true},
      {"fp8_block128x128", "fp8_block128", OutputType::kBFloat16, false},
      {"fp8_block128", "fp8_block128x128", OutputType::kFloat32, false, true},
  };
  for (const Case& c : cases) run_case(c, sm);
}

}  // namespace
}  // namespace nibble::core::cuda

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  const auto cuda = nibble::testing::cuda_availability();
  if (cuda == nibble::testing::CudaAvailability::kBroken) return 1;
  if (cuda == nibble::testing::CudaAvailability::kNoGpu) {
    GTEST_FLAG_SET(filter, "GemmChecks.*");
    const int rc = RUN_ALL_TESTS();
    if (rc != 0) return rc;
    std::printf("SKIPPED: no CUDA device on this machine; the host-side GEMM checks passed, the cuBLASLt GEMMs "
                "were compiled and linked only.\n");
    return 77;
  }
  return RUN_ALL_TESTS();
}
