// nibble's cuBLASLt GEMM paths on the GPU (core/cuda/gemm_cublaslt.h): C = A·Bᵀ with BF16 output, TFLOP/s per
// operand pair and shape. Operands are quantized once on the CPU (the tested reference quantizer) and copied
// to the device; only the GEMM call is timed (CUDA events over --iters calls after 3 warm-ups), including
// what the path does on the device: scale swizzles, FP4 decode for the emulated paths, alpha. Pairs the GPU
// has no path for are listed as n/a with check_gemm's reason. The baseline, torch's bf16 matmul on the same
// GPU and shapes, is measured by scripts/gpu_check.sh in the same run; this program asserts nothing.
//
//   bench_gemm_cuda [--shapes 4096x4096x4096,8192x8192x8192] [--iters 20]
// Output: one "RESULT a=.. b=.. M=.. N=.. K=.. path=\"..\" ms=.. tflops=.." line per measured case.
// Exit code: 0, 1 if a GEMM failed, 77 without a CUDA device.
#include <cuda_runtime_api.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/cuda/gemm_cublaslt.h"
#include "precision/cuda/convert_cuda.h"
#include "precision/cuda/device_buffer.h"
#include "precision/error.h"
#include "precision/format.h"
#include "precision/quantize.h"

namespace {

namespace nc = nibble::core::cuda;
namespace np = nibble::precision;

void check(cudaError_t err, const char* what) {
  np::cuda::check_cuda(err, what);
}

using np::cuda::DeviceBuffer;

struct Shape {
  int64_t m, n, k;
};

// Deterministic values in [-1, 1) with a spread of magnitudes across rows (splitmix64; fast enough for 64M).
std::vector<float> random_matrix(int64_t rows, int64_t cols, uint64_t seed) {
  std::vector<float> x(static_cast<size_t>(rows * cols));
  uint64_t s = seed;
  for (size_t i = 0; i < x.size(); ++i) {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
    x[i] = u * (1.0f + static_cast<float>((i / static_cast<size_t>(cols)) % 7));
  }
  return x;
}

// One operand: quantized on the host (rowwise copy, K contiguous), then mirrored on the device.
struct Operand {
  np::QuantizeOptions options;
  np::CopyLayout layout;
  float amax = 0;
  std::unique_ptr<DeviceBuffer> data, scale, global_amax;

  Operand(const std::string& scheme, int64_t rows, int64_t k, uint64_t seed) {
    np::Format element;
    options = np::default_options(np::parse_scheme(scheme, &element));
    options.element = element;
    layout = np::copy_layout(options, rows, k);
    const std::vector<float> x = random_matrix(rows, k, seed);
    std::vector<uint8_t> h_data(static_cast<size_t>(layout.rows * layout.data_row_bytes));
    std::vector<uint8_t> h_scale(static_cast<size_t>(layout.scale_rows * layout.scale_cols *
                                                     (layout.scale_storage == np::ScaleStorage::kFloat32 ? 4 : 1)));
    std::vector<uint8_t> mask(layout.has_mask ? static_cast<size_t>(rows * k) : 0);
    np::QuantizedCopy host{h_data.data(), h_scale.data(), &amax, layout.has_mask ? mask.data() : nullptr};
    np::quantize(np::QuantizeInput{x.data(), np::InputType::kFloat32, rows, k, scheme}, options, &host, nullptr);
    data = std::make_unique<DeviceBuffer>(h_data.size());
    scale = std::make_unique<DeviceBuffer>(h_scale.size());
    global_amax = std::make_unique<DeviceBuffer>(sizeof(float));
    check(cudaMemcpy(data->ptr, h_data.data(), h_data.size(), cudaMemcpyHostToDevice), "copy data");
    check(cudaMemcpy(scale->ptr, h_scale.data(), h_scale.size(), cudaMemcpyHostToDevice), "copy scale");
    check(cudaMemcpy(global_amax->ptr, &amax, sizeof(float), cudaMemcpyHostToDevice), "copy amax");
  }

