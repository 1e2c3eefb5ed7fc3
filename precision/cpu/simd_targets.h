#pragma once
// Highway's run-time target selection for the vector kernels (encode_rne_lanes.cpp and those that follow it),
// without Highway's headers: a file compiled with -march=native cannot include them (Highway 1.0 rejects a
// baseline it knows but does not build for, such as AVX3_DL under GCC 12), and tests and benchmarks are.
// Targets are Highway's HWY_* bits (one bit each; lower bit = better target).
#include <cstdint>
#include <vector>

namespace nibble::precision::simd {

// The targets the kernels were compiled for: x86 SSSE3, SSE4, AVX2, AVX-512 (AVX3) and the scalar fallback.
int64_t compiled_targets();

// The compiled targets this CPU can run, best first. Drops any forcing (force_target(0)).
std::vector<int64_t> runnable_targets();

// Makes every kernel dispatch to `target` (one of runnable_targets()); 0 goes back to the best supported.
void force_target(int64_t target);

// Highway's name of a target ("AVX3", "AVX2", "SSE4", ...).
const char* target_name(int64_t target);

// The target the kernels dispatch to now.
int64_t current_target();

}  // namespace nibble::precision::simd
