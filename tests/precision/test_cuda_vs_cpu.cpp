// The CUDA kernels (conversion, rowwise 1-D quantizers) against the CPU kernels, bit for bit. Exits 77 (a CTest skip, never a pass)
// when there is no CUDA device, as on the machines this project is developed and CI-tested on.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "precision/convert.h"
#include "precision/cuda/convert_cuda.h"
#include "precision/cuda/quantize_cuda.h"
#include "precision/quantize.h"
#include "tests/common/gpu_test_main.h"

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

// The raw-pointer quantizer on a rowwise copy (core/'s tests/core/test_quantize_cuda.cpp covers every copy of
// every scheme through torch tensors).
TEST(QuantizeCuda, RowwiseEqualsCpuBitForBit) {
  const int64_t rows = 96, cols = 200;  // 200 is not a multiple of any block: partial last blocks
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 2.0f);
  std::vector<float> x(rows * cols);
  for (auto& v : x) v = normal(rng);
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  DeviceBuffer<float> dx(x.size());
  DeviceBuffer<uint32_t> dnan(1);
  cuda::check_cuda(cudaMemcpy(dx.ptr, x.data(), x.size() * 4, cudaMemcpyHostToDevice), "copy in");
  for (const char* name : {"fp8_tensor", "fp8_block128", "fp8_block16", "fp8_block128x128", "mxfp8", "nvfp4",
                           "nvfp4_2d", "mxfp4"}) {
    for (Rounding rounding : {Rounding::kNearestEven, Rounding::kStochastic}) {
      Format element;
      QuantizeOptions o = default_options(parse_scheme(name, &element));
      o.element = element;
      o.rounding = rounding;
      o.seed = 3;
      const CopyLayout L = copy_layout(o, rows, cols);
      const size_t scale_bytes =
          static_cast<size_t>(L.scale_rows * L.scale_cols * (L.scale_storage == ScaleStorage::kFloat32 ? 4 : 1));
      std::vector<uint8_t> cpu_data(L.rows * L.data_row_bytes), gpu_data(cpu_data.size());
      std::vector<uint8_t> cpu_scale(scale_bytes), gpu_scale(scale_bytes);
      float cpu_amax = 0;
      QuantizedCopy cpu{cpu_data.data(), cpu_scale.data(), &cpu_amax, nullptr};
      quantize(QuantizeInput{x.data(), InputType::kFloat32, rows, cols, "x"}, o, &cpu, nullptr);
      EXPECT_EQ(cpu_amax, amax) << name;
      DeviceBuffer<uint8_t> ddata(cpu_data.size()), dscale(scale_bytes);
      DeviceBuffer<float> dglobal(1);
      cuda::CopyJob job;
      job.src = dx.ptr;
      job.rows = rows;
      job.cols = cols;
      job.options = o;
      job.layout = L;
      job.out = QuantizedCopy{ddata.ptr, dscale.ptr, dglobal.ptr, nullptr};
      job.copy_amax = amax;
      job.value_for_inf = FLT_MAX;
      job.sr_offset = o.offset;
      job.sr = sr_copy_indexing(o.sr_index, false, rows, cols);
      DeviceBuffer<uint8_t> scratch(cuda::copy_scratch_bytes(job) + 1);
      cuda::quantize_copy(job, scratch.ptr, dnan.ptr, nullptr);
      cuda::check_cuda(cudaMemcpy(gpu_data.data(), ddata.ptr, gpu_data.size(), cudaMemcpyDeviceToHost), "data");
      cuda::check_cuda(cudaMemcpy(gpu_scale.data(), dscale.ptr, scale_bytes, cudaMemcpyDeviceToHost), "scale");
      EXPECT_EQ(cpu_data, gpu_data) << name;
      EXPECT_EQ(cpu_scale, gpu_scale) << name;
    }
  }
}

}  // namespace
}  // namespace nibble::precision

int main(int argc, char** argv) {
  return nibble::testing::gpu_test_main(argc, argv, "the CUDA kernels");
}
