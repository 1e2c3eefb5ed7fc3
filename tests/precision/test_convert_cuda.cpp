// The CUDA conversion kernels against the CPU kernels, bit for bit. Exits 77 (a CTest skip, never a pass)
// when there is no CUDA device, as on the machines this project is developed and CI-tested on.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <vector>

#include "precision/convert.h"
#include "precision/cuda/convert_cuda.h"

namespace nibble::precision {
namespace {

template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t n) {
    void* p = nullptr;
    cuda::check_cuda(cudaMalloc(&p, n * sizeof(T) + 16), "cudaMalloc");
    ptr = static_cast<T*>(p);
  }
  ~DeviceBuffer() { cudaFree(ptr); }
};

TEST(ConvertCuda, EqualsCpuBitForBit) {
  const size_t n = 1 << 20;
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  DeviceBuffer<float> dx(n);
  DeviceBuffer<uint8_t> dcodes(2 * n);
  DeviceBuffer<uint32_t> dstatus(1);
  cuda::check_cuda(cudaMemcpy(dx.ptr, x.data(), n * 4, cudaMemcpyHostToDevice), "copy in");
  for (const Format fmt : {formats::kE4M3, formats::kE5M2, formats::kE2M1, make_exmy(5, 6)}) {
    for (Rounding rounding : {Rounding::kNearestEven, Rounding::kStochastic}) {
      EncodeOptions opt;
      opt.rounding = rounding;
      opt.seed = 42;
      std::vector<uint8_t> cpu(encoded_bytes(fmt, n)), gpu(encoded_bytes(fmt, n));
      encode_f32(x.data(), n, fmt, opt, cpu.data());
      cuda::check_cuda(cudaMemset(dstatus.ptr, 0, 4), "memset");
      cuda::encode_f32(dx.ptr, n, fmt, opt, dcodes.ptr, dstatus.ptr, nullptr);
      cuda::check_cuda(cudaMemcpy(gpu.data(), dcodes.ptr, gpu.size(), cudaMemcpyDeviceToHost), "copy out");
      uint32_t status = 0;
      cuda::check_cuda(cudaMemcpy(&status, dstatus.ptr, 4, cudaMemcpyDeviceToHost), "status");
      EXPECT_EQ(status, 0u);
      EXPECT_EQ(cpu, gpu);
    }
  }
}

}  // namespace
}  // namespace nibble::precision

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("SKIPPED: no CUDA device on this machine; the CUDA kernels were compiled and linked only.\n");
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
