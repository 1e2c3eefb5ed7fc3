// MPI backend: nonblocking MPI calls completed by polling (see parallel/mpi_communicator.h).
#include "parallel/mpi_communicator.h"

#include <array>
#include <atomic>
#include <climits>
#include <cstring>
#include <functional>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

#include "precision/error.h"

namespace nibble::parallel {
namespace {

std::atomic<int64_t> g_created{0};

std::string mpi_error_string(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(text, static_cast<size_t>(len));
}

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::kFloat32:
      return MPI_FLOAT;
    case DType::kFloat64:
      return MPI_DOUBLE;
    case DType::kInt32:
      return MPI_INT32_T;
    case DType::kInt64:
      return MPI_INT64_T;
    case DType::kUInt8:
      return MPI_UINT8_T;
    case DType::kBFloat16:
      return MPI_UINT16_T;  // moved as 16-bit words; reduced by the ops below
  }
  return MPI_DATATYPE_NULL;
}

// MPI has no bfloat16: sums and maxima are computed in float and rounded to nearest even, one pair at a time
// (the same rounding per partial sum a bfloat16 accumulator has).
void bf16_sum(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const BFloat16*>(in);
  auto* b = static_cast<BFloat16*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = float_to_bf16(bf16_to_float(a[i]) + bf16_to_float(b[i]));
}
void bf16_max(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const BFloat16*>(in);
  auto* b = static_cast<BFloat16*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = bf16_to_float(a[i]), y = bf16_to_float(b[i]);
    if (x != x)
      b[i] = a[i];  // NaN wins
    else if (!(y != y) && x > y)
      b[i] = a[i];
  }
}

struct Bf16Ops {
  MPI_Op sum = MPI_OP_NULL;
  MPI_Op max = MPI_OP_NULL;
};
const Bf16Ops& bf16_ops() {
  static const Bf16Ops ops = [] {
    Bf16Ops o;
    check_mpi(MPI_Op_create(&bf16_sum, 1, &o.sum), "MPI_Op_create(bfloat16 sum)");
    check_mpi(MPI_Op_create(&bf16_max, 1, &o.max), "MPI_Op_create(bfloat16 max)");
    return o;
  }();
  return ops;
}

MPI_Op mpi_op(ReduceOp op, DType t) {
  if (t == DType::kBFloat16) return op == ReduceOp::kMax ? bf16_ops().max : bf16_ops().sum;
  return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM;  // avg = sum, then divided
}

template <class T>
void divide(T* x, size_t n, T d) {
  for (size_t i = 0; i < n; ++i) x[i] /= d;
}

// out /= group size, after the sum of an avg has arrived.
std::function<void()> divider(View out, int size) {
  return [out, size] {
    switch (out.dtype) {
      case DType::kFloat32:
        divide(static_cast<float*>(out.data), out.count, static_cast<float>(size));
        break;
      case DType::kFloat64:
        divide(static_cast<double*>(out.data), out.count, static_cast<double>(size));
        break;
      case DType::kBFloat16: {
        auto* x = static_cast<BFloat16*>(out.data);
        for (size_t i = 0; i < out.count; ++i) x[i] = float_to_bf16(bf16_to_float(x[i]) / static_cast<float>(size));
        break;
      }
      default:
        break;  // avg of integers is rejected before the call
    }
  };
}

void copy(View out, ConstView in) {
  if (out.data != in.data && in.bytes() > 0) std::memcpy(out.data, in.data, in.bytes());
}

// Which two-rank all-reduces exchange whole buffers (one message latency) instead of libnbc's Rabenseifner
// (two half-size messages, half the reduction work): all up to 256 KiB, except just above Open MPI's default
// shared-memory eager limit (4 KiB), where a whole buffer needs the rendezvous protocol but halves do not.
bool exchange_all_reduce(size_t bytes) {
  return bytes <= 2048 || (bytes > 8192 && bytes <= 256 * 1024);
}

