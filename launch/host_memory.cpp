#include "launch/host_memory.h"

#include <cstdlib>  // defines __GLIBC__ on glibc

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace nibble::launch {

void keep_freed_host_memory() {
#if defined(__GLIBC__)
  // Both are hints: a failure leaves glibc's defaults, which are correct, only slower.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

}  // namespace nibble::launch
