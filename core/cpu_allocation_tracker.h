#pragma once
// Live bytes and their peak of torch's CPU allocations, measured at the allocator (not RSS, which counts freed
// pages the C library keeps, the binary and every library): track_cpu_allocations() wraps torch's CPU
// allocator (c10::SetCPUAllocator) with one that counts each allocation's size until its deleter runs. What it
// does not see: memory outside torch tensors (MKL/oneDNN scratch, MPI buffers, OpenMP stacks), pinned host
// memory (its own allocator) and tensors allocated before it was installed (their frees are not counted
// either). Process-wide, like the allocator it wraps; nothing numeric depends on it.
#include <cstdint>

namespace nibble::core {

// Installs the counting allocator once per process (later calls do nothing); thread-safe.
void track_cpu_allocations();
bool tracking_cpu_allocations();

struct AllocationStats {
  int64_t current = 0;  // bytes of live tracked allocations
  int64_t peak = 0;     // the most live at once since the last reset
};
AllocationStats cpu_allocation_stats();
void reset_cpu_allocation_peak();  // peak = current

}  // namespace nibble::core
