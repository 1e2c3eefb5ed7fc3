#include "core/gemm_path.h"

namespace nibble::core {
namespace {

using precision::Scheme;

bool is_nvfp4(Scheme s) {
  return s == Scheme::kNVFP4 || s == Scheme::kNVFP4_2D;
}
bool is_fp8_block(Scheme s) {
  return s == Scheme::kFP8Block128 || s == Scheme::kFP8Block128x128;
}
bool is_fp8(const precision::Format& f) {
  return f == precision::formats::kE4M3 || f == precision::formats::kE5M2;
}

}  // namespace

std::string GemmDevice::name() const {
  return is_cuda() ? "cuda sm_" + std::to_string(cuda_sm) : "cpu";
}

GemmPath choose_gemm_path(const precision::QuantizeOptions& a, const precision::QuantizeOptions& b, GemmDevice d) {
  if (!d.is_cuda()) return GemmPath::kCpuEmulation;
  const Scheme sa = a.scheme, sb = b.scheme;
  const int sm = d.cuda_sm;
  const bool hopper = sm / 10 == 9, blackwell = sm / 10 == 10;
  if (is_nvfp4(sa) && is_nvfp4(sb)) {
    const bool e2m1 = a.element == precision::formats::kE2M1 && b.element == precision::formats::kE2M1;
    return blackwell && e2m1 ? GemmPath::kNVFP4 : GemmPath::kDequantizeBf16;
  }
  if (!is_fp8(a.element) || !is_fp8(b.element)) return GemmPath::kDequantizeBf16;  // FP4 / ExMy research formats
  const bool both_e5m2 = a.element == precision::formats::kE5M2 && b.element == precision::formats::kE5M2;
  if (sa == Scheme::kFP8Tensor && sb == Scheme::kFP8Tensor)
    return sm >= 89 && !both_e5m2 ? GemmPath::kFP8Tensor : GemmPath::kDequantizeBf16;
  if (sa == Scheme::kMXFP8 && sb == Scheme::kMXFP8)
    return blackwell && !both_e5m2 ? GemmPath::kMXFP8 : GemmPath::kDequantizeBf16;
  const bool two_d_twice = sa == Scheme::kFP8Block128x128 && sb == Scheme::kFP8Block128x128;
  if (is_fp8_block(sa) && is_fp8_block(sb) && !two_d_twice && !both_e5m2)
    return hopper ? GemmPath::kFP8Block : GemmPath::kDequantizeBf16;
  return GemmPath::kDequantizeBf16;
}

GemmPath choose_dense_gemm_path(GemmDevice d) {
  return d.is_cuda() ? GemmPath::kDequantizeBf16 : GemmPath::kCpuEmulation;
}

LinearGemmPaths linear_gemm_paths(const Recipe& r, GemmDevice d) {
  auto path = [&](const OperandSpec& a, const OperandSpec& b) {
    return a.quantized && b.quantized ? choose_gemm_path(a.options, b.options, d) : choose_dense_gemm_path(d);
  };
  return {path(r.x_row, r.w_row), path(r.dy_row, r.w_col), path(r.dy_col, r.x_col)};
}

const char* gemm_path_name(GemmPath path) {
  switch (path) {
    case GemmPath::kCpuEmulation:
      return "CPU emulation (exact BF16 decode, FP32 sums)";
    case GemmPath::kDequantizeBf16:
      return "device dequantize + cuBLAS BF16";
    case GemmPath::kFP8Tensor:
      return "cuBLASLt FP8 per-tensor";
    case GemmPath::kFP8Block:
      return "cuBLASLt FP8 block (VEC128_32F / BLK128x128_32F)";
    case GemmPath::kMXFP8:
      return "cuBLASLt MXFP8 (VEC32_UE8M0)";
    case GemmPath::kNVFP4:
      return "cuBLASLt NVFP4 (VEC16_UE4M3)";
  }
  return "?";
}

bool is_tensor_core_path(GemmPath path) {
  return path == GemmPath::kFP8Tensor || path == GemmPath::kFP8Block || path == GemmPath::kMXFP8 ||
         path == GemmPath::kNVFP4;
}

}  // namespace nibble::core
