#pragma once
// Communicator: the collectives and point-to-point calls of one process group, on typed buffers, each with a
// deadline. The contract (docs/PARALLEL.md):
//  - Buffers are typed spans (or View/ConstView built from them): counts are elements, never bytes.
//  - Every rank of the group issues the same calls in the same order (NCCL/MPI semantics).
//  - Every call has a deadline (CommOptions::deadline, default 300 s). A peer that never arrives produces a
//    nibble::Error naming the group, the op, this rank (world and group rank), the step and how long it
//    waited, instead of a hang. After a timeout the group is unusable: every later call on it throws at once
//    (a collective abandoned on some ranks cannot be matched again), so the caller should report and exit.
//  - Argument mistakes (sizes, dtypes, roots, peers, overlapping buffers) are nibble::InvalidArgument,
//    detected on the calling rank before anything is sent, so a mistake that every rank makes fails
//    everywhere at once instead of desynchronising the group.
//  - The *_async forms return a Work; the blocking forms are the async form plus wait(). The deadline counts
//    from the start of the call. Buffers must stay alive and untouched until the Work completes.
// A Communicator is used by one thread at a time; separate Communicators may be used from separate threads.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "parallel/dtype.h"

namespace nibble::parallel {

using Clock = std::chrono::steady_clock;
inline constexpr std::chrono::milliseconds kDefaultDeadline{300'000};

struct CommOptions {
  std::chrono::milliseconds deadline = kDefaultDeadline;  // per call; must be > 0
  // After a timeout, ask the group's other members who is alive (MPI backend) and name the silent ones in the
  // error. For processes that end after a timeout (nibble-train): the probe's messages may still be in flight
  // when a peer that did not time out frees the communicator, and Open MPI can deliver a message for a freed
  // communicator to a new one that reuses its context id, so a process that carries on after a timeout (the
  // communicator tests) must leave it off.
  bool liveness_probe = false;
};

// The training step named in error messages. Process-wide on purpose: a deadline error can come from any group,
// deep inside an autograd node that knows no trainer, and must still say which step hung; one process is one
// rank of one job, so its step is a fact of the process. Diagnostics only: nothing numeric reads it.
void set_step(int64_t step);
int64_t current_step();  // -1 until set_step is first called

// Typed spans to views (the element count and dtype travel together).
template <Element T>  // T may be const
ConstView const_view(std::span<T> s) {
  return ConstView{s.data(), s.size(), dtype_of<T>};
}
template <Element T>
View view(std::span<T> s) {
  static_assert(!std::is_const_v<T>, "an output buffer must be writable");
  return View{s.data(), s.size(), dtype_of<T>};
}
// A bfloat16 buffer held as raw uint16_t (precision/'s convention), relabelled for communication.
inline std::span<BFloat16> as_bf16(std::span<uint16_t> s) {
  return {reinterpret_cast<BFloat16*>(s.data()), s.size()};
}
inline std::span<const BFloat16> as_bf16(std::span<const uint16_t> s) {
  return {reinterpret_cast<const BFloat16*>(s.data()), s.size()};
}

namespace detail {

// What a group is, shared by its Communicator and the Work it hands out (so a Work can name the group).
struct GroupState {
  std::string name;
  const char* backend = "";
  int rank = 0;
  int size = 1;
  int world_rank = 0;
  std::vector<int> members;  // world rank of each group rank
  std::chrono::milliseconds deadline = kDefaultDeadline;
  bool failed = false;
  std::string failure;           // the timeout that broke the group
  // After a timeout: which members answer a liveness probe within the given time (a sentence for the error),
  // or "" where the backend has none. Set by the backend (MpiCommunicator).
  std::function<std::string(std::chrono::milliseconds)> probe_silent;
  std::string describe() const;  // "group 'tp' (world ranks [2, 3])"
};

// What an operation is, kept as plain fields (the message is only formatted if the operation fails).
struct OpDesc {
  enum class Shape : uint8_t {
    kAllReduce,
    kReduceScatter,
    kAllGather,
    kAllToAll,
    kBroadcast,
    kSend,
    kRecv,
    kSendRecv,
    kBarrier
  };
  const char* op = "";  // "all_reduce"
  Shape shape = Shape::kBarrier;
  ReduceOp reduce = ReduceOp::kSum;
  DType dtype = DType::kFloat32, dtype2 = DType::kFloat32;
  size_t count = 0, count2 = 0;  // input/output (or send/receive) elements
  int peer = -1, peer2 = -1, tag = 0;
  bool uneven = false;
};
// "sum of 1024 float32", "12 float32 from rank 1 (world rank 1), tag 5", ...
std::string describe_op(const OpDesc& op, const GroupState& group);

// One backend operation in flight.
class PendingOp {
 public:
  virtual ~PendingOp() = default;
  // True once the operation has completed (and its finishing work, e.g. the division of an average, is done).
  // Throws nibble::Error when the backend reports a failure.
  virtual bool poll() = 0;
  // Called once when the deadline passes, before the timeout error is thrown.
  virtual void on_timeout() {}
};

}  // namespace detail

// An operation in flight. Move-only. Destroying a pending Work waits for it (a destructor cannot throw: a
// failure there is printed to stderr), because the backend may still be reading or writing its buffers.
class Work {
 public:
  Work() = default;
  Work(Work&&) noexcept = default;
  Work& operator=(Work&& other) noexcept;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  ~Work();

  bool pending() const { return op_ != nullptr; }
  // Polls once: true when complete. Throws on a backend failure or once the deadline has passed.
  bool test();
  // Blocks until complete; throws nibble::Error on a backend failure or when the deadline passes.
  void wait();

 private:
  friend class Communicator;
  Work(std::shared_ptr<detail::GroupState> group, std::unique_ptr<detail::PendingOp> op, const detail::OpDesc& desc);
  [[noreturn]] void fail_timeout();
  [[noreturn]] void fail_backend(const std::exception& e);

  std::shared_ptr<detail::GroupState> group_;
  std::unique_ptr<detail::PendingOp> op_;
  detail::OpDesc desc_;
  int64_t step_ = -1;
  Clock::time_point start_{};
  std::chrono::milliseconds deadline_{0};
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  const std::string& name() const { return group_->name; }
  const char* backend() const { return group_->backend; }
  int rank() const { return group_->rank; }
  int size() const { return group_->size; }
  int world_rank() const { return group_->world_rank; }
  const std::vector<int>& members() const { return group_->members; }  // world rank of each group rank
  std::chrono::milliseconds deadline() const { return group_->deadline; }
  void set_deadline(std::chrono::milliseconds deadline);
  bool failed() const { return group_->failed; }
  // Whether this backend reads and writes CUDA device buffers itself (NCCL). One that does not (MPI: not assumed
  // CUDA-aware) needs a device tensor staged through host memory first (parallel/nn/host_staging.h). Every
  // backend takes host buffers (NCCL hands them to the MPI group it was made from).
  virtual bool moves_device_buffers() const { return false; }
  std::string describe() const { return group_->describe(); }

  // ---- runtime-typed forms (what the typed templates and the Python bindings call) -------------------------
  // all_reduce: out = op over ranks of in (in.data == out.data: in place).
  Work all_reduce_async(ConstView in, View out, ReduceOp op);
  // reduce_scatter: rank r receives op over ranks of in[displ(r) : displ(r) + counts[r]]. counts empty = equal
  // parts (in.count = size() * out.count).
  Work reduce_scatter_async(ConstView in, View out, ReduceOp op, std::span<const size_t> counts = {});
  // all_gather: out = concatenation over ranks of in; counts[r] = elements rank r contributes (empty = equal).
  // In place when `in` is exactly this rank's block of `out`.
  Work all_gather_async(ConstView in, View out, std::span<const size_t> counts = {});
  // all_to_all: block j of in goes to rank j; block i of out comes from rank i. Counts empty = equal blocks.
  Work all_to_all_async(ConstView in, View out, std::span<const size_t> send_counts = {},
                        std::span<const size_t> recv_counts = {});
  Work broadcast_async(View buf, int root);
  Work send_async(ConstView buf, int peer, int tag = 0);
  // recv: the message must have exactly buf.count elements.
  Work recv_async(View buf, int peer, int tag = 0);
  // Send to `dst` and receive from `src` as one paired operation (ring exchanges, pipeline p2p).
  Work send_recv_async(ConstView send, int dst, View recv, int src, int tag = 0);
  Work barrier_async();

  void all_reduce(ConstView in, View out, ReduceOp op) { all_reduce_async(in, out, op).wait(); }
  void reduce_scatter(ConstView in, View out, ReduceOp op, std::span<const size_t> counts = {}) {
    reduce_scatter_async(in, out, op, counts).wait();
  }
  void all_gather(ConstView in, View out, std::span<const size_t> counts = {}) {
    all_gather_async(in, out, counts).wait();
  }
  void all_to_all(ConstView in, View out, std::span<const size_t> send_counts = {},
                  std::span<const size_t> recv_counts = {}) {
    all_to_all_async(in, out, send_counts, recv_counts).wait();
  }
  void broadcast(View buf, int root) { broadcast_async(buf, root).wait(); }
  void send(ConstView buf, int peer, int tag = 0) { send_async(buf, peer, tag).wait(); }
  void recv(View buf, int peer, int tag = 0) { recv_async(buf, peer, tag).wait(); }
  void send_recv(ConstView send, int dst, View recv, int src, int tag = 0) {
    send_recv_async(send, dst, recv, src, tag).wait();
  }
  void barrier() { barrier_async().wait(); }

  // ---- typed forms: T is deduced from the output span, so input and output element types must agree -------
  template <Element T>
  void all_reduce(std::span<T> data, ReduceOp op) {
    all_reduce(view(data), view(data), op);
  }
  template <Element T>
  void all_reduce(std::type_identity_t<std::span<const T>> in, std::span<T> out, ReduceOp op) {
    all_reduce(const_view(in), view(out), op);
  }
  template <Element T>
  Work all_reduce_async(std::span<T> data, ReduceOp op) {
    return all_reduce_async(view(data), view(data), op);
  }
  template <Element T>
  void reduce_scatter(std::type_identity_t<std::span<const T>> in, std::span<T> out, ReduceOp op,
                      std::span<const size_t> counts = {}) {
    reduce_scatter(const_view(in), view(out), op, counts);
  }
  template <Element T>
  Work reduce_scatter_async(std::type_identity_t<std::span<const T>> in, std::span<T> out, ReduceOp op,
                            std::span<const size_t> counts = {}) {
    return reduce_scatter_async(const_view(in), view(out), op, counts);
  }
  template <Element T>
  void all_gather(std::type_identity_t<std::span<const T>> in, std::span<T> out, std::span<const size_t> counts = {}) {
    all_gather(const_view(in), view(out), counts);
  }
  template <Element T>
  Work all_gather_async(std::type_identity_t<std::span<const T>> in, std::span<T> out,
                        std::span<const size_t> counts = {}) {
    return all_gather_async(const_view(in), view(out), counts);
  }
  template <Element T>
  void all_to_all(std::type_identity_t<std::span<const T>> in, std::span<T> out,
                  std::span<const size_t> send_counts = {}, std::span<const size_t> recv_counts = {}) {
    all_to_all(const_view(in), view(out), send_counts, recv_counts);
  }
  template <Element T>
  void broadcast(std::span<T> data, int root) {
    broadcast(view(data), root);
  }
  template <Element T>  // T may be const
  void send(std::span<T> data, int peer, int tag = 0) {
    send(const_view(data), peer, tag);
  }
  template <Element T>
  void recv(std::span<T> data, int peer, int tag = 0) {
    recv(view(data), peer, tag);
  }
  template <Element T>
  void send_recv(std::type_identity_t<std::span<const T>> send_data, int dst, std::span<T> recv_data, int src,
                 int tag = 0) {
    send_recv(const_view(send_data), dst, view(recv_data), src, tag);
  }

  static constexpr int kMaxTag = 32767;  // the largest tag MPI guarantees

 protected:
  Communicator(std::string name, const char* backend, int rank, int size, int world_rank, std::vector<int> members,
               const CommOptions& options);

  // Backends. Arguments arrive validated: dtypes agree, counts fit the group (the count vectors are always
  // filled, one entry per rank), roots/peers/tags are in range, avg only on floating types, and buffers
  // overlap only in the in-place forms documented above. Return nullptr when the operation completed
  // synchronously.
  virtual std::unique_ptr<detail::PendingOp> do_all_reduce(ConstView in, View out, ReduceOp op) = 0;
  virtual std::unique_ptr<detail::PendingOp> do_reduce_scatter(ConstView in, View out, ReduceOp op,
                                                               std::span<const size_t> counts) = 0;
  virtual std::unique_ptr<detail::PendingOp> do_all_gather(ConstView in, View out, std::span<const size_t> counts) = 0;
  virtual std::unique_ptr<detail::PendingOp> do_all_to_all(ConstView in, View out, std::span<const size_t> send_counts,
                                                           std::span<const size_t> recv_counts) = 0;
  virtual std::unique_ptr<detail::PendingOp> do_broadcast(View buf, int root) = 0;
  virtual std::unique_ptr<detail::PendingOp> do_send(ConstView buf, int peer, int tag) = 0;
  virtual std::unique_ptr<detail::PendingOp> do_recv(View buf, int peer, int tag) = 0;
  virtual std::unique_ptr<detail::PendingOp> do_send_recv(ConstView send, int dst, View recv, int src, int tag) = 0;
  virtual std::unique_ptr<detail::PendingOp> do_barrier() = 0;

  const detail::GroupState& state() const { return *group_; }
  detail::GroupState& group_state() { return *group_; }  // a backend sets its liveness probe here

 private:
  Work start(std::unique_ptr<detail::PendingOp> op, const detail::OpDesc& desc);
  void check_usable(const char* op) const;

  std::shared_ptr<detail::GroupState> group_;
};

}  // namespace nibble::parallel