template <class T>
T add_wrapping(T a, T b) {
  if constexpr (std::is_integral_v<T>)
    return static_cast<T>(static_cast<std::make_unsigned_t<T>>(a) + static_cast<std::make_unsigned_t<T>>(b));
  else
    return a + b;
}

template <class T>
void combine(T* out, const T* mine, size_t n, ReduceOp op) {
  if (op == ReduceOp::kMax) {
    for (size_t i = 0; i < n; ++i) out[i] = mine[i] > out[i] ? mine[i] : out[i];
  } else {
    for (size_t i = 0; i < n; ++i) out[i] = add_wrapping(mine[i], out[i]);
  }
}

// out = mine (op) out: the local half of a two-rank reduce-scatter (both operand orders give the same bits:
// the ops are commutative element by element).
void reduce_into(View out, const void* mine, ReduceOp op) {
  switch (out.dtype) {
    case DType::kFloat32:
      combine(static_cast<float*>(out.data), static_cast<const float*>(mine), out.count, op);
      break;
    case DType::kFloat64:
      combine(static_cast<double*>(out.data), static_cast<const double*>(mine), out.count, op);
      break;
    case DType::kInt32:
      combine(static_cast<int32_t*>(out.data), static_cast<const int32_t*>(mine), out.count, op);
      break;
    case DType::kInt64:
      combine(static_cast<int64_t*>(out.data), static_cast<const int64_t*>(mine), out.count, op);
      break;
    case DType::kUInt8:
      combine(static_cast<uint8_t*>(out.data), static_cast<const uint8_t*>(mine), out.count, op);
      break;
    case DType::kBFloat16: {
      int n = static_cast<int>(out.count);  // fits: checked against INT_MAX before the exchange
      (op == ReduceOp::kMax ? bf16_max : bf16_sum)(const_cast<void*>(mine), out.data, &n, nullptr);
      break;
    }
  }
}

class MpiPending final : public detail::PendingOp {
 public:
  std::array<MPI_Request, 2> reqs{MPI_REQUEST_NULL, MPI_REQUEST_NULL};
  int nreq = 0;
  std::vector<int> ints;  // count/displacement arrays of a v-collective: MPI may read them until completion
  std::vector<unsigned char> scratch;  // the peer's buffer in a two-rank all-reduce
  std::function<void()> finish;
  int recv_index = -1;  // a receive whose length is checked against its buffer
  int recv_expected = 0;
  int recv_peer = 0;
  MPI_Datatype recv_type = MPI_DATATYPE_NULL;

  bool poll() override {
    int flag = 0;
    std::array<MPI_Status, 2> status{};
    const int rc = MPI_Testall(nreq, reqs.data(), &flag, status.data());
    if (rc == MPI_ERR_IN_STATUS) {
      for (int i = 0; i < nreq; ++i) {
        const int e = status[static_cast<size_t>(i)].MPI_ERROR;
        if (e == MPI_SUCCESS || e == MPI_ERR_PENDING) continue;
        int cls = 0;
        MPI_Error_class(e, &cls);
        if (i == recv_index && cls == MPI_ERR_TRUNCATE)
          throw Error("the message from rank " + std::to_string(recv_peer) + " is longer than the receive buffer of " +
                      std::to_string(recv_expected) + " elements");
        throw Error(mpi_error_string(e));
      }
    }
    check_mpi(rc, "MPI_Testall");
    if (!flag) return false;
    if (recv_index >= 0) {
      int got = 0;
      check_mpi(MPI_Get_count(&status[static_cast<size_t>(recv_index)], recv_type, &got), "MPI_Get_count");
      if (got != recv_expected)
        throw Error("received " + std::to_string(got) + " elements from rank " + std::to_string(recv_peer) +
                    ", expected " + std::to_string(recv_expected) + " (the receive buffer's size)");
    }
    if (finish) finish();
    return true;
  }