  nc::DeviceOperand device() const {
    nc::DeviceOperand op;
    op.options = options;
    op.layout = layout;
    op.copy.data = static_cast<uint8_t*>(data->ptr);
    op.copy.scale = scale->ptr;
    op.copy.global_amax = static_cast<float*>(global_amax->ptr);
    return op;
  }
};

std::vector<Shape> parse_shapes(const std::string& text) {
  std::vector<Shape> shapes;
  std::stringstream list(text);
  std::string item;
  while (std::getline(list, item, ',')) {
    Shape s{};
    if (std::sscanf(item.c_str(), "%ldx%ldx%ld", &s.m, &s.n, &s.k) != 3 || s.m <= 0 || s.n <= 0 || s.k <= 0) {
      throw nibble::InvalidArgument("bench_gemm_cuda: shape '" + item + "' is not MxNxK with positive sizes");
    }
    shapes.push_back(s);
  }
  return shapes;
}

// Times one pair at one shape; returns false if the GEMM failed (n/a pairs return true).
bool run_case(const std::string& a_scheme, const std::string& b_scheme, const Shape& s, int sm, int iters) {
  const std::string label =
      a_scheme + " x " + b_scheme + " " + std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k);
  // Validate on fake aligned addresses first, so a pair the GPU has no path for costs no quantization.
  nc::GemmArgs probe;
  {
    np::Format element;
    probe.a.options = np::default_options(np::parse_scheme(a_scheme, &element));
    probe.a.options.element = element;
    probe.b.options = np::default_options(np::parse_scheme(b_scheme, &element));
    probe.b.options.element = element;
    probe.a.layout = np::copy_layout(probe.a.options, s.m, s.k);
    probe.b.layout = np::copy_layout(probe.b.options, s.n, s.k);
    probe.a.copy = {reinterpret_cast<uint8_t*>(uintptr_t{1} << 32), reinterpret_cast<void*>(uintptr_t{2} << 32),
                    reinterpret_cast<float*>(uintptr_t{3} << 32), nullptr};
    probe.b.copy = {reinterpret_cast<uint8_t*>(uintptr_t{4} << 32), reinterpret_cast<void*>(uintptr_t{5} << 32),
                    reinterpret_cast<float*>(uintptr_t{6} << 32), nullptr};
    probe.out = reinterpret_cast<void*>(uintptr_t{7} << 32);
    probe.out_type = nc::OutputType::kBFloat16;
    probe.name = label;
    try {
      nc::check_gemm(probe, sm);
    } catch (const nibble::InvalidArgument& e) {
      std::printf("n/a    %-40s on sm_%d: %s\n", label.c_str(), sm, e.what());
      return true;
    }
  }
  try {
    const Operand a(a_scheme, s.m, s.k, 11), b(b_scheme, s.n, s.k, 23);
    nc::GemmArgs g;
    g.a = a.device();
    g.b = b.device();
    g.out_type = nc::OutputType::kBFloat16;
    g.name = label;
    DeviceBuffer out(static_cast<size_t>(s.m * s.n) * 2);
    g.out = out.ptr;
    const nibble::core::GemmPath path = nc::check_gemm(g, sm);
    const size_t ws_bytes = nc::gemm_workspace_bytes(g, sm);
    DeviceBuffer ws(ws_bytes);
    cudaStream_t stream = nullptr;
    check(cudaStreamCreate(&stream), "cudaStreamCreate");
    cudaEvent_t start = nullptr, stop = nullptr;
    check(cudaEventCreate(&start), "cudaEventCreate");
    check(cudaEventCreate(&stop), "cudaEventCreate");
    for (int i = 0; i < 3; ++i) nc::gemm(g, ws.ptr, ws_bytes, stream);
    check(cudaStreamSynchronize(stream), "warm-up GEMMs");
    check(cudaEventRecord(start, stream), "cudaEventRecord");
    for (int i = 0; i < iters; ++i) nc::gemm(g, ws.ptr, ws_bytes, stream);
    check(cudaEventRecord(stop, stream), "cudaEventRecord");
    check(cudaEventSynchronize(stop), "timed GEMMs");
    float total_ms = 0;
    check(cudaEventElapsedTime(&total_ms, start, stop), "cudaEventElapsedTime");
    // A sanity look at the output (not a correctness test: tests/core/test_gemm_cuda.cpp is): finite values.
    std::vector<uint16_t> row(static_cast<size_t>(s.n));
    check(cudaMemcpy(row.data(), out.ptr, row.size() * 2, cudaMemcpyDeviceToHost), "copy out");
    int nonfinite = 0;
    for (uint16_t bits : row) nonfinite += std::isfinite(np::decode_scalar(bits, np::formats::kBF16)) ? 0 : 1;
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaStreamDestroy(stream);
    const double ms = total_ms / iters;
    const double tflops =
        2.0 * static_cast<double>(s.m) * static_cast<double>(s.n) * static_cast<double>(s.k) / (ms * 1e-3) / 1e12;
    std::printf("RESULT a=%s b=%s M=%ld N=%ld K=%ld path=\"%s\" ms=%.4f tflops=%.1f%s\n", a_scheme.c_str(),
                b_scheme.c_str(), s.m, s.n, s.k, nibble::core::gemm_path_name(path), ms, tflops,
                nonfinite ? " (non-finite values in row 0!)" : "");
    std::fflush(stdout);
    return true;
  } catch (const std::exception& e) {
    std::printf("FAILED %-40s: %s\n", label.c_str(), e.what());
    cudaGetLastError();
    return false;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string shapes_text = "4096x4096x4096,8192x8192x8192";
  int iters = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--shapes" && i + 1 < argc) {
      shapes_text = argv[++i];
    } else if (arg == "--iters" && i + 1 < argc) {
      iters = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: %s [--shapes MxNxK[,MxNxK...]] [--iters N]\n", argv[0]);
      return 2;
    }
  }
  int devices = 0;
  const cudaError_t probe = cudaGetDeviceCount(&devices);
  if (probe == cudaErrorNoDevice || (probe == cudaSuccess && devices == 0)) {
    std::printf("SKIPPED: no CUDA device\n");
    return 77;
  }
  if (probe != cudaSuccess) {
    std::printf("FAILED: cudaGetDeviceCount: %s\n", cudaGetErrorString(probe));
    return 1;
  }
  try {
    const std::vector<Shape> shapes = parse_shapes(shapes_text);
    if (iters < 1) throw nibble::InvalidArgument("bench_gemm_cuda: --iters must be >= 1");
    const int sm = nc::current_device_sm();
    cudaDeviceProp prop{};
    check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    std::printf("device: %s (sm_%d), %d iterations per case, BF16 output\n", prop.name, sm, iters);
    // Each pair once per shape; the GPU's path for it is whatever core/gemm_path.h chooses.
    const std::vector<std::pair<std::string, std::string>> pairs = {{"fp8_tensor", "fp8_tensor"},
                                                                    {"fp8_block128", "fp8_block128x128"},
                                                                    {"mxfp8", "mxfp8"},
                                                                    {"nvfp4", "nvfp4_2d"},
                                                                    {"mxfp4", "mxfp4"}};
    bool ok = true;
    for (const Shape& s : shapes) {
      for (const auto& [a, b] : pairs) ok = run_case(a, b, s, sm, iters) && ok;
    }
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("FAILED: %s\n", e.what());
    return 1;
  }
}
