// cuBLASLt GEMMs on quantized copies: validation, workspace layout, scale conversion and the cuBLASLt call.
// The mapping of nibble's row-major TN GEMM onto cuBLAS's column-major API and the rules checked here are
// described in gemm_cublaslt.h.
#include "core/cuda/gemm_cublaslt.h"

#include <cublasLt.h>

#include <map>
#include <mutex>

#include "core/cuda/fp4_decode.h"
#include "core/cuda/scale_swizzle.h"
#include "precision/cuda/convert_cuda.h"
#include "precision/error.h"
#include "precision/format_names.h"

namespace nibble::core::cuda {
namespace {

using precision::Scheme;

// cuBLASLt's own workspace: the size the cuBLAS docs recommend for Hopper and newer (cublasSetWorkspace:
// 32 MiB), also what TE gives cuBLASLt on those GPUs.
constexpr size_t kCublasWorkspaceBytes = size_t{32} << 20;
constexpr size_t kAlign = 256;

std::string str(int64_t v) { return std::to_string(v); }

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLASLt error in ") + what + ": " + cublasLtGetStatusName(status) + " (" +
                cublasLtGetStatusString(status) + ")");
}

bool is_nvfp4(Scheme s) { return s == Scheme::kNVFP4 || s == Scheme::kNVFP4_2D; }
bool is_fp8_block(Scheme s) { return s == Scheme::kFP8Block128 || s == Scheme::kFP8Block128x128; }
bool is_e5m2(const precision::QuantizeOptions& o) { return o.element == precision::formats::kE5M2; }

int64_t out_bytes(OutputType t) { return t == OutputType::kFloat32 ? 4 : 2; }
const char* out_name(OutputType t) { return t == OutputType::kFloat32 ? "float32" : "bfloat16"; }

bool aligned(const void* p, uintptr_t n) { return reinterpret_cast<uintptr_t>(p) % n == 0; }

constexpr const char* kValidPairs =
    "valid pairs: fp8_tensor x fp8_tensor (E4M3/E5M2, not both E5M2; sm_89+), mxfp8 x mxfp8 (sm_100), "
    "nvfp4[_2d] x nvfp4[_2d] (native on sm_100, emulated in BF16 elsewhere), any two of nvfp4, nvfp4_2d, mxfp4, "
    "mxfp4_quest (emulated in BF16), fp8_block128 x fp8_block128 / fp8_block128x128 in either order (sm_90)";

void check_operand(const DeviceOperand& op, const char* which, const std::string& who) {
  const precision::CopyLayout& L = op.layout;
  if (L.rows <= 0 || L.cols <= 0)
    throw InvalidArgument(who + "operand " + which + " has shape (" + str(L.rows) + ", " + str(L.cols) +
                          "); both dims must be positive");
  const precision::CopyLayout want = precision::copy_layout(op.options, L.rows, L.cols);
  if (want.data_row_bytes != L.data_row_bytes || want.scale_rows != L.scale_rows ||
      want.scale_cols != L.scale_cols || want.scale_storage != L.scale_storage)
    throw InvalidArgument(who + "operand " + which + " layout (row bytes " + str(L.data_row_bytes) + ", scales " +
                          str(L.scale_rows) + " x " + str(L.scale_cols) + ") does not match copy_layout(" +
                          op.describe() + "): row bytes " + str(want.data_row_bytes) + ", scales " +
                          str(want.scale_rows) + " x " + str(want.scale_cols));
  if (op.copy.data == nullptr || op.copy.scale == nullptr)
    throw InvalidArgument(who + "operand " + which + " (" + op.describe() + ") needs device data and scale pointers");
  if (is_nvfp4(op.options.scheme) && op.copy.global_amax == nullptr)
    throw InvalidArgument(who + "operand " + which + " (" + op.describe() +
                          ") needs its global_amax pointer (the NVFP4 global scale goes into alpha)");
}

void check_fp8_element(const DeviceOperand& op, const char* which, const std::string& who) {
  if (op.options.element != precision::formats::kE4M3 && op.options.element != precision::formats::kE5M2)
    throw InvalidArgument(who + "operand " + which + " element format " + precision::format_name(op.options.element) +
                          " has no cuBLASLt type; FP8 operands must be e4m3 or e5m2");
}

std::string sm_name(int sm) { return "sm_" + std::to_string(sm); }

GemmPath select_path(const GemmArgs& g, int sm, const std::string& who) {
  const Scheme sa = g.a.options.scheme, sb = g.b.options.scheme;
  const std::string pair = "A is " + g.a.describe() + ", B is " + g.b.describe();
  if (is_fp4_scheme(sa) || is_fp4_scheme(sb)) {
    if (!is_fp4_scheme(sa) || !is_fp4_scheme(sb))
      throw InvalidArgument(who + "an FP4 operand needs an FP4 partner (" + pair + "); " + kValidPairs);
    for (const DeviceOperand* op : {&g.a, &g.b})
      if (op->options.element.bits() > 4)
        throw InvalidArgument(who + "operand " + (op == &g.a ? "A" : "B") + " (" + op->describe() +
                              ") has an FP4 scheme but a " + std::to_string(op->options.element.bits()) +
                              "-bit element format; valid: e2m1 (or another format of at most 4 bits)");
    return core::choose_gemm_path(g.a.options, g.b.options, core::GemmDevice{sm});  // kNVFP4 or the BF16 fallback
  }
  const bool known = (sa == Scheme::kFP8Tensor && sb == Scheme::kFP8Tensor) ||
                     (sa == Scheme::kMXFP8 && sb == Scheme::kMXFP8) || (is_fp8_block(sa) && is_fp8_block(sb));
  if (!known) throw InvalidArgument(who + "no cuBLASLt mode multiplies these schemes (" + pair + "); " + kValidPairs);
  check_fp8_element(g.a, "A", who);
  check_fp8_element(g.b, "B", who);
  if (is_e5m2(g.a.options) && is_e5m2(g.b.options))
    throw InvalidArgument(who + "E5M2 x E5M2 has no cuBLASLt FP8 kernel (" + pair +
                          "); valid element pairs: e4m3 x e4m3, e4m3 x e5m2, e5m2 x e4m3");
  if (sa == Scheme::kFP8Tensor) {
    if (sm < 89)
      throw InvalidArgument(who + "FP8 GEMMs need sm_89 or newer; this device is " + sm_name(sm));
    return GemmPath::kFP8Tensor;
  }
  if (sa == Scheme::kMXFP8) {
    if (sm / 10 != 10)
      throw InvalidArgument(who + "MXFP8 (VEC32_UE8M0) GEMMs run on Blackwell sm_100 only; this device is " +
                            sm_name(sm) + " (valid on Hopper: fp8_tensor or fp8_block128 schemes)");
    return GemmPath::kMXFP8;
  }
  if (sa == Scheme::kFP8Block128x128 && sb == Scheme::kFP8Block128x128)
    throw InvalidArgument(who + "128x128 x 128x128 block-scaled GEMMs are not offered by cuBLASLt (" + pair +
                          "); valid: fp8_block128 x fp8_block128, fp8_block128 x fp8_block128x128, "
                          "fp8_block128x128 x fp8_block128");
  if (sm / 10 != 9)
    throw InvalidArgument(who + "FP8 block-scaled GEMMs (VEC128_32F / BLK128x128_32F) run on Hopper sm_90 only; "
                          "this device is " + sm_name(sm) + " (valid on Blackwell: mxfp8)");
  return GemmPath::kFP8Block;
}

// The native paths' cuBLAS rules (gemm_cublaslt.h lists the sources).
void check_native(const GemmArgs& g, GemmPath path, const std::string& who) {
  const int64_t M = g.a.layout.rows, N = g.b.layout.rows, K = g.a.layout.cols;
  const bool fp4 = path == GemmPath::kNVFP4;
  for (const DeviceOperand* op : {&g.a, &g.b}) {
    const char* which = op == &g.a ? "A" : "B";
    if (!aligned(op->copy.data, 16))
      throw InvalidArgument(who + "operand " + which + " data pointer is not 16-byte aligned; cuBLASLt's " +
                            core::gemm_path_name(path) +
                            " kernels need 16-byte aligned operands (cudaMalloc gives 256)");
    if (op->layout.data_row_bytes % 16 != 0)
      throw InvalidArgument(who + "K = " + str(K) + " makes each row of operand " + which + " " +
                            str(op->layout.data_row_bytes) + " bytes; cuBLASLt needs lda % 16 == 0 bytes: K % " +
                            (fp4 ? "32" : "16") + " == 0 (pad K)");
  }
  if (!aligned(g.out, 16))
    throw InvalidArgument(who + "output pointer is not 16-byte aligned; cuBLASLt's low-precision kernels need it");
  if ((N * out_bytes(g.out_type)) % 16 != 0)
    throw InvalidArgument(who + "N = " + str(N) + " gives " + out_name(g.out_type) + " output rows of " +
                          str(N * out_bytes(g.out_type)) + " bytes; cuBLASLt needs (m * sizeof(C)) % 16 == 0 with m = N: N % " +
                          (g.out_type == OutputType::kFloat32 ? "4" : "8") + " == 0");
  if (path == GemmPath::kFP8Tensor) return;
  const int64_t block = path == GemmPath::kMXFP8 ? 32 : path == GemmPath::kNVFP4 ? 16 : 128;
  if (K % block != 0)
    throw InvalidArgument(who + "K = " + str(K) + " is not a whole number of " + str(block) +
                          "-element scale blocks; " + core::gemm_path_name(path) + " needs K % " + str(block) +
                          " == 0");
  if (M % 16 != 0 || N % 16 != 0)
    throw InvalidArgument(who + "M = " + str(M) + ", N = " + str(N) + ": " + core::gemm_path_name(path) +
                          " GEMMs need M % 16 == 0 and N % 16 == 0 (pad the token and feature dims)");
}

GemmScaleLayout scale_layout(Scheme s) {
  if (s == Scheme::kFP8Block128) return GemmScaleLayout::kVec128;
  if (s == Scheme::kFP8Block128x128) return GemmScaleLayout::kBlock128x128;
  return GemmScaleLayout::kTiled128x4;
}

size_t swizzled_bytes(const DeviceOperand& op) {
  const GemmScaleLayout l = scale_layout(op.options.scheme);
  return static_cast<size_t>(swizzled_size(l, op.layout.scale_rows, op.layout.scale_cols) * scale_element_bytes(l));
}

// Byte offsets of everything gemm() keeps in the workspace; kNone marks an unused slot.
struct Workspace {
  static constexpr size_t kNone = ~size_t{0};
  size_t scale_a = kNone, scale_b = kNone;  // swizzled scales of nibble's A and B
  size_t alpha_beta = kNone;                // two floats (device pointer mode)
  size_t bf16_a = kNone, bf16_b = kNone;    // decoded FP4 operands
  size_t ref_a = kNone, ref_b = kNone;      // E8M0 reference codes
  size_t bias = kNone;                      // FP32 bias (emulated path, FP32 output)
  size_t cublas = kNone;
  size_t total = 0;

