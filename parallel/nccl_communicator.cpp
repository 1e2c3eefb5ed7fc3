// NCCL backend (see parallel/nccl_communicator.h). COMPILE-CHECKED ONLY on this project's GPU-less machines:
// it is built and linked with warnings as errors; tests/parallel/test_nccl_communicator.cpp exercises it on GPUs.
#include "parallel/nccl_communicator.h"

#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "precision/error.h"

namespace nibble::parallel {
namespace {

void check_cuda(cudaError_t rc, const char* call) {
  if (rc != cudaSuccess) throw Error(std::string("nibble.parallel: ") + call + " failed: " + cudaGetErrorString(rc));
}

// ncclInProgress is not an error for a nonblocking communicator: the caller polls (wait_ready).
bool nccl_ok(ncclResult_t rc) {
  return rc == ncclSuccess || rc == ncclInProgress;
}

void check_nccl(ncclResult_t rc, const char* call, ncclComm_t comm = nullptr) {
  if (nccl_ok(rc)) return;
  std::string detail = ncclGetErrorString(rc);
  if (comm != nullptr) {
    const char* last = ncclGetLastError(comm);
    if (last != nullptr && *last != '\0') detail += " (" + std::string(last) + ")";
  }
  throw Error(std::string("nibble.parallel: ") + call + " failed: " + detail);
}

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::kFloat32:
      return ncclFloat32;
    case DType::kFloat64:
      return ncclFloat64;
    case DType::kInt32:
      return ncclInt32;
    case DType::kInt64:
      return ncclInt64;
    case DType::kUInt8:
      return ncclUint8;
    case DType::kBFloat16:
      return ncclBfloat16;
  }
  return ncclFloat32;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kAvg:
      return ncclAvg;
  }
  return ncclSum;
}

const char* at(const void* base, size_t elements, DType t) {
  return static_cast<const char*>(base) + elements * element_size(t);
}
char* at(void* base, size_t elements, DType t) {
  return static_cast<char*>(base) + elements * element_size(t);
}

std::vector<size_t> displacements(std::span<const size_t> counts) {
  std::vector<size_t> d(counts.size(), 0);
  if (!counts.empty()) std::exclusive_scan(counts.begin(), counts.end(), d.begin(), size_t{0});
  return d;
}

bool all_equal(std::span<const size_t> v) {
  for (size_t x : v)
    if (x != v[0]) return false;
  return true;
}

class NcclPending final : public detail::PendingOp {
 public:
  NcclPending(ncclComm_t comm, cudaEvent_t event) : comm_(comm), event_(event) {}
  ~NcclPending() override {
    if (event_ != nullptr) cudaEventDestroy(event_);
  }
  bool poll() override {
    ncclResult_t async = ncclSuccess;
    check_nccl(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError", comm_);
    if (!nccl_ok(async)) check_nccl(async, "NCCL operation", comm_);
    const cudaError_t rc = cudaEventQuery(event_);
    if (rc == cudaSuccess) return true;
    if (rc != cudaErrorNotReady) check_cuda(rc, "cudaEventQuery");
    return false;
  }
  // The kernels of a collective whose peer never comes spin forever: abort the communicator to free the GPU.
  // The group is then failed (Communicator semantics), and ~NcclCommunicator skips ncclCommDestroy.
  void on_timeout() override { ncclCommAbort(comm_); }

 private:
  ncclComm_t comm_;
  cudaEvent_t event_;
};

// An operation on host buffers, run by the MPI group: its Work polled as this communicator's pending op (the MPI
// Work has the same deadline and names the same group if it times out first).
class HostGroupPending final : public detail::PendingOp {
 public:
  explicit HostGroupPending(Work work) : work_(std::move(work)) {}
  bool poll() override { return work_.test(); }

 private:
  Work work_;
};

std::unique_ptr<detail::PendingOp> on_mpi(Work work) { return std::make_unique<HostGroupPending>(std::move(work)); }

}  // namespace

