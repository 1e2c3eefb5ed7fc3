#pragma once
// The MPI backend's host-staged path for device tensors (DESIGN.md: "MPI (CPU tensors, and a host-staged path for
// CUDA tensors)"). MPI here is not assumed CUDA-aware, so a CUDA tensor is copied to host memory, communicated,
// and (for outputs) copied back. CPU tensors pass through untouched: host() is the tensor itself (zero copy).
// NCCL is the fast path for CUDA tensors; this one makes every collective work on any rank, slowly.
// No GPU exists on the machines this project is developed on: the device branch is compiled, not run here.
#include <torch/torch.h>

namespace nibble::parallel::nn {

class HostStaged {
 public:
  // copy_in: the collective reads the tensor (inputs, in-place buffers); false for pure outputs.
  HostStaged(torch::Tensor tensor, bool copy_in);
  bool staged() const { return !tensor_.device().is_cpu(); }
  torch::Tensor& host() { return host_; }
  // After the collective: writes the host values back to the device tensor (no-op for CPU tensors).
  void copy_out();

 private:
  torch::Tensor tensor_, host_;
};

}  // namespace nibble::parallel::nn