  size_t take(size_t bytes) {
    const size_t at = (total + kAlign - 1) / kAlign * kAlign;
    total = at + bytes;
    return at;
  }
};

Workspace plan_workspace(const GemmArgs& g, GemmPath path) {
  Workspace w;
  const size_t M = static_cast<size_t>(g.a.layout.rows), N = static_cast<size_t>(g.b.layout.rows),
               K = static_cast<size_t>(g.a.layout.cols);
  if (path == GemmPath::kMXFP8 || path == GemmPath::kNVFP4 || path == GemmPath::kFP8Block) {
    w.scale_a = w.take(swizzled_bytes(g.a));
    w.scale_b = w.take(swizzled_bytes(g.b));
  }
  if (path == GemmPath::kNVFP4 || path == GemmPath::kDequantizeBf16) w.alpha_beta = w.take(2 * sizeof(float));
  if (path == GemmPath::kDequantizeBf16) {
    w.bf16_a = w.take(M * K * 2);
    w.bf16_b = w.take(N * K * 2);
    w.ref_a = w.take(sizeof(uint32_t));
    w.ref_b = w.take(sizeof(uint32_t));
    if (g.bias && g.out_type == OutputType::kFloat32) w.bias = w.take(N * sizeof(float));
  }
  w.cublas = w.take(kCublasWorkspaceBytes);
  return w;
}

// One cuBLASLt handle per device, created on first use and kept for the process (destroying handles
// during static destruction can run after the CUDA runtime has shut down).
cublasLtHandle_t lt_handle() {
  int device = 0;
  precision::cuda::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  static std::mutex mutex;
  static auto* handles = new std::map<int, cublasLtHandle_t>();
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = handles->find(device);
  if (it == handles->end()) {
    cublasLtHandle_t h = nullptr;
    check_cublas(cublasLtCreate(&h), "cublasLtCreate");
    it = handles->emplace(device, h).first;
  }
  return it->second;
}

struct MatmulDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~MatmulDesc() { if (d) cublasLtMatmulDescDestroy(d); }
  template <class T>
  void set(cublasLtMatmulDescAttributes_t attr, const T& value, const char* what) {
    check_cublas(cublasLtMatmulDescSetAttribute(d, attr, &value, sizeof(value)), what);
  }
};
struct MatrixLayout {
  cublasLtMatrixLayout_t l = nullptr;
  ~MatrixLayout() { if (l) cublasLtMatrixLayoutDestroy(l); }
};
struct Preference {
  cublasLtMatmulPreference_t p = nullptr;
  ~Preference() { if (p) cublasLtMatmulPreferenceDestroy(p); }
  template <class T>
  void set(cublasLtMatmulPreferenceAttributes_t attr, const T& value, const char* what) {
    check_cublas(cublasLtMatmulPreferenceSetAttribute(p, attr, &value, sizeof(value)), what);
  }
};