NcclCommunicator::NcclCommunicator(MpiCommunicator& group, cudaStream_t stream)
    : NcclCommunicator(group, stream, CommOptions{group.deadline()}) {}

NcclCommunicator::NcclCommunicator(MpiCommunicator& group, cudaStream_t stream, const CommOptions& options)
    : Communicator(group.name(), "nccl", group.rank(), group.size(), group.world_rank(), group.members(), options),
      host_(group),
      stream_(stream) {
  // The id travels over the group's MPI communicator, bounded by its deadline (llm.c's bootstrap, per group).
  ncclUniqueId id{};
  if (group.rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  group.broadcast(std::span<uint8_t>(reinterpret_cast<uint8_t*>(&id), sizeof id), 0);

  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // calls return ncclInProgress instead of blocking: initialisation honours the deadline
  check_nccl(ncclCommInitRankConfig(&comm_, group.size(), id, group.rank(), &config), "ncclCommInitRankConfig");
  wait_ready("ncclCommInitRankConfig");

  if (stream_ == nullptr) {
    check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreateWithFlags");
    owns_stream_ = true;
  }
  check_cuda(cudaMalloc(reinterpret_cast<void**>(&scratch_), sizeof(int)), "cudaMalloc");
  check_cuda(cudaEventCreateWithFlags(&producer_done_, cudaEventDisableTiming), "cudaEventCreateWithFlags");
}

NcclCommunicator::~NcclCommunicator() {
  if (comm_ != nullptr && !failed()) {
    ncclCommFinalize(comm_);  // flushes outstanding operations
    ncclResult_t state = ncclInProgress;
    const auto start = Clock::now();
    while (state == ncclInProgress && Clock::now() - start < deadline()) ncclCommGetAsyncError(comm_, &state);
    if (state == ncclSuccess)
      ncclCommDestroy(comm_);
    else
      ncclCommAbort(comm_);
  }
  if (scratch_ != nullptr) cudaFree(scratch_);
  if (producer_done_ != nullptr) cudaEventDestroy(producer_done_);
  if (owns_stream_) cudaStreamDestroy(stream_);
}

void NcclCommunicator::wait_ready(const char* what) {
  const auto start = Clock::now();
  for (;;) {
    ncclResult_t state = ncclSuccess;
    check_nccl(ncclCommGetAsyncError(comm_, &state), "ncclCommGetAsyncError", comm_);
    if (state == ncclSuccess) return;
    if (state != ncclInProgress) check_nccl(state, what, comm_);
    if (Clock::now() - start >= deadline()) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
      throw Error("nibble.parallel: " + std::string(what) + " on " + describe() + " timed out on world rank " +
                  std::to_string(world_rank()) + " (rank " + std::to_string(rank()) + " of " + std::to_string(size()) +
                  ") after " + std::to_string(deadline().count()) + " ms at step " + std::to_string(current_step()) +
                  "; the NCCL communicator was aborted");
    }
  }
}

bool NcclCommunicator::on_host(const char* op,
                               std::initializer_list<std::pair<const void*, size_t>> buffers) const {
  int host = 0, device = 0;
  for (const auto& [p, count] : buffers) {
    if (count == 0) continue;
    cudaPointerAttributes attributes{};
    const cudaError_t rc = cudaPointerGetAttributes(&attributes, p);
    if (rc != cudaSuccess) cudaGetLastError();  // clear the sticky error: an unregistered host pointer
    const bool on_device = rc == cudaSuccess && (attributes.type == cudaMemoryTypeDevice ||
                                                 attributes.type == cudaMemoryTypeManaged);
    (on_device ? device : host) += 1;
  }
  if (host > 0 && device > 0)
    throw InvalidArgument(std::string("nibble.parallel: ") + op + " on " + describe() + ": " + std::to_string(host) +
                          " buffer(s) in host memory and " + std::to_string(device) + " on the device; one "
                          "operation moves host buffers (over MPI) or device buffers (over NCCL), not both");
  return device == 0;
}

