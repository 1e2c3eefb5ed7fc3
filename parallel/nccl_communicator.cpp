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

}  // namespace

NcclCommunicator::NcclCommunicator(MpiCommunicator& group, cudaStream_t stream)
    : NcclCommunicator(group, stream, CommOptions{group.deadline()}) {}

NcclCommunicator::NcclCommunicator(MpiCommunicator& group, cudaStream_t stream, const CommOptions& options)
    : Communicator(group.name(), "nccl", group.rank(), group.size(), group.world_rank(), group.members(), options),
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

void NcclCommunicator::require_device(const void* p, size_t count, const char* op, const char* which) const {
  if (count == 0) return;
  cudaPointerAttributes attributes{};
  const cudaError_t rc = cudaPointerGetAttributes(&attributes, p);
  if (rc != cudaSuccess) cudaGetLastError();
  if (rc != cudaSuccess || (attributes.type != cudaMemoryTypeDevice && attributes.type != cudaMemoryTypeManaged))
    throw InvalidArgument(std::string("nibble.parallel: ") + op + " on " + describe() + ": the " + which +
                          " is not device memory; an NCCL group moves CUDA buffers (use the MPI group for host "
                          "buffers)");
}

template <class Enqueue>
std::unique_ptr<detail::PendingOp> NcclCommunicator::launch(const char* op, Enqueue&& enqueue) {
  if (comm_ == nullptr)
    throw Error(std::string("nibble.parallel: ") + op + " on " + describe() +
                ": the NCCL communicator was aborted after an earlier timeout");
  // The NCCL stream is non-blocking: it waits for the buffers' producer only if told (set_producer_stream).
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
  require_device(in.data, in.count, "all_reduce", "input");
  require_device(out.data, out.count, "all_reduce", "output");
  return launch("ncclAllReduce", [&] {
    check_nccl(ncclAllReduce(in.data, out.data, out.count, nccl_type(out.dtype), nccl_op(op), comm_, stream_),
               "ncclAllReduce", comm_);
  });
}

std::unique_ptr<detail::PendingOp> NcclCommunicator::do_reduce_scatter(ConstView in, View out, ReduceOp op,
                                                                       std::span<const size_t> counts) {
  require_device(in.data, in.count, "reduce_scatter", "input");
  require_device(out.data, out.count, "reduce_scatter", "output");
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
  require_device(in.data, in.count, "all_gather", "input");
  require_device(out.data, out.count, "all_gather", "output");
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
  require_device(in.data, in.count, "all_to_all", "input");
  require_device(out.data, out.count, "all_to_all", "output");
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
  require_device(buf.data, buf.count, "broadcast", "buffer");
  return launch("ncclBroadcast", [&] {
    check_nccl(ncclBroadcast(buf.data, buf.data, buf.count, nccl_type(buf.dtype), root, comm_, stream_),
               "ncclBroadcast", comm_);
  });
}

// NCCL point-to-point has no tags: messages between two ranks match in issue order.
std::unique_ptr<detail::PendingOp> NcclCommunicator::do_send(ConstView buf, int peer, int /*tag*/) {
  require_device(buf.data, buf.count, "send", "buffer");
  return launch("ncclSend", [&] {
    check_nccl(ncclSend(buf.data, buf.count, nccl_type(buf.dtype), peer, comm_, stream_), "ncclSend", comm_);
  });
}

std::unique_ptr<detail::PendingOp> NcclCommunicator::do_recv(View buf, int peer, int /*tag*/) {
  require_device(buf.data, buf.count, "recv", "buffer");
  return launch("ncclRecv", [&] {
    check_nccl(ncclRecv(buf.data, buf.count, nccl_type(buf.dtype), peer, comm_, stream_), "ncclRecv", comm_);
  });
}

// Paired inside one group call, so a ring of send_recv cannot deadlock on ordering.
std::unique_ptr<detail::PendingOp> NcclCommunicator::do_send_recv(ConstView send, int dst, View recv, int src,
                                                                  int /*tag*/) {
  require_device(send.data, send.count, "send_recv", "send buffer");
  require_device(recv.data, recv.count, "send_recv", "receive buffer");
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
