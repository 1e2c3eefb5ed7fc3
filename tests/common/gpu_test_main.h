#pragma once
#include <gtest/gtest.h>

#include <cstdio>

#include "tests/common/cuda_availability.h"

namespace nibble::testing {

// main() of a GoogleTest GPU suite: 77 (a CTest skip, never a pass) on a machine without a GPU, saying what was
// only compiled (`what`), 1 when CUDA cannot use the GPU there is, else the suite's result.
inline int gpu_test_main(int argc, char** argv, const char* what) {
  const CudaAvailability cuda = cuda_availability();
  if (cuda == CudaAvailability::kBroken) return 1;
  if (cuda == CudaAvailability::kNoGpu) {
    std::printf("SKIPPED: no CUDA device on this machine (compiled and linked only: %s).\n", what);
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

}  // namespace nibble::testing