template <class Enqueue>
std::unique_ptr<detail::PendingOp> NcclCommunicator::launch(const char* op, Enqueue&& enqueue) {
  if (comm_ == nullptr)
    throw Error(std::string("nibble.parallel: ") + op + " on " + describe() +
                ": the NCCL communicator was aborted after an earlier timeout");
  // The NCCL stream is non-blocking: it waits for the buffers' producer stream (set_producer_stream).
  check_cuda(cudaEventRecord(producer_done_, producer_), "cudaEventRecord (producer stream)");
  check_cuda(cudaStreamWaitEvent(stream_, producer_done_, 0), "cudaStreamWaitEvent (producer stream)");
  check_nccl(ncclGroupStart(), "ncclGroupStart");
  try {
    enqueue();
  } catch (...) {
    ncclGroupEnd();
    throw;
  }
  check_nccl(ncclGroupEnd(), op, comm_);
  wait_ready(op);
  cudaEvent_t event = nullptr;
  check_cuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  auto pending = std::make_unique<NcclPending>(comm_, event);
  check_cuda(cudaEventRecord(event, stream_), "cudaEventRecord");
  return pending;
}

std::unique_ptr<detail::PendingOp> NcclCommunicator::do_all_reduce(ConstView in, View out, ReduceOp op) {
  if (on_host("all_reduce", {{in.data, in.count}, {out.data, out.count}}))
    return on_mpi(host_.all_reduce_async(in, out, op));
  return launch("ncclAllReduce", [&] {
    check_nccl(ncclAllReduce(in.data, out.data, out.count, nccl_type(out.dtype), nccl_op(op), comm_, stream_),
               "ncclAllReduce", comm_);
  });
}

std::unique_ptr<detail::PendingOp> NcclCommunicator::do_reduce_scatter(ConstView in, View out, ReduceOp op,
                                                                       std::span<const size_t> counts) {
  if (on_host("reduce_scatter", {{in.data, in.count}, {out.data, out.count}}))
    return on_mpi(host_.reduce_scatter_async(in, out, op, counts));
  const ncclDataType_t t = nccl_type(out.dtype);
  if (all_equal(counts))
    return launch("ncclReduceScatter", [&] {
      check_nccl(ncclReduceScatter(in.data, out.data, out.count, t, nccl_op(op), comm_, stream_), "ncclReduceScatter",
                 comm_);
    });
  // Uneven parts: one ncclReduce per rank (root r receives part r), fused by the group call.
  const std::vector<size_t> displ = displacements(counts);
  return launch("ncclReduce (uneven reduce_scatter)", [&] {
    for (int r = 0; r < size(); ++r) {
      const size_t i = static_cast<size_t>(r);
      check_nccl(ncclReduce(at(in.data, displ[i], in.dtype), r == rank() ? out.data : nullptr, counts[i], t,
                            nccl_op(op), r, comm_, stream_),
                 "ncclReduce", comm_);
    }
  });
}

std::unique_ptr<detail::PendingOp> NcclCommunicator::do_all_gather(ConstView in, View out,
                                                                   std::span<const size_t> counts) {
  if (on_host("all_gather", {{in.data, in.count}, {out.data, out.count}}))
    return on_mpi(host_.all_gather_async(in, out, counts));
  const ncclDataType_t t = nccl_type(out.dtype);
  if (all_equal(counts))
    return launch("ncclAllGather", [&] {  // in place when in == out + rank * count, which NCCL accepts
      check_nccl(ncclAllGather(in.data, out.data, in.count, t, comm_, stream_), "ncclAllGather", comm_);
    });
  // Uneven parts: one ncclBroadcast per rank into its block, fused by the group call.
  const std::vector<size_t> displ = displacements(counts);
  return launch("ncclBroadcast (uneven all_gather)", [&] {
    for (int r = 0; r < size(); ++r) {
      const size_t i = static_cast<size_t>(r);
      void* block = at(out.data, displ[i], out.dtype);
      check_nccl(ncclBroadcast(r == rank() ? in.data : block, block, counts[i], t, r, comm_, stream_), "ncclBroadcast",
                 comm_);
    }
  });
}

