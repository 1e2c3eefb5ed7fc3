#pragma once
// Output buffers of the CPU quantizers are usually fresh allocations (torch::empty), so the first write to
// every 4 KiB page faults into the kernel, which zeroes it: for a 64 MiB copy that is 16384 faults and on
// this class of machine about as long as the quantization itself. Asking for transparent huge pages on the
// buffer's 2 MiB-aligned interior (Linux, THP mode "madvise") makes that 32 faults. Only a hint: contents,
// results and ownership are unchanged, and it is skipped where unsupported or the buffer is small.
#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace nibble::precision::cpu {

inline void advise_huge_pages(const void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t{2} << 20;
  if (!p || bytes < 2 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // a hint: errors ignored
#else
  (void)p, (void)bytes;
#endif
}

}  // namespace nibble::precision::cpu