  // A receive still posted is cancelled, so a late message cannot land in a buffer the caller gave up on.
  void on_timeout() override {
    if (recv_index < 0) return;
    MPI_Request& r = reqs[static_cast<size_t>(recv_index)];
    if (r == MPI_REQUEST_NULL) return;
    MPI_Cancel(&r);
    MPI_Wait(&r, MPI_STATUS_IGNORE);
  }
};

// Polls one request (communicator creation) against a deadline.
void wait_request(MPI_Request& req, std::chrono::milliseconds deadline, const std::string& what) {
  const auto start = Clock::now();
  for (;;) {
    int flag = 0;
    check_mpi(MPI_Test(&req, &flag, MPI_STATUS_IGNORE), "MPI_Test");
    if (flag) return;
    if (Clock::now() - start >= deadline) {
      int world = -1;
      MPI_Comm_rank(MPI_COMM_WORLD, &world);
      throw Error("nibble.parallel: " + what + " timed out on world rank " + std::to_string(world) + " after " +
                  std::to_string(deadline.count()) + " ms at step " + std::to_string(current_step()) +
                  ": a rank never took part; every rank must create the same groups in the same order");
    }
  }
}

// After a timeout on `comm`: every member that timed out sends its step to every other member on a tag no
// collective or user message uses, and listens for theirs for up to `wait`. Members that send nothing --
// stopped, dead, or still blocked in another call -- are named. The send buffer is leaked on purpose: a send to
// a stopped peer may complete after this returns (the group is unusable and the job is ending anyway).
std::string probe_silent_members(MPI_Comm comm, int tag, int rank, const std::vector<int>& world_ranks,
                                 std::chrono::milliseconds wait) {
  const int n = static_cast<int>(world_ranks.size());
  auto* mine = new int64_t(current_step());
  std::vector<int64_t> theirs(static_cast<size_t>(n), -1);
  std::vector<MPI_Request> recvs(static_cast<size_t>(n), MPI_REQUEST_NULL);
  for (int p = 0; p < n; ++p) {
    if (p == rank) continue;
    MPI_Request send = MPI_REQUEST_NULL;
    check_mpi(MPI_Isend(mine, 1, MPI_INT64_T, p, tag, comm, &send), "MPI_Isend");
    MPI_Request_free(&send);
    check_mpi(MPI_Irecv(&theirs[static_cast<size_t>(p)], 1, MPI_INT64_T, p, tag, comm, &recvs[static_cast<size_t>(p)]),
              "MPI_Irecv");
  }
  const auto start = Clock::now();
  for (;;) {
    int done = 0;
    check_mpi(MPI_Testall(n, recvs.data(), &done, MPI_STATUSES_IGNORE), "MPI_Testall");
    if (done || Clock::now() - start >= wait) break;
  }
  std::string silent, answered;
  for (int p = 0; p < n; ++p) {
    if (p == rank) continue;
    MPI_Request& r = recvs[static_cast<size_t>(p)];
    int flag = 0;
    if (r != MPI_REQUEST_NULL) MPI_Test(&r, &flag, MPI_STATUS_IGNORE);
    const std::string who = "world rank " + std::to_string(world_ranks[static_cast<size_t>(p)]);
    if (r == MPI_REQUEST_NULL) {
      answered += (answered.empty() ? "" : ", ") + who + " (at step " + std::to_string(theirs[static_cast<size_t>(p)]) + ")";
    } else {
      MPI_Cancel(&r);
      MPI_Wait(&r, MPI_STATUS_IGNORE);
      silent += (silent.empty() ? "" : ", ") + who;
    }
  }
  const std::string secs = std::to_string(std::chrono::duration<double>(wait).count()).substr(0, 3);
  std::string out = " Liveness probe (" + secs + " s): ";
  if (!silent.empty()) out += "silent: " + silent + " (stopped, dead, or blocked in another call)";
  if (!silent.empty() && !answered.empty()) out += "; ";
  if (!answered.empty()) out += "answered: " + answered;
  return out + ".";
}

}  // namespace

void check_mpi(int rc, const char* call) {
  if (rc != MPI_SUCCESS) throw Error(std::string(call) + " failed: " + mpi_error_string(rc));
}