std::unique_ptr<detail::PendingOp> NcclCommunicator::do_all_to_all(ConstView in, View out,
                                                                   std::span<const size_t> send_counts,
                                                                   std::span<const size_t> recv_counts) {
  if (on_host("all_to_all", {{in.data, in.count}, {out.data, out.count}}))
    return on_mpi(host_.all_to_all_async(in, out, send_counts, recv_counts));
  const ncclDataType_t t = nccl_type(out.dtype);
  const std::vector<size_t> sd = displacements(send_counts), rd = displacements(recv_counts);
  return launch("ncclSend/ncclRecv (all_to_all)", [&] {
    for (int r = 0; r < size(); ++r) {
      const size_t i = static_cast<size_t>(r);
      check_nccl(ncclSend(at(in.data, sd[i], in.dtype), send_counts[i], t, r, comm_, stream_), "ncclSend", comm_);
      check_nccl(ncclRecv(at(out.data, rd[i], out.dtype), recv_counts[i], t, r, comm_, stream_), "ncclRecv", comm_);
    }
  });
}

std::unique_ptr<detail::PendingOp> NcclCommunicator::do_broadcast(View buf, int root) {
  if (on_host("broadcast", {{buf.data, buf.count}})) return on_mpi(host_.broadcast_async(buf, root));
  return launch("ncclBroadcast", [&] {
    check_nccl(ncclBroadcast(buf.data, buf.data, buf.count, nccl_type(buf.dtype), root, comm_, stream_),
               "ncclBroadcast", comm_);
  });
}

// NCCL point-to-point has no tags: device messages between two ranks match in issue order (host ones keep their
// tag on the MPI group).
std::unique_ptr<detail::PendingOp> NcclCommunicator::do_send(ConstView buf, int peer, int tag) {
  if (on_host("send", {{buf.data, buf.count}})) return on_mpi(host_.send_async(buf, peer, tag));
  return launch("ncclSend", [&] {
    check_nccl(ncclSend(buf.data, buf.count, nccl_type(buf.dtype), peer, comm_, stream_), "ncclSend", comm_);
  });
}

std::unique_ptr<detail::PendingOp> NcclCommunicator::do_recv(View buf, int peer, int tag) {
  if (on_host("recv", {{buf.data, buf.count}})) return on_mpi(host_.recv_async(buf, peer, tag));
  return launch("ncclRecv", [&] {
    check_nccl(ncclRecv(buf.data, buf.count, nccl_type(buf.dtype), peer, comm_, stream_), "ncclRecv", comm_);
  });
}

// Paired inside one group call, so a ring of send_recv cannot deadlock on ordering.
std::unique_ptr<detail::PendingOp> NcclCommunicator::do_send_recv(ConstView send, int dst, View recv, int src,
                                                                  int tag) {
  if (on_host("send_recv", {{send.data, send.count}, {recv.data, recv.count}}))
    return on_mpi(host_.send_recv_async(send, dst, recv, src, tag));
  return launch("ncclSend/ncclRecv", [&] {
    check_nccl(ncclSend(send.data, send.count, nccl_type(send.dtype), dst, comm_, stream_), "ncclSend", comm_);
    check_nccl(ncclRecv(recv.data, recv.count, nccl_type(recv.dtype), src, comm_, stream_), "ncclRecv", comm_);
  });
}

std::unique_ptr<detail::PendingOp> NcclCommunicator::do_barrier() {
  return launch("ncclAllReduce (barrier)", [&] {
    check_nccl(ncclAllReduce(scratch_, scratch_, 1, ncclInt32, ncclSum, comm_, stream_), "ncclAllReduce", comm_);
  });
}

GroupFactory nccl_groups() {
  return [](MpiCommunicator& group, const CommOptions& options) -> std::unique_ptr<Communicator> {
    return std::make_unique<NcclCommunicator>(group, nullptr, options);
  };
}

}  // namespace nibble::parallel
