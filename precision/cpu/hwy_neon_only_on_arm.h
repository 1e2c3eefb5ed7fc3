// Included first (before hwy/foreach_target.h) by the Highway kernels that keep arrays of vectors: SVE's sizeless
// vector types cannot be array elements, so ARM builds compile those kernels for NEON only
// (scripts/arm_check.sh). Where SVE is chosen, their dispatch takes the static target, NEON, with the same bits.
// Nothing changes on x86. (No include guard needed: the definition is guarded.)
#if defined(__aarch64__) && !defined(HWY_DISABLED_TARGETS)
#define HWY_DISABLED_TARGETS (HWY_SVE | HWY_SVE2 | HWY_SVE_256 | HWY_SVE2_128)
#endif
