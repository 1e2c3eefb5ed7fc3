#pragma once
// The command line shared by the benchmarks that force Highway targets (bench_gemm_targets,
// bench_codec_targets): `[rounds] [--all]`, and the targets they run.
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "precision/cpu/simd_targets.h"

namespace nibble::bench {

struct TargetRounds {
  int rounds;  // interleaved rounds; each contender keeps its best
  bool all;    // the emulated targets too (EMU128, SCALAR: slow enough to dominate a run)
};

inline TargetRounds parse_target_rounds(int argc, char** argv, int default_rounds) {
  TargetRounds r{default_rounds, false};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--all") == 0)
      r.all = true;
    else
      r.rounds = std::max(1, std::atoi(argv[i]));
  }
  return r;
}

// The Highway targets this CPU runs, best first; the emulated ones only with `all`.
inline std::vector<int64_t> bench_targets(bool all) {
  std::vector<int64_t> out;
  for (const int64_t t : precision::simd::runnable_targets()) {
    const std::string name = precision::simd::target_name(t);
    if (all || (name != "EMU128" && name != "SCALAR")) out.push_back(t);
  }
  return out;
}

}  // namespace nibble::bench
