#include "core/cpu_allocation_tracker.h"

#include <c10/core/CPUAllocator.h>

#include <atomic>
#include <cstring>
#include <mutex>

namespace nibble::core {
namespace {

std::atomic<int64_t> g_current{0}, g_peak{0};

void raise_peak(int64_t now) {
  int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

// Each allocation carries its size in a header before the data, so the pointer handed out is its own context
// (a "simple" data pointer: raw_allocate/raw_deallocate, which oneDNN and others call, require that). The header
// is 64 bytes, torch's CPU alignment, so the data stays aligned as torch's allocator aligns it.
constexpr size_t kHeader = 64;
c10::Allocator* g_base = nullptr;  // torch's own CPU allocator, which holds the memory

void free_tracked(void* data) {
  if (data == nullptr) return;
  char* block = static_cast<char*>(data) - kHeader;
  int64_t bytes = 0;
  std::memcpy(&bytes, block, sizeof bytes);
  g_current.fetch_sub(bytes, std::memory_order_relaxed);
  g_base->raw_deallocate(block);
}

class CountingCpuAllocator final : public c10::Allocator {
 public:
  c10::DataPtr allocate(size_t n) override {
    char* block = static_cast<char*>(g_base->raw_allocate(n + kHeader));
    const auto bytes = static_cast<int64_t>(n);
    std::memcpy(block, &bytes, sizeof bytes);
    raise_peak(g_current.fetch_add(bytes, std::memory_order_relaxed) + bytes);
    void* data = block + kHeader;
    return {data, data, &free_tracked, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_tracked; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

std::once_flag g_installed;
std::atomic<bool> g_tracking{false};

}  // namespace

void track_cpu_allocations() {
  std::call_once(g_installed, [] {
    // Leaked on purpose: tensors freed during exit still call into it.
    g_base = c10::GetCPUAllocator();
    static auto* counting = new CountingCpuAllocator();
    c10::SetCPUAllocator(counting, /*priority=*/100);  // above torch's own registration
    g_tracking = true;
  });
}

bool tracking_cpu_allocations() { return g_tracking.load(); }

AllocationStats cpu_allocation_stats() { return {g_current.load(), g_peak.load()}; }

void reset_cpu_allocation_peak() { g_peak.store(g_current.load()); }

}  // namespace nibble::core
