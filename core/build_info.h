#pragma once
// What this build of nibble is: its version and what it was compiled with -- for `python -m nibble` and bug
// reports (a CPU path and a GPU path give different numbers, so a report must say which one ran).
#include <string>
#include <vector>

namespace nibble::core {

struct BuildInfo {
  std::string version;                   // the CMake project version
  bool cuda_kernels = false;             // compiled with the CUDA quantizers, GEMMs and optimizer step
  std::string cuda_architectures;        // e.g. "90a;100a" ("" without CUDA)
  std::vector<std::string> cpu_vector_compiled;   // extensions the CPU kernels were compiled for (-march)
  std::vector<std::string> cpu_vector_supported;  // of those and the usual ones, what this CPU has
  std::string compiler;
  std::string cpu_gemm_kernel;  // the CPU GEMM's micro-kernel here (core/cpu/gemm_bf16.h), or why none
};

BuildInfo build_info();

}  // namespace nibble::core
