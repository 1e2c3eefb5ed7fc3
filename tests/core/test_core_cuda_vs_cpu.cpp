// core/'s tensor operations on CUDA tensors against the same calls on CPU tensors (the reference):
// - quantize: every scheme, both copies, RHT, float32 and bfloat16 inputs, RNE and stochastic rounding,
//   partial blocks, a group amax -- codes, scales, masks and amaxes bit for bit; the same error for a NaN;
// - dequantize and tensor_amax bit for bit;
// - gemm: every recipe's pair on whichever path this GPU takes (tensor core, FP4 decoded to BF16, the FP32
//   fallback), dense BF16, mixed dense x quantized, bias and accumulation: within FP32 accumulation tolerance of
//   an FP64 product of the CPU-dequantized operands (|error| <= 1e-5 * sum |a||b| per element);
// - mixed devices: the error names both devices.
// Exits 77 (a CTest skip, never a pass) on a machine without a GPU, as the machines this project is developed
// and CI-tested on; NIBBLE_REQUIRE_GPU=1 turns that into a failure (scripts/gpu_check.sh).
#include <gtest/gtest.h>

#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "core/gemm.h"
#include "core/quantized_tensor.h"
#include "precision/error.h"
#include "tests/common/gpu_test_main.h"

namespace nibble::core {
namespace {

using precision::QuantizeOptions;

QuantizeOptions options_for(const std::string& name) {
  precision::Format element;
  QuantizeOptions o = precision::default_options(precision::parse_scheme(name, &element));
  o.element = element;
  return o;
}

torch::Tensor sample(int64_t rows, int64_t cols, uint64_t seed, torch::ScalarType dtype) {
  torch::manual_seed(seed);
  // Heavy-tailed values: outliers make the block scales differ across blocks.
  const torch::Tensor x = torch::randn({rows, cols}) * torch::exp(torch::randn({rows, cols}));
  return x.to(dtype);
}

void expect_same_copy(const QuantizedCopyTensor& cpu, const QuantizedCopyTensor& gpu, const std::string& what) {
  EXPECT_TRUE(torch::equal(cpu.data, gpu.data.cpu())) << what << ": codes";
  EXPECT_TRUE(torch::equal(cpu.scale, gpu.scale.cpu())) << what << ": scales";
  EXPECT_EQ(cpu.global_amax.item<float>(), gpu.global_amax.cpu().item<float>()) << what << ": global amax";
  EXPECT_EQ(cpu.mask.defined(), gpu.mask.defined()) << what;
  if (cpu.mask.defined()) {
    EXPECT_TRUE(torch::equal(cpu.mask, gpu.mask.cpu())) << what << ": mask";
  }
}

void expect_same_quantization(const torch::Tensor& x, const QuantizeOptions& o, const std::string& what) {
  const QuantizedTensor cpu = quantize(x, o, "x");
  const QuantizedTensor gpu = quantize(x.cuda(), o, "x");
  EXPECT_EQ(cpu.input_amax, gpu.input_amax) << what;
  ASSERT_EQ(cpu.rowwise.has_value(), gpu.rowwise.has_value()) << what;
  ASSERT_EQ(cpu.columnwise.has_value(), gpu.columnwise.has_value()) << what;
  if (cpu.rowwise) {
    expect_same_copy(*cpu.rowwise, *gpu.rowwise, what + " rowwise");
    EXPECT_TRUE(torch::equal(dequantize(*cpu.rowwise, o), dequantize(*gpu.rowwise, o).cpu())) << what << " rowwise";
  }
  if (cpu.columnwise) {
    expect_same_copy(*cpu.columnwise, *gpu.columnwise, what + " columnwise");
    EXPECT_TRUE(torch::equal(dequantize(*cpu.columnwise, o), dequantize(*gpu.columnwise, o).cpu()))
        << what << " columnwise";
  }
}

const char* const kSchemes[] = {"fp8_tensor",       "fp8_tensor_e5m2", "fp8_block128", "fp8_block16",
                                "fp8_block128x128", "mxfp8",           "nvfp4",        "nvfp4_2d",
                                "mxfp4",            "mxfp4_quest"};

TEST(QuantizeCudaVsCpu, EveryScheme) {
  for (const char* name : kSchemes) {
    const bool quest = std::string(name) == "mxfp4_quest";
    // 160 x 200: partial blocks and tiles on both axes (QuEST needs whole 32-groups on both).
    const int64_t rows = quest ? 192 : 160, cols = quest ? 256 : 200;
    for (const torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
      for (const precision::Rounding rounding : {precision::Rounding::kNearestEven, precision::Rounding::kStochastic}) {
        QuantizeOptions o = options_for(name);
        o.rowwise = o.columnwise = true;
        o.rounding = rounding;
        o.seed = 11;
        o.offset = 5;
        const std::string what = std::string(name) + (dtype == torch::kBFloat16 ? " bf16" : " f32") +
                                 (rounding == precision::Rounding::kStochastic ? " sr" : " rne");
        expect_same_quantization(sample(rows, cols, 3, dtype), o, what);
      }
    }
  }
}

TEST(QuantizeCudaVsCpu, Nvfp4RhtAndGroupAmax) {
  for (const torch::ScalarType dtype : {torch::kFloat32, torch::kBFloat16}) {
    const torch::Tensor x = sample(128, 96, 7, dtype);
    QuantizeOptions o = options_for("nvfp4");
    o.rowwise = o.columnwise = true;
    o.rht = true;
    o.rounding = precision::Rounding::kStochastic;
    o.seed = 2;
    expect_same_quantization(x, o, "nvfp4 rht te-signs");
    o.rht_seed = 99;
    expect_same_quantization(x, o, "nvfp4 rht seeded");
    const precision::TensorAmax cpu = tensor_amax(x, true, o.rht_seed, "x");
    const precision::TensorAmax gpu = tensor_amax(x.cuda(), true, o.rht_seed, "x");
    EXPECT_EQ(cpu.amax, gpu.amax);
    EXPECT_EQ(cpu.rht_amax, gpu.rht_amax);
    EXPECT_EQ(cpu.nan, gpu.nan);
    o.group_amax = 2.0f * cpu.amax;
    o.group_rht_amax = 3.0f * cpu.rht_amax;
    expect_same_quantization(x, o, "nvfp4 rht group amax");
  }
}

TEST(QuantizeCudaVsCpu, SequenceParallelSrIndex) {
  const torch::Tensor x = sample(64, 128, 13, torch::kFloat32);
  QuantizeOptions o = options_for("mxfp8");
  o.rowwise = o.columnwise = true;
  o.rounding = precision::Rounding::kStochastic;
  o.sr_index = precision::SrIndexMap{256, 128, 64, 0};  // the second of four row slices
  expect_same_quantization(x, o, "mxfp8 sr slice");
}

TEST(QuantizeCudaVsCpu, SameErrors) {
  torch::Tensor x = sample(32, 64, 1, torch::kFloat32);
  x[5][17] = std::numeric_limits<float>::quiet_NaN();
  const QuantizeOptions o = options_for("nvfp4");
  std::string cpu_error, gpu_error;
  try {
    quantize(x, o, "x");
  } catch (const InvalidArgument& e) {
    cpu_error = e.what();
  }
  try {
    quantize(x.cuda(), o, "x");
  } catch (const InvalidArgument& e) {
    gpu_error = e.what();
  }
  EXPECT_NE(cpu_error.find("(5, 17)"), std::string::npos) << cpu_error;
  EXPECT_EQ(cpu_error, gpu_error);
}

// ---- GEMM ---------------------------------------------------------------------------------------------

// Elementwise check of C against the FP64 product of the CPU-dequantized operands: |C - ref| <= tol * sum |a||b|.
void expect_close_to_fp64(const torch::Tensor& c, const torch::Tensor& a_values, const torch::Tensor& b_values,
                          const std::string& what) {
  const torch::Tensor a64 = a_values.cpu().to(torch::kFloat64), b64 = b_values.cpu().to(torch::kFloat64);
  const torch::Tensor ref = torch::mm(a64, b64.t());
  const torch::Tensor scale = torch::mm(a64.abs(), b64.abs().t()) + 1e-30;
  const double worst = ((c.cpu().to(torch::kFloat64) - ref).abs() / scale).max().item<double>();
  EXPECT_LE(worst, 1e-5) << what;
}

TEST(GemmCudaVsCpu, EveryRecipePair) {
  const std::vector<std::pair<std::string, std::string>> pairs = {
      {"fp8_tensor", "fp8_tensor"},     {"fp8_tensor", "fp8_tensor_e5m2"}, {"fp8_block128", "fp8_block128"},
      {"fp8_block128", "fp8_block128x128"}, {"fp8_block16", "fp8_block16"}, {"mxfp8", "mxfp8"},
      {"nvfp4", "nvfp4"},               {"nvfp4_2d", "nvfp4"},             {"mxfp4", "mxfp4"},
      {"mxfp4_quest", "mxfp4_quest"}};
  const int64_t M = 64, N = 96, K = 256;
  for (const auto& [sa, sb] : pairs) {
    const torch::Tensor xa = sample(M, K, 21, torch::kFloat32), xb = sample(N, K, 22, torch::kFloat32);
    const QuantizeOptions oa = options_for(sa), ob = options_for(sb);
    const QuantizedTensor ca = quantize(xa, oa, "a"), cb = quantize(xb, ob, "b");
    const QuantizedTensor ga = quantize(xa.cuda(), oa, "a"), gb = quantize(xb.cuda(), ob, "b");
    const torch::Tensor c = gemm(GemmOperand::rowwise(ga), GemmOperand::rowwise(gb));
    ASSERT_TRUE(c.is_cuda());
    expect_close_to_fp64(c, dequantize(*ca.rowwise, oa), dequantize(*cb.rowwise, ob), sa + " x " + sb);
    // And the CPU path itself meets the same bound (both are FP32 sums of the same exact products).
    expect_close_to_fp64(gemm(GemmOperand::rowwise(ca), GemmOperand::rowwise(cb)), dequantize(*ca.rowwise, oa),
                         dequantize(*cb.rowwise, ob), sa + " x " + sb + " (cpu)");
  }
}

TEST(GemmCudaVsCpu, DenseMixedBiasAccumulate) {
  const int64_t M = 48, N = 64, K = 160;
  const torch::Tensor xa = sample(M, K, 31, torch::kFloat32), xb = sample(N, K, 32, torch::kFloat32);
  const torch::Tensor bias = torch::randn({N});
  // Dense x dense: the operands rounded to BF16.
  GemmOptions with_bias;
  with_bias.bias = bias.cuda();
  const torch::Tensor dense =
      gemm(GemmOperand::high_precision(xa.cuda()), GemmOperand::high_precision(xb.cuda()), with_bias);
  const torch::Tensor ra = xa.to(torch::kBFloat16).to(torch::kFloat32), rb = xb.to(torch::kBFloat16).to(torch::kFloat32);
  expect_close_to_fp64(dense - with_bias.bias->unsqueeze(0), ra, rb, "bf16 x bf16 + bias");
  // Dense x quantized, accumulated into an existing FP32 output.
  const QuantizeOptions ob = options_for("mxfp8");
  const QuantizedTensor gb = quantize(xb.cuda(), ob, "b");
  const torch::Tensor start = torch::randn({M, N});
  GemmOptions acc;
  acc.accumulate = start.cuda();
  const torch::Tensor out = gemm(GemmOperand::high_precision(xa.cuda()), GemmOperand::rowwise(gb), acc);
  expect_close_to_fp64(out - start.cuda(), ra, dequantize(*gb.rowwise, ob), "bf16 x mxfp8 accumulated");
}

TEST(GemmCudaVsCpu, MixedDevicesNamed) {
  const torch::Tensor x = sample(16, 32, 1, torch::kFloat32);
  try {
    gemm(GemmOperand::high_precision(x.cuda()), GemmOperand::high_precision(x));
    FAIL() << "mixed devices were accepted";
  } catch (const InvalidArgument& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("cuda"), std::string::npos) << m;
    EXPECT_NE(m.find("cpu"), std::string::npos) << m;
  }
}

}  // namespace
}  // namespace nibble::core

int main(int argc, char** argv) {
  return nibble::testing::gpu_test_main(argc, argv, "core/'s CUDA dispatch");
}
