#pragma once
// Whether a GPU test may report "skipped" (exit 77): only on a machine with no GPU. A machine whose GPU CUDA
// cannot use -- a driver too old for this toolkit, a broken install -- must fail, or a GPU node would report
// its whole suite as skipped and never fail (cuda-review.md §0). NIBBLE_REQUIRE_GPU=1 turns every skip into a
// failure (scripts/gpu_check.sh sets it).
#include <cuda_runtime_api.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace nibble::testing {

enum class CudaAvailability { kUsable, kNoGpu, kBroken };

inline bool path_exists(const char* p) {
  struct stat st;
  return stat(p, &st) == 0;
}

// Prints why when the answer is not kUsable.
inline CudaAvailability cuda_availability() {
  int devices = 0;
  const cudaError_t rc = cudaGetDeviceCount(&devices);
  if (rc == cudaSuccess && devices > 0) return CudaAvailability::kUsable;
  const char* require = std::getenv("NIBBLE_REQUIRE_GPU");
  const bool required = require && std::strcmp(require, "1") == 0;
  // No NVIDIA kernel driver and no device node: a machine without a GPU.
  const bool driver_absent = !path_exists("/proc/driver/nvidia/version") && !path_exists("/dev/nvidia0");
  if (!required && (rc == cudaErrorNoDevice || (rc == cudaSuccess && devices == 0) || driver_absent)) {
    std::printf("no CUDA device on this machine (%s)\n", rc == cudaSuccess ? "0 devices" : cudaGetErrorString(rc));
    return CudaAvailability::kNoGpu;
  }
  std::fprintf(stderr, "CUDA cannot use this machine's GPU: cudaGetDeviceCount gave %s (%s), %d device(s)%s\n",
               cudaGetErrorName(rc), cudaGetErrorString(rc), devices,
               required ? "; NIBBLE_REQUIRE_GPU=1 forbids a skip" : "; a driver is present, so this is a failure");
  return CudaAvailability::kBroken;
}

}  // namespace nibble::testing