struct MpiCommunicator::Members {
  int rank = 0, size = 1, world_rank = 0;
  std::vector<int> world_ranks;
};

MpiCommunicator::Members MpiCommunicator::describe_comm(MPI_Comm comm) {
  if (comm == MPI_COMM_NULL)
    throw InvalidArgument("nibble.parallel: MpiCommunicator needs a communicator, got MPI_COMM_NULL");
  if (comm == MPI_COMM_WORLD || comm == MPI_COMM_SELF)
    throw InvalidArgument(
        "nibble.parallel: MpiCommunicator frees the communicator it adopts; pass a duplicate of "
        "MPI_COMM_WORLD/MPI_COMM_SELF (MpiCommunicator::duplicate)");
  Members m;
  check_mpi(MPI_Comm_rank(comm, &m.rank), "MPI_Comm_rank");
  check_mpi(MPI_Comm_size(comm, &m.size), "MPI_Comm_size");
  check_mpi(MPI_Comm_rank(MPI_COMM_WORLD, &m.world_rank), "MPI_Comm_rank");
  MPI_Group group, world;
  check_mpi(MPI_Comm_group(comm, &group), "MPI_Comm_group");
  check_mpi(MPI_Comm_group(MPI_COMM_WORLD, &world), "MPI_Comm_group");
  std::vector<int> local(static_cast<size_t>(m.size));
  std::iota(local.begin(), local.end(), 0);
  m.world_ranks.resize(local.size());
  check_mpi(MPI_Group_translate_ranks(group, m.size, local.data(), world, m.world_ranks.data()),
            "MPI_Group_translate_ranks");
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  return m;
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, const CommOptions& options)
    : MpiCommunicator(comm, std::move(name), options, describe_comm(comm)) {}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name, const CommOptions& options, Members m)
    : Communicator(std::move(name), "mpi", m.rank, m.size, m.world_rank, std::move(m.world_ranks), options),
      comm_(comm) {
  check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
  int* tag_ub = nullptr;
  int has_tag_ub = 0;
  // MPI_TAG_UB is cached on MPI_COMM_WORLD only (a split communicator need not carry it); it holds for all.
  check_mpi(MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &has_tag_ub), "MPI_Comm_get_attr(MPI_TAG_UB)");
  if (has_tag_ub && tag_ub != nullptr && *tag_ub > kMaxTag) exchange_tag_ = kMaxTag + 1;
  if (options.liveness_probe && has_tag_ub && tag_ub != nullptr && *tag_ub > kMaxTag + 1) {
    const MPI_Comm comm = comm_;
    const int tag = kMaxTag + 2, rank = m.rank;
    const std::vector<int> members = this->members();  // (m.world_ranks was moved into the base)
    group_state().probe_silent = [comm, tag, rank, members](std::chrono::milliseconds wait) {
      return probe_silent_members(comm, tag, rank, members, wait);
    };
  }
  g_created.fetch_add(1, std::memory_order_relaxed);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL)
    MPI_Comm_free(&comm_);  // pending operations still complete (MPI 3.1 §6.4.3)
}

