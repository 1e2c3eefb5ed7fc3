#pragma once
// The packed layout of the BF16 GEMM's fma32 form (gemm_bf16.cpp), shared by the kernels that read it: the
// AVX-512 one in gemm_bf16.cpp and the Highway one in gemm_bf16_lanes.cpp. A holds rows of kLdaF floats,
// B panels of kNr columns as (k, column) floats, each k-pair in vdpbf16ps's order (odd k first).
#include <cstdint>

namespace nibble::core::cpu {

constexpr int kNr = 32;               // columns of B per packed panel (two zmm of 16 floats)
constexpr int64_t kKcMax = 1024;      // K per block (a multiple of 32)
constexpr int64_t kLdaF = kKcMax + 16;  // packed A row stride in floats; +64 B keeps rows off 4 KiB aliasing

}  // namespace nibble::core::cpu
