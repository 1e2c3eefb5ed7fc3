#include "parallel/nn/host_staging.h"

namespace nibble::parallel::nn {

HostStaged::HostStaged(torch::Tensor tensor, bool copy_in) : tensor_(std::move(tensor)) {
  if (!staged()) {
    host_ = tensor_;
    return;
  }
  // Pinned memory makes the device<->host copies DMA transfers; contiguous so MPI sees one buffer.
  const auto options = tensor_.options().device(torch::kCPU).pinned_memory(true);
  host_ = copy_in ? tensor_.to(options, /*non_blocking=*/false, /*copy=*/true, torch::MemoryFormat::Contiguous)
                  : torch::empty(tensor_.sizes(), options);
}

void HostStaged::copy_out() {
  if (staged()) tensor_.copy_(host_);
}

}  // namespace nibble::parallel::nn