int64_t MpiCommunicator::instances_created() {
  return g_created.load(std::memory_order_relaxed);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::duplicate(MPI_Comm parent, std::string name,
                                                            const CommOptions& options) {
  MPI_Comm comm = MPI_COMM_NULL;
  MPI_Request req = MPI_REQUEST_NULL;
  check_mpi(MPI_Comm_idup(parent, &comm, &req), "MPI_Comm_idup");
  wait_request(req, options.deadline, "creating group '" + name + "' (MPI_Comm_idup)");
  return std::make_unique<MpiCommunicator>(comm, std::move(name), options);
}

std::unique_ptr<MpiCommunicator> MpiCommunicator::split(MPI_Comm parent, int color, int key, std::string name,
                                                        const CommOptions& options) {
  MPI_Comm comm = MPI_COMM_NULL;
  check_mpi(MPI_Comm_split(parent, color, key, &comm), "MPI_Comm_split");
  if (comm == MPI_COMM_NULL) return nullptr;
  return std::make_unique<MpiCommunicator>(comm, std::move(name), options);
}

namespace {

int as_int(size_t n, const char* what) {
  if (n > static_cast<size_t>(INT_MAX))
    throw InvalidArgument(std::string("nibble.parallel: ") + what + " of " + std::to_string(n) +
                          " elements exceeds MPI's int count limit (" + std::to_string(INT_MAX) +
                          "); split the buffer");
  return static_cast<int>(n);
}

bool all_equal(std::span<const size_t> v) {
  for (size_t x : v)
    if (x != v[0]) return false;
  return true;
}

// counts then displacements (prefix sums) as ints, appended to `ints`; returns the offsets of both arrays.
std::pair<size_t, size_t> append_counts(std::vector<int>& ints, std::span<const size_t> counts, const char* what) {
  const size_t c = ints.size();
  for (size_t x : counts) ints.push_back(as_int(x, what));
  const size_t d = ints.size();
  size_t displ = 0;
  for (size_t x : counts) {
    ints.push_back(as_int(displ, what));
    displ += x;
  }
  as_int(displ, what);
  return {c, d};
}

}  // namespace

std::unique_ptr<detail::PendingOp> MpiCommunicator::do_all_reduce(ConstView in, View out, ReduceOp op) {
  if (size() == 1) {
    copy(out, in);
    return nullptr;
  }
  auto p = std::make_unique<MpiPending>();
  if (size() == 2 && exchange_tag_ > 0 && exchange_all_reduce(out.bytes())) {
    // Latency-bound sizes on two ranks: one exchange of the whole buffer, then out = in (op) theirs on both
    // ranks (commutative element by element, so both get the same bits). libnbc needs two message latencies.
    const int peer = 1 - rank(), n = as_int(out.count, "all_reduce");
    const MPI_Datatype t = mpi_type(out.dtype);
    p->scratch.resize(out.bytes());
    check_mpi(MPI_Irecv(p->scratch.data(), n, t, peer, exchange_tag_, comm_, &p->reqs[0]), "MPI_Irecv");
    p->nreq = 1;
    check_mpi(MPI_Isend(in.data, n, t, peer, exchange_tag_, comm_, &p->reqs[1]), "MPI_Isend");
    p->nreq = 2;
    std::function<void()> divide = op == ReduceOp::kAvg ? divider(out, 2) : std::function<void()>();
    const unsigned char* theirs = p->scratch.data();
    p->finish = [out, in, theirs, op, divide] {
      copy(out, in);  // after the send completed: out may be the send buffer
      reduce_into(out, theirs, op);
      if (divide) divide();
    };
    return p;
  }
  const void* send = in.data == out.data ? MPI_IN_PLACE : in.data;
  check_mpi(MPI_Iallreduce(send, out.data, as_int(out.count, "all_reduce"), mpi_type(out.dtype), mpi_op(op, out.dtype),
                           comm_, &p->reqs[0]),
            "MPI_Iallreduce");
  p->nreq = 1;
  if (op == ReduceOp::kAvg) p->finish = divider(out, size());
  return p;
}

// Two-rank groups run all_gather and reduce_scatter as one paired exchange: libnbc's schedules for them take
// up to 3x MPI's blocking two-process algorithm, while a paired Isend/Irecv is as fast as MPI_Sendrecv
// (benchmarks/bench_collectives, docs/PARALLEL.md).
std::unique_ptr<detail::PendingOp> MpiCommunicator::do_reduce_scatter(ConstView in, View out, ReduceOp op,
                                                                      std::span<const size_t> counts) {
  if (size() == 1) {
    copy(out, in);
    return nullptr;
  }
  auto p = std::make_unique<MpiPending>();
  const MPI_Datatype t = mpi_type(out.dtype);
  as_int(in.count, "reduce_scatter");
  if (size() == 2 && exchange_tag_ > 0) {
    const int me = rank(), peer = 1 - me;
    const size_t es = element_size(in.dtype);
    const char* base = static_cast<const char*>(in.data);
    const char* mine = base + (me == 0 ? 0 : counts[0]) * es;
    const char* theirs = base + (peer == 0 ? 0 : counts[0]) * es;
    // The peer's contribution to my part lands in `out`; my contribution to its part goes to it.
    check_mpi(MPI_Irecv(out.data, as_int(out.count, "reduce_scatter"), t, peer, exchange_tag_, comm_, &p->reqs[0]),
              "MPI_Irecv");
    p->nreq = 1;
    check_mpi(MPI_Isend(theirs, as_int(counts[static_cast<size_t>(peer)], "reduce_scatter"), t, peer, exchange_tag_,
                        comm_, &p->reqs[1]),
              "MPI_Isend");
    p->nreq = 2;
    std::function<void()> divide = op == ReduceOp::kAvg ? divider(out, 2) : std::function<void()>();
    p->finish = [out, mine, op, divide] {
      reduce_into(out, mine, op);
      if (divide) divide();
    };
    return p;
  }
  if (all_equal(counts)) {
    check_mpi(MPI_Ireduce_scatter_block(in.data, out.data, as_int(out.count, "reduce_scatter"), t,
                                        mpi_op(op, out.dtype), comm_, &p->reqs[0]),
              "MPI_Ireduce_scatter_block");
  } else {
    for (size_t x : counts) p->ints.push_back(as_int(x, "reduce_scatter"));
    check_mpi(MPI_Ireduce_scatter(in.data, out.data, p->ints.data(), t, mpi_op(op, out.dtype), comm_, &p->reqs[0]),
              "MPI_Ireduce_scatter");
  }
  p->nreq = 1;
  if (op == ReduceOp::kAvg) p->finish = divider(out, size());
  return p;
}

std::unique_ptr<detail::PendingOp> MpiCommunicator::do_all_gather(ConstView in, View out,
                                                                  std::span<const size_t> counts) {
  if (size() == 1) {
    copy(out, in);
    return nullptr;
  }
  auto p = std::make_unique<MpiPending>();
  const MPI_Datatype t = mpi_type(out.dtype);
  const size_t displ = std::accumulate(counts.begin(), counts.begin() + rank(), size_t{0});
  const bool in_place = in.data == static_cast<const char*>(out.data) + displ * element_size(out.dtype);
  const void* send = in_place ? MPI_IN_PLACE : in.data;
  as_int(out.count, "all_gather");
  if (size() == 2 && exchange_tag_ > 0) {
    const int me = rank(), peer = 1 - me;
    const size_t es = element_size(out.dtype);
    char* base = static_cast<char*>(out.data);
    const size_t peer_displ = peer == 0 ? 0 : counts[0];
    check_mpi(MPI_Irecv(base + peer_displ * es, as_int(counts[static_cast<size_t>(peer)], "all_gather"), t, peer,
                        exchange_tag_, comm_, &p->reqs[0]),
              "MPI_Irecv");
    p->nreq = 1;
    check_mpi(MPI_Isend(in.data, as_int(in.count, "all_gather"), t, peer, exchange_tag_, comm_, &p->reqs[1]),
              "MPI_Isend");
    p->nreq = 2;
    if (!in_place && in.count > 0) std::memcpy(base + displ * es, in.data, in.bytes());  // overlaps the transfer
    return p;
  }
  if (all_equal(counts)) {
    const int n = as_int(in.count, "all_gather");
    check_mpi(MPI_Iallgather(send, n, t, out.data, n, t, comm_, &p->reqs[0]), "MPI_Iallgather");
  } else {
    const auto [c, d] = append_counts(p->ints, counts, "all_gather");
    check_mpi(MPI_Iallgatherv(send, as_int(in.count, "all_gather"), t, out.data, p->ints.data() + c, p->ints.data() + d,
                              t, comm_, &p->reqs[0]),
              "MPI_Iallgatherv");
  }
  p->nreq = 1;
  return p;
}

std::unique_ptr<detail::PendingOp> MpiCommunicator::do_all_to_all(ConstView in, View out,
                                                                  std::span<const size_t> send_counts,
                                                                  std::span<const size_t> recv_counts) {
  if (size() == 1) {
    copy(out, in);
    return nullptr;
  }
  auto p = std::make_unique<MpiPending>();
  const MPI_Datatype t = mpi_type(out.dtype);
  if (all_equal(send_counts) && all_equal(recv_counts) && send_counts[0] == recv_counts[0]) {
    const int n = as_int(send_counts[0], "all_to_all");
    as_int(in.count, "all_to_all");
    check_mpi(MPI_Ialltoall(in.data, n, t, out.data, n, t, comm_, &p->reqs[0]), "MPI_Ialltoall");
  } else {
    p->ints.reserve(4 * send_counts.size());
    const auto [sc, sd] = append_counts(p->ints, send_counts, "all_to_all");
    const auto [rc, rd] = append_counts(p->ints, recv_counts, "all_to_all");
    check_mpi(MPI_Ialltoallv(in.data, p->ints.data() + sc, p->ints.data() + sd, t, out.data, p->ints.data() + rc,
                             p->ints.data() + rd, t, comm_, &p->reqs[0]),
              "MPI_Ialltoallv");
  }
  p->nreq = 1;
  return p;
}

std::unique_ptr<detail::PendingOp> MpiCommunicator::do_broadcast(View buf, int root) {
  if (size() == 1) return nullptr;
  auto p = std::make_unique<MpiPending>();
  check_mpi(MPI_Ibcast(buf.data, as_int(buf.count, "broadcast"), mpi_type(buf.dtype), root, comm_, &p->reqs[0]),
            "MPI_Ibcast");
  p->nreq = 1;
  return p;
}

std::unique_ptr<detail::PendingOp> MpiCommunicator::do_send(ConstView buf, int peer, int tag) {
  auto p = std::make_unique<MpiPending>();
  check_mpi(MPI_Isend(buf.data, as_int(buf.count, "send"), mpi_type(buf.dtype), peer, tag, comm_, &p->reqs[0]),
            "MPI_Isend");
  p->nreq = 1;
  return p;
}

std::unique_ptr<detail::PendingOp> MpiCommunicator::do_recv(View buf, int peer, int tag) {
  auto p = std::make_unique<MpiPending>();
  p->recv_expected = as_int(buf.count, "recv");
  p->recv_type = mpi_type(buf.dtype);
  p->recv_peer = peer;
  check_mpi(MPI_Irecv(buf.data, p->recv_expected, p->recv_type, peer, tag, comm_, &p->reqs[0]), "MPI_Irecv");
  p->nreq = 1;
  p->recv_index = 0;
  return p;
}

std::unique_ptr<detail::PendingOp> MpiCommunicator::do_send_recv(ConstView send, int dst, View recv, int src, int tag) {
  auto p = std::make_unique<MpiPending>();
  p->recv_expected = as_int(recv.count, "send_recv");
  p->recv_type = mpi_type(recv.dtype);
  p->recv_peer = src;
  check_mpi(MPI_Irecv(recv.data, p->recv_expected, p->recv_type, src, tag, comm_, &p->reqs[0]), "MPI_Irecv");
  p->nreq = 1;
  p->recv_index = 0;
  check_mpi(MPI_Isend(send.data, as_int(send.count, "send_recv"), mpi_type(send.dtype), dst, tag, comm_, &p->reqs[1]),
            "MPI_Isend");
  p->nreq = 2;
  return p;
}

std::unique_ptr<detail::PendingOp> MpiCommunicator::do_barrier() {
  if (size() == 1) return nullptr;
  auto p = std::make_unique<MpiPending>();
  check_mpi(MPI_Ibarrier(comm_, &p->reqs[0]), "MPI_Ibarrier");
  p->nreq = 1;
  return p;
}

}  // namespace nibble::parallel
