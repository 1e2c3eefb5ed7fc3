// simd_targets.h over Highway's targets.h. Compiled in nibble_precision_hwy (no -march=native), so
// HWY_TARGETS here is the kernels' set.
#include "precision/cpu/simd_targets.h"

#include <hwy/highway.h>
#include <hwy/targets.h>

namespace nibble::precision::simd {

int64_t compiled_targets() { return HWY_TARGETS; }

std::vector<int64_t> runnable_targets() {
  hwy::SetSupportedTargetsForTest(0);  // drop any forcing: what the CPU really has
  std::vector<int64_t> out;
  for (int64_t t = compiled_targets() & hwy::SupportedTargets(); t != 0; t &= t - 1) out.push_back(t & -t);
  return out;
}

void force_target(int64_t target) { hwy::SetSupportedTargetsForTest(target); }

const char* target_name(int64_t target) { return hwy::TargetName(target); }

int64_t current_target() {
  // Dispatch takes the best (lowest) bit of the supported (or forced) compiled targets.
  const int64_t supported = hwy::SupportedTargets() & compiled_targets();
  return supported & -supported;
}

}  // namespace nibble::precision::simd
