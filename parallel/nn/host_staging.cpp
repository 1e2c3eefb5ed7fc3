#include "parallel/nn/host_staging.h"

#include "parallel/nn/torch_collectives.h"
#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

bool needs_staging(const torch::Tensor& t, const Communicator& comm) {
  return !t.device().is_cpu() && !comm.moves_device_buffers();
}

// Pinned memory makes the device<->host copies DMA transfers; contiguous so the backend sees one buffer.
torch::Tensor host_copy(const torch::Tensor& t, bool copy_in) {
  const auto options = t.options().device(torch::kCPU).pinned_memory(true);
  return copy_in ? t.to(options, /*non_blocking=*/false, /*copy=*/true, torch::MemoryFormat::Contiguous)
                 : torch::empty(t.sizes(), options);
}

}  // namespace

HostStaged::HostStaged(torch::Tensor tensor, bool copy_in, const Communicator& comm)
    : tensor_(std::move(tensor)), staged_(needs_staging(tensor_, comm)) {
  host_ = staged_ ? host_copy(tensor_, copy_in) : tensor_;
}

void HostStaged::copy_out() {
  if (staged_) tensor_.copy_(host_);
}

TensorSendRecv::TensorSendRecv(Communicator& comm, const torch::Tensor& send, int dst, torch::Tensor recv, int src,
                               int tag, const std::string& what)
    : recv_(std::move(recv)) {
  if (!send.is_contiguous() || !recv_.is_contiguous())
    throw InvalidArgument(what + ": send_recv needs contiguous tensors");
  send_ = needs_staging(send, comm) ? host_copy(send, /*copy_in=*/true) : send;
  recv_buffer_ = needs_staging(recv_, comm) ? host_copy(recv_, /*copy_in=*/false) : recv_;
  work_ = comm.send_recv_async(
      ConstView{send_.data_ptr(), static_cast<size_t>(send_.numel()), dtype_of_tensor(send_, what)}, dst,
      View{recv_buffer_.data_ptr(), static_cast<size_t>(recv_buffer_.numel()), dtype_of_tensor(recv_buffer_, what)},
      src, tag);
}

void TensorSendRecv::wait() {
  work_.wait();
  if (recv_buffer_.data_ptr() != recv_.data_ptr()) recv_.copy_(recv_buffer_);
}

}  // namespace nibble::parallel::nn