uint32_t alignment_of(const void* p) {
  uint32_t a = 256;
  while (a > 1 && !aligned(p, a)) a /= 2;
  return a;
}

cudaDataType_t fp8_type(const precision::QuantizeOptions& o) { return is_e5m2(o) ? CUDA_R_8F_E5M2 : CUDA_R_8F_E4M3; }

void check_cublas_version(GemmPath path, const std::string& who) {
  const size_t need = path == GemmPath::kFP8Block ? 120900 : (path == GemmPath::kMXFP8 || path == GemmPath::kNVFP4) ? 120800 : 0;
  const size_t have = cublasLtGetVersion();
  if (have < need)
    throw Error(who + core::gemm_path_name(path) + " needs cuBLASLt " + std::to_string(need) +
                " or newer at run time; loaded is " + std::to_string(have));
}

}  // namespace

std::string DeviceOperand::describe() const {
  return precision::scheme_name(options.scheme) + "/" + precision::format_name(options.element) + " (" +
         str(layout.rows) + ", " + str(layout.cols) + ")";
}

GemmPath check_gemm(const GemmArgs& g, int sm) {
  const std::string who = g.name + ": ";
  check_operand(g.a, "A", who);
  check_operand(g.b, "B", who);
  if (g.a.layout.cols != g.b.layout.cols)
    throw InvalidArgument(who + "inner dimensions differ: A is " + g.a.describe() + ", B is " + g.b.describe() +
                          " (C = A·Bᵀ needs the same K)");
  if (g.out == nullptr) throw InvalidArgument(who + "the output pointer is null");
  if (g.accumulate && g.out_type != OutputType::kFloat32)
    throw InvalidArgument(who + "accumulate reads and writes the output as float32; got out_type " +
                          out_name(g.out_type) + " (valid: float32)");
  if (g.bias && !aligned(g.bias, 2))
    throw InvalidArgument(who + "the bias pointer is not 2-byte aligned (it holds bfloat16 values)");
  const GemmPath path = select_path(g, sm, who);
  // One decision: the wrapper runs what core/gemm_path.h chooses (it refuses, above, what it cannot run yet).
  if (path != core::choose_gemm_path(g.a.options, g.b.options, core::GemmDevice{sm}))
    throw Error(who + "internal error: the cuBLASLt wrapper's path " + core::gemm_path_name(path) +
                " is not core::choose_gemm_path's for A " + g.a.describe() + ", B " + g.b.describe());
  if (path == GemmPath::kFP8Block && g.fast_accumulation)
    throw InvalidArgument(who +
                          "fast_accumulation is not offered for the 1x128 / 128x128 block-scaled FP8 GEMMs "
                          "(cuBLASLt; PyTorch's scaled_mm refuses it too); valid: fast_accumulation = false");
  if (path != GemmPath::kDequantizeBf16) check_native(g, path, who);
  return path;
}

