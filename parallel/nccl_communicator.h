#pragma once
// The NCCL backend: device buffers, operations enqueued on one CUDA stream, completion polled through a CUDA
// event and ncclCommGetAsyncError against the deadline; at the deadline the NCCL communicator is aborted
// (ncclCommAbort) so no kernel keeps spinning on a peer that will never come. Host buffers (the step's flags,
// amaxes, norms, a pipeline's agreement) go to the MPI group the communicator was made from, so a Mesh group
// takes both kinds; an operation with one buffer on the host and the other on the device is refused.
// NCCL point-to-point has no tags and a send blocks its stream until the peer receives: p2p whose order differs
// between the two ranks (a pipeline's background sends) must use the MPI group (Mesh::host_group).
//
// COMPILE-CHECKED ONLY: this project has no GPU. The code is built and linked against NCCL with warnings as
// errors, and tests/parallel/test_nccl_communicator.cpp runs it where GPUs exist (it exits 77, a CTest skip,
// where they do not). See docs/PARALLEL.md.
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <initializer_list>
#include <utility>

#include "parallel/communicator.h"
#include "parallel/mesh.h"
#include "parallel/mpi_communicator.h"

namespace nibble::parallel {

class NcclCommunicator final : public Communicator {
 public:
  // Collective over the ranks of `group` (same membership, same name): group rank 0 creates the NCCL unique id
  // (ncclGetUniqueId), a deadline-bound broadcast over `group` shares it, then every rank joins with
  // ncclCommInitRankConfig on a nonblocking communicator (so initialisation is deadline-bound too). The CUDA
  // device must already be bound (nibble::parallel::init() binds local rank -> device). `stream` = nullptr
  // creates a non-blocking stream owned by this communicator.
  explicit NcclCommunicator(MpiCommunicator& group, cudaStream_t stream = nullptr);
  NcclCommunicator(MpiCommunicator& group, cudaStream_t stream, const CommOptions& options);
  ~NcclCommunicator() override;

  ncclComm_t handle() const { return comm_; }
  bool moves_device_buffers() const override { return true; }
  cudaStream_t stream() const { return stream_; }
  // The stream whose queued work produced the buffers the next operations read (default: cudaStreamLegacy, the
  // legacy default stream, which also orders after every blocking stream and pageable cudaMemcpy). Each
  // operation first makes this communicator's non-blocking stream wait for it, so a collective never reads a
  // buffer its producer is still writing (cuda-review.md §4; PyTorch's ProcessGroupNCCL::syncStream).
  void set_producer_stream(cudaStream_t stream) { producer_ = stream; }

 protected:
  std::unique_ptr<detail::PendingOp> do_all_reduce(ConstView in, View out, ReduceOp op) override;
  std::unique_ptr<detail::PendingOp> do_reduce_scatter(ConstView in, View out, ReduceOp op,
                                                       std::span<const size_t> counts) override;
  std::unique_ptr<detail::PendingOp> do_all_gather(ConstView in, View out, std::span<const size_t> counts) override;
  std::unique_ptr<detail::PendingOp> do_all_to_all(ConstView in, View out, std::span<const size_t> send_counts,
                                                   std::span<const size_t> recv_counts) override;
  std::unique_ptr<detail::PendingOp> do_broadcast(View buf, int root) override;
  std::unique_ptr<detail::PendingOp> do_send(ConstView buf, int peer, int tag) override;
  std::unique_ptr<detail::PendingOp> do_recv(View buf, int peer, int tag) override;
  std::unique_ptr<detail::PendingOp> do_send_recv(ConstView send, int dst, View recv, int src, int tag) override;
  std::unique_ptr<detail::PendingOp> do_barrier() override;

 private:
  template <class Enqueue>
  std::unique_ptr<detail::PendingOp> launch(const char* op, Enqueue&& enqueue);
  void wait_ready(const char* what);  // a nonblocking NCCL call returned ncclInProgress
  // Where an operation's buffers live: all on the device (NCCL), all in host memory (the MPI group), or
  // InvalidArgument naming the op when they are mixed. Empty buffers go with the others.
  bool on_host(const char* op, std::initializer_list<std::pair<const void*, size_t>> buffers) const;

  MpiCommunicator& host_;  // the group this communicator was made from: host buffers go there
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  bool owns_stream_ = false;
  int* scratch_ = nullptr;  // one device int: the barrier's all-reduce
  cudaStream_t producer_ = cudaStreamLegacy;
  cudaEvent_t producer_done_ = nullptr;  // recorded on producer_ before each operation
};

// A Mesh on NCCL: Mesh(shape, model, options, nccl_groups()) creates one NcclCommunicator per group (tp, cp, dp,
// pp, dp_cp, tp_dp_cp, in that order on every rank) from the group's MPI communicator, each on its own stream,
// with the Mesh's deadline. The unique id of each group travels over its MPI group (as in the constructor
// above) rather than ncclCommSplit of a world NCCL communicator: no world communicator has to exist, and every
// step is deadline-bound. COMPILE- AND LINK-CHECKED ONLY (no GPU here).
GroupFactory nccl_groups();

}  // namespace nibble::parallel
