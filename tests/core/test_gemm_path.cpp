// The one decision of which kernel multiplies two quantized operands on a device (core/gemm_path.h), checked
// against the table of issue 15 / DESIGN.md "Backends": tensor-core cuBLASLt paths where the GPU has them, the
// device dequantize fallback everywhere else, the CPU emulation on CPU.
#include <gtest/gtest.h>

#include <string>

#include "core/gemm_path.h"
#include "precision/quantize.h"

namespace nibble::core {
namespace {

precision::QuantizeOptions q(const std::string& scheme) {
  precision::Format element;
  const precision::Scheme s = precision::parse_scheme(scheme, &element);
  precision::QuantizeOptions o = precision::default_options(s);
  o.element = element;
  return o;
}

GemmPath path(const std::string& a, const std::string& b, int sm) {
  return choose_gemm_path(q(a), q(b), GemmDevice{sm});
}

TEST(GemmPath, CpuAlwaysEmulates) {
  for (const char* s : {"fp8_tensor", "mxfp8", "nvfp4", "mxfp4", "mxfp4_quest", "fp8_block128"})
    EXPECT_EQ(path(s, s, 0), GemmPath::kCpuEmulation) << s;
  EXPECT_EQ(choose_dense_gemm_path(GemmDevice{}), GemmPath::kCpuEmulation);
  EXPECT_EQ(GemmDevice{}.name(), "cpu");
}

TEST(GemmPath, HopperRunsFp8TensorAndBlockOnTensorCores) {
  EXPECT_EQ(path("fp8_tensor", "fp8_tensor", 90), GemmPath::kFP8Tensor);
  EXPECT_EQ(path("fp8_tensor_e5m2", "fp8_tensor", 90), GemmPath::kFP8Tensor);  // E5M2 gradients x E4M3
  EXPECT_EQ(path("fp8_block128", "fp8_block128x128", 90), GemmPath::kFP8Block);
  EXPECT_EQ(path("fp8_block128x128", "fp8_block128", 90), GemmPath::kFP8Block);
  EXPECT_EQ(path("fp8_block128", "fp8_block128", 90), GemmPath::kFP8Block);
  EXPECT_EQ(GemmDevice{90}.name(), "cuda sm_90");
}

TEST(GemmPath, BlackwellRunsMxfp8AndNvfp4OnTensorCores) {
  EXPECT_EQ(path("mxfp8", "mxfp8", 100), GemmPath::kMXFP8);
  EXPECT_EQ(path("nvfp4", "nvfp4_2d", 100), GemmPath::kNVFP4);
  EXPECT_EQ(path("fp8_tensor", "fp8_tensor", 100), GemmPath::kFP8Tensor);
}

TEST(GemmPath, EverythingElseDequantizesOnTheDevice) {
  EXPECT_EQ(path("nvfp4", "nvfp4", 90), GemmPath::kDequantizeBf16);                 // no FP4 tensor cores on Hopper
  EXPECT_EQ(path("mxfp8", "mxfp8", 90), GemmPath::kDequantizeBf16);                 // VEC32_UE8M0 is Blackwell's
  EXPECT_EQ(path("fp8_block128", "fp8_block128", 100), GemmPath::kDequantizeBf16);  // block FP8 is Hopper's
  EXPECT_EQ(path("mxfp4", "mxfp4", 100), GemmPath::kDequantizeBf16);
  EXPECT_EQ(path("mxfp4_quest", "mxfp4", 90), GemmPath::kDequantizeBf16);                  // Quartet
  EXPECT_EQ(path("fp8_tensor_e5m2", "fp8_tensor_e5m2", 90), GemmPath::kDequantizeBf16);    // no E5M2 x E5M2 kernel
  EXPECT_EQ(path("fp8_block128x128", "fp8_block128x128", 90), GemmPath::kDequantizeBf16);  // no 2-D x 2-D mode
  EXPECT_EQ(path("fp8_tensor", "fp8_tensor", 80), GemmPath::kDequantizeBf16);              // A100: no FP8
  EXPECT_EQ(path("fp8_tensor", "mxfp8", 100), GemmPath::kDequantizeBf16);                  // mixed schemes
  EXPECT_EQ(choose_dense_gemm_path(GemmDevice{90}), GemmPath::kDequantizeBf16);
  precision::QuantizeOptions research = q("mxfp8");
  research.element = precision::formats::kE3M2;  // MX FP6, a research format here
  EXPECT_EQ(choose_gemm_path(research, research, GemmDevice{100}), GemmPath::kDequantizeBf16);
}

TEST(GemmPath, NamesSayWhatRuns) {
  EXPECT_NE(std::string(gemm_path_name(GemmPath::kNVFP4)).find("VEC16_UE4M3"), std::string::npos);
  EXPECT_TRUE(is_tensor_core_path(GemmPath::kMXFP8));
  EXPECT_FALSE(is_tensor_core_path(GemmPath::kDequantizeBf16));
  EXPECT_FALSE(is_tensor_core_path(GemmPath::kCpuEmulation));
}

}  // namespace
}  // namespace nibble::core