size_t gemm_workspace_bytes(const GemmArgs& args, int sm) {
  return plan_workspace(args, check_gemm(args, sm)).total;
}

int current_device_sm() {
  int device = 0, major = 0, minor = 0;
  precision::cuda::check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  precision::cuda::check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
                              "compute capability");
  precision::cuda::check_cuda(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device),
                              "compute capability");
  return major * 10 + minor;
}

void gemm(const GemmArgs& g, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  const std::string who = g.name + ": ";
  const int sm = current_device_sm();
  const GemmPath path = check_gemm(g, sm);
  const Workspace w = plan_workspace(g, path);
  if (workspace == nullptr || workspace_bytes < w.total)
    throw InvalidArgument(who + "workspace of " + std::to_string(workspace == nullptr ? 0 : workspace_bytes) +
                          " bytes is too small; gemm_workspace_bytes() asks " + std::to_string(w.total));
  if (!aligned(workspace, kAlign))
    throw InvalidArgument(who + "workspace must be 256-byte aligned (cudaMalloc's alignment)");
  check_cublas_version(path, who);
  char* ws = static_cast<char*>(workspace);
  const int64_t M = g.a.layout.rows, N = g.b.layout.rows, K = g.a.layout.cols;

  // cuBLAS "A" is nibble's B and cuBLAS "B" is nibble's A (see the header).
  const void* lt_a = g.b.copy.data;
  const void* lt_b = g.a.copy.data;
  cudaDataType_t type_a = CUDA_R_8F_E4M3, type_b = CUDA_R_8F_E4M3;
  const void* scale_a = nullptr;
  const void* scale_b = nullptr;
  cublasLtMatmulMatrixScale_t mode_a = CUBLASLT_MATMUL_MATRIX_SCALE_SCALAR_32F, mode_b = mode_a;
  const float host_alpha = 1.0f, host_beta = g.accumulate ? 1.0f : 0.0f;
  float* device_alpha_beta = nullptr;
  const void* bias = g.bias;
  cudaDataType_t bias_type = CUDA_R_16BF;

  auto swizzle = [&](const DeviceOperand& op, size_t offset) {
    swizzle_scales(scale_layout(op.options.scheme), op.copy.scale, op.layout.scale_rows, op.layout.scale_cols,
                   ws + offset, stream);
    return static_cast<const void*>(ws + offset);
  };
  auto block_mode = [](Scheme s) {
    return s == Scheme::kMXFP8                ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC32_UE8M0
           : is_nvfp4(s)                      ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3
           : s == Scheme::kFP8Block128        ? CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F
                                              : CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F;
  };

  switch (path) {
    case GemmPath::kFP8Tensor:
      type_a = fp8_type(g.b.options), type_b = fp8_type(g.a.options);
      scale_a = g.b.copy.scale, scale_b = g.a.copy.scale;  // the decode scales (scale_inv)
      break;
    case GemmPath::kMXFP8:
    case GemmPath::kFP8Block:
      type_a = fp8_type(g.b.options), type_b = fp8_type(g.a.options);
      scale_a = swizzle(g.b, w.scale_b), scale_b = swizzle(g.a, w.scale_a);
      mode_a = block_mode(g.b.options.scheme), mode_b = block_mode(g.a.options.scheme);
      break;
    case GemmPath::kNVFP4:
      type_a = type_b = CUDA_R_4F_E2M1;
      scale_a = swizzle(g.b, w.scale_b), scale_b = swizzle(g.a, w.scale_a);
      mode_a = mode_b = CUBLASLT_MATMUL_MATRIX_SCALE_VEC16_UE4M3;
      device_alpha_beta = reinterpret_cast<float*>(ws + w.alpha_beta);
      gemm_alpha({false, g.a.copy.global_amax, nullptr}, {false, g.b.copy.global_amax, nullptr}, host_beta,
                 device_alpha_beta, stream);
      break;
    case GemmPath::kDequantizeBf16: {
      auto decode = [&](const DeviceOperand& op, size_t out, size_t ref) {
        const bool e8m0 = has_e8m0_scales(op.options.scheme);
        uint32_t* ref_code = reinterpret_cast<uint32_t*>(ws + ref);
        if (e8m0)
          fp4_reference_code(static_cast<const uint8_t*>(op.copy.scale), op.layout.scale_rows * op.layout.scale_cols,
                             ref_code, stream);
        fp4_decode_bf16(op.copy, op.layout, op.options, e8m0 ? ref_code : nullptr,
                        reinterpret_cast<uint16_t*>(ws + out), stream);
        return Fp4GlobalFactor{e8m0, op.copy.global_amax, ref_code};
      };
      const Fp4GlobalFactor fa = decode(g.a, w.bf16_a, w.ref_a), fb = decode(g.b, w.bf16_b, w.ref_b);
      device_alpha_beta = reinterpret_cast<float*>(ws + w.alpha_beta);
      gemm_alpha(fa, fb, host_beta, device_alpha_beta, stream);
      lt_a = ws + w.bf16_b, lt_b = ws + w.bf16_a;
      type_a = type_b = CUDA_R_16BF;
      if (bias && g.out_type == OutputType::kFloat32) {
        bf16_to_f32(static_cast<const uint16_t*>(bias), N, reinterpret_cast<float*>(ws + w.bias), stream);
        bias = ws + w.bias;
        bias_type = CUDA_R_32F;  // a BF16 GEMM takes its bias in the output type
      }
      break;
    }
    case GemmPath::kCpuEmulation:  // check_gemm never returns it (the device is a GPU)
      throw Error(who + "internal error: the CPU path reached the cuBLASLt wrapper");
  }

  const cudaDataType_t out_type = g.out_type == OutputType::kFloat32 ? CUDA_R_32F : CUDA_R_16BF;
  MatmulDesc desc;
  check_cublas(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  desc.set(CUBLASLT_MATMUL_DESC_TRANSA, trans_a, "TRANSA");
  desc.set(CUBLASLT_MATMUL_DESC_TRANSB, trans_b, "TRANSB");
  const bool fp8 = path == GemmPath::kFP8Tensor || path == GemmPath::kMXFP8 || path == GemmPath::kFP8Block;
  if (fp8) {
    const int8_t fast = g.fast_accumulation ? 1 : 0;
    desc.set(CUBLASLT_MATMUL_DESC_FAST_ACCUM, fast, "FAST_ACCUM");
  }
  if (scale_a != nullptr) {
    desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, scale_a, "A_SCALE_POINTER");
    desc.set(CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, scale_b, "B_SCALE_POINTER");
    desc.set(CUBLASLT_MATMUL_DESC_A_SCALE_MODE, mode_a, "A_SCALE_MODE");
    desc.set(CUBLASLT_MATMUL_DESC_B_SCALE_MODE, mode_b, "B_SCALE_MODE");
  }
  if (device_alpha_beta != nullptr) {
    const cublasLtPointerMode_t mode = CUBLASLT_POINTER_MODE_DEVICE;
    desc.set(CUBLASLT_MATMUL_DESC_POINTER_MODE, mode, "POINTER_MODE");
  }
  const cublasLtEpilogue_t epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
  desc.set(CUBLASLT_MATMUL_DESC_EPILOGUE, epilogue, "EPILOGUE");
  if (bias) {
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_POINTER, bias, "BIAS_POINTER");
    desc.set(CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, static_cast<int32_t>(bias_type), "BIAS_DATA_TYPE");
  }

  // Column-major shapes: cuBLAS A is (k x m) = (K x N) stored, B is (k x n) = (K x M), C/D are (m x n) = (N x M).
  MatrixLayout la, lb, lc;
  check_cublas(cublasLtMatrixLayoutCreate(&la.l, type_a, K, N, K), "A layout");
  check_cublas(cublasLtMatrixLayoutCreate(&lb.l, type_b, K, M, K), "B layout");
  check_cublas(cublasLtMatrixLayoutCreate(&lc.l, out_type, N, M, N), "C/D layout");

  Preference pref;
  check_cublas(cublasLtMatmulPreferenceCreate(&pref.p), "cublasLtMatmulPreferenceCreate");
  const size_t lt_workspace_bytes = kCublasWorkspaceBytes;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, lt_workspace_bytes, "MAX_WORKSPACE_BYTES");
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, alignment_of(lt_a), "MIN_ALIGNMENT_A_BYTES");
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, alignment_of(lt_b), "MIN_ALIGNMENT_B_BYTES");
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, alignment_of(g.out), "MIN_ALIGNMENT_C_BYTES");
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, alignment_of(g.out), "MIN_ALIGNMENT_D_BYTES");

  const cublasLtHandle_t handle = lt_handle();
  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  const cublasStatus_t status =
      cublasLtMatmulAlgoGetHeuristic(handle, desc.d, la.l, lb.l, lc.l, lc.l, pref.p, 1, &heuristic, &found);
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || (status == CUBLAS_STATUS_SUCCESS && found == 0))
    throw Error(who + "cuBLASLt " + std::to_string(cublasLtGetVersion()) + " has no " + core::gemm_path_name(path) +
                " algorithm for A " + g.a.describe() + " x B " + g.b.describe() + ", " + out_name(g.out_type) +
                " output" + (bias ? " with bias" : "") + (g.accumulate ? ", accumulate" : "") + " on " + sm_name(sm));
  check_cublas(status, "cublasLtMatmulAlgoGetHeuristic");

  const void* alpha = device_alpha_beta ? static_cast<const void*>(device_alpha_beta) : &host_alpha;
  const void* beta = device_alpha_beta ? static_cast<const void*>(device_alpha_beta + 1) : &host_beta;
  check_cublas(cublasLtMatmul(handle, desc.d, alpha, lt_a, la.l, lt_b, lb.l, beta, g.out, lc.l, g.out, lc.l,
                              &heuristic.algo, ws + w.cublas, lt_workspace_bytes, stream),
               "cublasLtMatmul");
}

}  // namespace nibble::core::cuda
