#pragma once
// The MPI backend's host-staged path for device tensors (DESIGN.md: "MPI (CPU tensors, and a host-staged path for
// CUDA tensors)"). MPI here is not assumed CUDA-aware, so a CUDA tensor is copied to host memory, communicated,
// and (for outputs) copied back. CPU tensors, and any tensor on a backend that moves device buffers itself
// (NCCL, Communicator::moves_device_buffers), pass through untouched: host() is the tensor itself (zero copy).
// NCCL is the fast path for CUDA tensors; this one makes every collective work on any rank, slowly.
// No GPU exists on the machines this project is developed on: the device branch is compiled, not run here.
#include <torch/torch.h>

#include <string>

#include "parallel/communicator.h"

namespace nibble::parallel::nn {

class HostStaged {
 public:
  // copy_in: the collective reads the tensor (inputs, in-place buffers); false for pure outputs.
  HostStaged(torch::Tensor tensor, bool copy_in, const Communicator& comm);
  bool staged() const { return staged_; }
  // The tensor the communicator reads or writes: a host copy when staged, else the tensor itself.
  torch::Tensor& host() { return host_; }
  // After the collective: writes the host values back to the device tensor (no-op when not staged).
  void copy_out();

 private:
  torch::Tensor tensor_, host_;
  bool staged_ = false;
};

// One paired send/receive of whole tensors (a ring step) on any backend: `send` goes to `dst`, `recv` (same
// element count, contiguous) is filled from `src`. Staged through host memory when needed; the received values
// are in `recv` once wait() returns. The buffers live in this object until then.
class TensorSendRecv {
 public:
  TensorSendRecv() = default;
  TensorSendRecv(Communicator& comm, const torch::Tensor& send, int dst, torch::Tensor recv, int src, int tag,
                 const std::string& what);
  bool pending() const { return work_.pending(); }
  void wait();

 private:
  // Declared before work_ so they outlive it: a destroyed pending Work still waits for its buffers.
  torch::Tensor send_, recv_, recv_buffer_;
  Work work_;
};

}  // namespace nibble::parallel::nn
