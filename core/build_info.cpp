#include "core/build_info.h"

#include <exception>

#include "core/cpu/gemm_bf16.h"

#ifndef NIBBLE_VERSION
#define NIBBLE_VERSION "unknown"
#endif
#ifndef NIBBLE_CUDA_ARCHITECTURES
#define NIBBLE_CUDA_ARCHITECTURES ""
#endif

namespace nibble::core {

BuildInfo build_info() {
  BuildInfo b;
  b.version = NIBBLE_VERSION;
#if NIBBLE_WITH_CUDA
  b.cuda_kernels = true;
  b.cuda_architectures = NIBBLE_CUDA_ARCHITECTURES;
#endif
  // This file is compiled with the CPU kernels' flags (nibble_cpu_arch), so the macros say what they use.
#if defined(__AVX512F__)
  b.cpu_vector_compiled.push_back("avx512f");
#endif
#if defined(__AVX512BW__)
  b.cpu_vector_compiled.push_back("avx512bw");
#endif
#if defined(__AVX512VL__)
  b.cpu_vector_compiled.push_back("avx512vl");
#endif
#if defined(__AVX512FP16__)
  b.cpu_vector_compiled.push_back("avx512fp16");
#endif
#if defined(__AVX2__)
  b.cpu_vector_compiled.push_back("avx2");
#endif
#if defined(__FMA__)
  b.cpu_vector_compiled.push_back("fma");
#endif
#if defined(__ARM_NEON)
  b.cpu_vector_compiled.push_back("neon");
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) b.cpu_vector_supported.push_back("avx512f");
  if (__builtin_cpu_supports("avx512bw")) b.cpu_vector_supported.push_back("avx512bw");
  if (__builtin_cpu_supports("avx512vl")) b.cpu_vector_supported.push_back("avx512vl");
  if (__builtin_cpu_supports("avx512fp16")) b.cpu_vector_supported.push_back("avx512fp16");
  if (__builtin_cpu_supports("avx2")) b.cpu_vector_supported.push_back("avx2");
  if (__builtin_cpu_supports("fma")) b.cpu_vector_supported.push_back("fma");
#endif
  try {
    b.cpu_gemm_kernel = cpu::gemm_kernel_name(cpu::gemm_default_kernel());
  } catch (const std::exception& e) {  // an invalid NIBBLE_CPU_GEMM_KERNEL: the report says so
    b.cpu_gemm_kernel = std::string("none: ") + e.what();
  }
#if defined(__clang__)
  b.compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  b.compiler = "gcc " __VERSION__;
#endif
  return b;
}

}  // namespace nibble::core
