// Argument checks shared by every backend, the deadline loop, and the messages that name group, op, rank, step.
#include "parallel/communicator.h"

#include <atomic>
#include <cmath>
#include <cstdio>
#include <mutex>
#include <numeric>
#include <sstream>
#include <utility>

#include "precision/error.h"

namespace nibble::parallel {
namespace {

std::atomic<int64_t> g_step{-1};

// Operations abandoned at a timeout. They are kept (never destroyed) because the backend may still hold
// pointers into them (MPI's count arrays of a v-collective must outlive the operation) -- beyond the life of
// the communicator that started them, so no object a caller holds could own them: a process-wide list.
std::mutex g_abandoned_mutex;
std::vector<std::unique_ptr<detail::PendingOp>>& abandoned() {
  static auto* list = new std::vector<std::unique_ptr<detail::PendingOp>>();  // leaked on purpose
  return *list;
}

std::string seconds(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

std::string count_of(size_t n, DType t) {
  return std::to_string(n) + " " + dtype_name(t);
}

bool overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + b_bytes && pb < pa + a_bytes;
}

}  // namespace

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat32:
      return "float32";
    case DType::kFloat64:
      return "float64";
    case DType::kInt32:
      return "int32";
    case DType::kInt64:
      return "int64";
    case DType::kUInt8:
      return "uint8";
    case DType::kBFloat16:
      return "bfloat16";
  }
  return "?";
}

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kAvg:
      return "avg";
  }
  return "?";
}

ReduceOp parse_reduce_op(const std::string& name) {
  if (name == "sum") return ReduceOp::kSum;
  if (name == "max") return ReduceOp::kMax;
  if (name == "avg" || name == "mean") return ReduceOp::kAvg;
  throw InvalidArgument("nibble.parallel: unknown reduce op '" + name + "'; valid: sum, max, avg");
}

void set_step(int64_t step) {
  g_step.store(step, std::memory_order_relaxed);
}
int64_t current_step() {
  return g_step.load(std::memory_order_relaxed);
}

std::string detail::GroupState::describe() const {
  std::ostringstream s;
  s << "group '" << name << "' (world ranks [";
  const size_t shown = members.size() <= 16 ? members.size() : 8;
  for (size_t i = 0; i < shown; ++i) s << (i ? ", " : "") << members[i];
  if (shown < members.size()) s << ", ... " << members.size() << " ranks";
  s << "])";
  return s.str();
}

// ---- Work ---------------------------------------------------------------------------------------------------

std::string detail::describe_op(const OpDesc& d, const GroupState& g) {
  using Shape = OpDesc::Shape;
  const auto world_of = [&g](int r) {
    return r >= 0 && static_cast<size_t>(r) < g.members.size() ? std::to_string(g.members[static_cast<size_t>(r)])
                                                               : std::string("?");
  };
  const std::string uneven = d.uneven ? " (uneven counts)" : "";
  switch (d.shape) {
    case Shape::kAllReduce:
      return std::string(reduce_op_name(d.reduce)) + " of " + count_of(d.count, d.dtype);
    case Shape::kReduceScatter:
      return std::string(reduce_op_name(d.reduce)) + " of " + count_of(d.count, d.dtype) + " into " +
             std::to_string(d.count2) + uneven;
    case Shape::kAllGather:
      return count_of(d.count, d.dtype) + " from each rank into " + std::to_string(d.count2) + uneven;
    case Shape::kAllToAll:
      return count_of(d.count, d.dtype) + " sent, " + std::to_string(d.count2) + " received" + uneven;
    case Shape::kBroadcast:
      return count_of(d.count, d.dtype) + " from rank " + std::to_string(d.peer) + " (world rank " + world_of(d.peer) +
             ")";
    case Shape::kSend:
    case Shape::kRecv:
      return count_of(d.count, d.dtype) + (d.shape == Shape::kSend ? " to rank " : " from rank ") +
             std::to_string(d.peer) + " (world rank " + world_of(d.peer) + "), tag " + std::to_string(d.tag);
    case Shape::kSendRecv:
      return count_of(d.count, d.dtype) + " to rank " + std::to_string(d.peer) + " and " +
             count_of(d.count2, d.dtype2) + " from rank " + std::to_string(d.peer2) + ", tag " + std::to_string(d.tag);
    case Shape::kBarrier:
      return "the other ranks";
  }
  return "";
}

Work::Work(std::shared_ptr<detail::GroupState> group, std::unique_ptr<detail::PendingOp> op, const detail::OpDesc& desc)
    : group_(std::move(group)),
      op_(std::move(op)),
      desc_(desc),
      step_(current_step()),
      start_(Clock::now()),
      deadline_(group_->deadline) {}

Work& Work::operator=(Work&& other) noexcept {
  if (this != &other) {
    this->~Work();
    new (this) Work(std::move(other));
  }
  return *this;
}

Work::~Work() {
  if (!op_) return;
  try {
    wait();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nibble.parallel: a Work destroyed while pending failed: %s\n", e.what());
  }
}

bool Work::test() {
  if (!op_) return true;
  bool done = false;
  try {
    done = op_->poll();
  } catch (const std::exception& e) {
    fail_backend(e);
  }
  if (done) {
    op_.reset();
    return true;
  }
  if (Clock::now() - start_ >= deadline_) fail_timeout();
  return false;
}

void Work::wait() {
  while (!test()) {
  }
}

void Work::fail_backend(const std::exception& e) {
  op_.reset();
  const detail::GroupState& g = *group_;
  throw Error("nibble.parallel: " + std::string(desc_.op) + " on " + g.describe() + ", backend " + g.backend +
              ", failed at step " + std::to_string(step_) + " on world rank " + std::to_string(g.world_rank) +
              " (rank " + std::to_string(g.rank) + " of " + std::to_string(g.size) + "): " + e.what());
}

void Work::fail_timeout() {
  const double waited = std::chrono::duration<double>(Clock::now() - start_).count();
  try {
    op_->on_timeout();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nibble.parallel: cleaning up after a timeout failed: %s\n", e.what());
  }
  {
    std::lock_guard<std::mutex> lock(g_abandoned_mutex);
    abandoned().push_back(std::move(op_));
  }
  detail::GroupState& g = *group_;
  const std::string step =
      step_ >= 0 ? "at step " + std::to_string(step_) : "before the first step (set_step was not called)";
  const std::string message =
      "nibble.parallel: " + std::string(desc_.op) + " timed out on " + g.describe() + ", backend " + g.backend + ", " +
      step + ": world rank " + std::to_string(g.world_rank) + " (rank " + std::to_string(g.rank) + " of " +
      std::to_string(g.size) + " in '" + g.name + "') waited " + seconds(waited) + " (deadline " +
      seconds(std::chrono::duration<double>(deadline_).count()) + ") for " + detail::describe_op(desc_, g) +
      ". A peer never entered the matching call: every rank of a group must issue the same collectives in the "
      "same order.";
  // Which peer: every member that timed out asks the others; a stopped or dead one never answers.
  std::string probe;
  if (g.probe_silent) {
    try {
      probe = g.probe_silent(std::min<std::chrono::milliseconds>(deadline_, std::chrono::seconds(2)));
    } catch (const std::exception& e) {
      probe = " (The liveness probe failed: " + std::string(e.what()) + ".)";
    }
  }
  g.failed = true;
  g.failure = std::string(desc_.op) + " timed out " + step;
  throw Error(message + probe + " The group is unusable from now on.");
}

// ---- Communicator -----------------------------------------------------------------------------------------

Communicator::Communicator(std::string name, const char* backend, int rank, int size, int world_rank,
                           std::vector<int> members, const CommOptions& options)
    : group_(std::make_shared<detail::GroupState>()) {
  group_->name = std::move(name);
  group_->backend = backend;
  group_->rank = rank;
  group_->size = size;
  group_->world_rank = world_rank;
  group_->members = std::move(members);
  set_deadline(options.deadline);
}

void Communicator::set_deadline(std::chrono::milliseconds deadline) {
  if (deadline.count() <= 0)
    throw InvalidArgument("nibble.parallel: deadline of " + describe() + " must be positive, got " +
                          std::to_string(deadline.count()) + " ms");
  group_->deadline = deadline;
}

void Communicator::check_usable(const char* op) const {
  if (group_->failed)
    throw Error(std::string("nibble.parallel: ") + op + " on " + describe() +
                ": the group is unusable after an earlier failure (" + group_->failure +
                "); report the first error and end the job");
}

Work Communicator::start(std::unique_ptr<detail::PendingOp> op, const detail::OpDesc& desc) {
  if (!op) return Work();
  return Work(group_, std::move(op), desc);
}

namespace {

// Checks shared by the collectives, with messages that name the op and the group.
struct Checker {
  const char* op;
  const detail::GroupState& g;

  [[noreturn]] void fail(const std::string& what) const {
    throw InvalidArgument(std::string("nibble.parallel: ") + op + " on " + g.describe() + ": " + what);
  }
  void dtypes(DType a, DType b) const {
    if (a != b)
      fail(std::string("input is ") + dtype_name(a) + " but output is " + dtype_name(b) + "; they must agree");
  }
  void pointer(const void* p, size_t count, const char* which) const {
    if (p == nullptr && count > 0) fail(std::string(which) + " is null but has " + std::to_string(count) + " elements");
  }
  void reduction(ReduceOp op, DType t) const {
    if (op == ReduceOp::kAvg && !is_floating(t))
      fail(std::string("avg of ") + dtype_name(t) +
           " is not defined (an integer average would truncate); use sum and divide, or a floating type");
  }
  void rank_arg(int r, const char* which) const {
    if (r < 0 || r >= g.size)
      fail(std::string(which) + " " + std::to_string(r) + " is not a rank of the group; valid: 0.." +
           std::to_string(g.size - 1));
  }
  void tag(int t) const {
    if (t < 0 || t > Communicator::kMaxTag)
      fail("tag " + std::to_string(t) + " is out of range; valid: 0.." + std::to_string(Communicator::kMaxTag));
  }
  void disjoint(const void* a, size_t a_bytes, const void* b, size_t b_bytes) const {
    if (overlaps(a, a_bytes, b, b_bytes))
      fail("input and output buffers overlap (only the documented in-place forms may alias)");
  }
  // counts: one entry per rank, summing to `total`, with this rank's entry equal to `mine`.
  std::vector<size_t> counts(std::span<const size_t> given, size_t total, size_t mine, const char* total_what,
                             const char* mine_what) const {
    if (given.size() != static_cast<size_t>(g.size))
      fail("counts has " + std::to_string(given.size()) + " entries; it needs one per rank (" + std::to_string(g.size) +
           ")");
    const size_t sum = std::accumulate(given.begin(), given.end(), size_t{0});
    if (sum != total)
      fail("counts sum to " + std::to_string(sum) + " but the " + total_what + " has " + std::to_string(total) +
           " elements");
    if (given[static_cast<size_t>(g.rank)] != mine)
      fail("counts[" + std::to_string(g.rank) + "] = " + std::to_string(given[static_cast<size_t>(g.rank)]) +
           " (this rank) but the " + mine_what + " has " + std::to_string(mine) + " elements");
    return std::vector<size_t>(given.begin(), given.end());
  }
};

}  // namespace

Work Communicator::all_reduce_async(ConstView in, View out, ReduceOp op) {
  check_usable("all_reduce");
  const Checker c{"all_reduce", *group_};
  c.dtypes(in.dtype, out.dtype);
  c.pointer(in.data, in.count, "input");
  c.pointer(out.data, out.count, "output");
  c.reduction(op, in.dtype);
  if (in.count != out.count)
    c.fail("input has " + std::to_string(in.count) + " elements but output has " + std::to_string(out.count));
  if (in.data != out.data) c.disjoint(in.data, in.bytes(), out.data, out.bytes());
  detail::OpDesc d{.op = "all_reduce",
                   .shape = detail::OpDesc::Shape::kAllReduce,
                   .reduce = op,
                   .dtype = in.dtype,
                   .count = in.count};
  return start(do_all_reduce(in, out, op), d);
}

Work Communicator::reduce_scatter_async(ConstView in, View out, ReduceOp op, std::span<const size_t> counts) {
  check_usable("reduce_scatter");
  const Checker c{"reduce_scatter", *group_};
  c.dtypes(in.dtype, out.dtype);
  c.pointer(in.data, in.count, "input");
  c.pointer(out.data, out.count, "output");
  c.reduction(op, in.dtype);
  std::vector<size_t> n;
  if (counts.empty()) {
    if (in.count != out.count * static_cast<size_t>(size()))
      c.fail("input has " + std::to_string(in.count) + " elements; equal parts need output elements x group size = " +
             std::to_string(out.count) + " x " + std::to_string(size()) + " = " +
             std::to_string(out.count * static_cast<size_t>(size())) + " (pass counts for uneven parts)");
    n.assign(static_cast<size_t>(size()), out.count);
  } else {
    n = c.counts(counts, in.count, out.count, "input", "output");
  }
  c.disjoint(in.data, in.bytes(), out.data, out.bytes());
  detail::OpDesc d{.op = "reduce_scatter",
                   .shape = detail::OpDesc::Shape::kReduceScatter,
                   .reduce = op,
                   .dtype = in.dtype,
                   .count = in.count,
                   .count2 = out.count,
                   .uneven = !counts.empty()};
  return start(do_reduce_scatter(in, out, op, n), d);
}

Work Communicator::all_gather_async(ConstView in, View out, std::span<const size_t> counts) {
  check_usable("all_gather");
  const Checker c{"all_gather", *group_};
  c.dtypes(in.dtype, out.dtype);
  c.pointer(in.data, in.count, "input");
  c.pointer(out.data, out.count, "output");
  std::vector<size_t> n;
  if (counts.empty()) {
    if (out.count != in.count * static_cast<size_t>(size()))
      c.fail("output has " + std::to_string(out.count) + " elements; it needs input elements x group size = " +
             std::to_string(in.count) + " x " + std::to_string(size()) + " = " +
             std::to_string(in.count * static_cast<size_t>(size())) + " (pass counts for uneven parts)");
    n.assign(static_cast<size_t>(size()), in.count);
  } else {
    n = c.counts(counts, out.count, in.count, "output", "input");
  }
  const size_t displ = std::accumulate(n.begin(), n.begin() + rank(), size_t{0});
  const void* own_block = static_cast<const char*>(out.data) + displ * element_size(out.dtype);
  if (in.data != own_block) c.disjoint(in.data, in.bytes(), out.data, out.bytes());
  detail::OpDesc d{.op = "all_gather",
                   .shape = detail::OpDesc::Shape::kAllGather,
                   .dtype = in.dtype,
                   .count = in.count,
                   .count2 = out.count,
                   .uneven = !counts.empty()};
  return start(do_all_gather(in, out, n), d);
}

Work Communicator::all_to_all_async(ConstView in, View out, std::span<const size_t> send_counts,
                                    std::span<const size_t> recv_counts) {
  check_usable("all_to_all");
  const Checker c{"all_to_all", *group_};
  c.dtypes(in.dtype, out.dtype);
  c.pointer(in.data, in.count, "input");
  c.pointer(out.data, out.count, "output");
  const size_t p = static_cast<size_t>(size());
  std::vector<size_t> s, r;
  if (send_counts.empty() != recv_counts.empty())
    c.fail("pass both send_counts and recv_counts, or neither (equal blocks)");
  if (send_counts.empty()) {
    if (in.count != out.count || in.count % p != 0)
      c.fail("equal blocks need input and output of the same size, divisible by the group size " + std::to_string(p) +
             "; got " + std::to_string(in.count) + " and " + std::to_string(out.count));
    s.assign(p, in.count / p);
    r = s;
  } else {
    if (send_counts.size() != p || recv_counts.size() != p)
      c.fail("send_counts and recv_counts need one entry per rank (" + std::to_string(p) + "), got " +
             std::to_string(send_counts.size()) + " and " + std::to_string(recv_counts.size()));
    s.assign(send_counts.begin(), send_counts.end());
    r.assign(recv_counts.begin(), recv_counts.end());
    const size_t ss = std::accumulate(s.begin(), s.end(), size_t{0});
    const size_t rs = std::accumulate(r.begin(), r.end(), size_t{0});
    if (ss != in.count)
      c.fail("send_counts sum to " + std::to_string(ss) + " but input has " + std::to_string(in.count));
    if (rs != out.count)
      c.fail("recv_counts sum to " + std::to_string(rs) + " but output has " + std::to_string(out.count));
  }
  c.disjoint(in.data, in.bytes(), out.data, out.bytes());
  detail::OpDesc d{.op = "all_to_all",
                   .shape = detail::OpDesc::Shape::kAllToAll,
                   .dtype = in.dtype,
                   .count = in.count,
                   .count2 = out.count,
                   .uneven = !send_counts.empty()};
  return start(do_all_to_all(in, out, s, r), d);
}

Work Communicator::broadcast_async(View buf, int root) {
  check_usable("broadcast");
  const Checker c{"broadcast", *group_};
  c.pointer(buf.data, buf.count, "buffer");
  c.rank_arg(root, "root");
  detail::OpDesc d{.op = "broadcast",
                   .shape = detail::OpDesc::Shape::kBroadcast,
                   .dtype = buf.dtype,
                   .count = buf.count,
                   .peer = root};
  return start(do_broadcast(buf, root), d);
}

Work Communicator::send_async(ConstView buf, int peer, int tag) {
  check_usable("send");
  const Checker c{"send", *group_};
  c.pointer(buf.data, buf.count, "buffer");
  c.rank_arg(peer, "peer");
  c.tag(tag);
  detail::OpDesc d{.op = "send",
                   .shape = detail::OpDesc::Shape::kSend,
                   .dtype = buf.dtype,
                   .count = buf.count,
                   .peer = peer,
                   .tag = tag};
  return start(do_send(buf, peer, tag), d);
}

Work Communicator::recv_async(View buf, int peer, int tag) {
  check_usable("recv");
  const Checker c{"recv", *group_};
  c.pointer(buf.data, buf.count, "buffer");
  c.rank_arg(peer, "peer");
  c.tag(tag);
  detail::OpDesc d{.op = "recv",
                   .shape = detail::OpDesc::Shape::kRecv,
                   .dtype = buf.dtype,
                   .count = buf.count,
                   .peer = peer,
                   .tag = tag};
  return start(do_recv(buf, peer, tag), d);
}

Work Communicator::send_recv_async(ConstView send, int dst, View recv, int src, int tag) {
  check_usable("send_recv");
  const Checker c{"send_recv", *group_};
  c.pointer(send.data, send.count, "send buffer");
  c.pointer(recv.data, recv.count, "receive buffer");
  c.rank_arg(dst, "destination");
  c.rank_arg(src, "source");
  c.tag(tag);
  c.disjoint(send.data, send.bytes(), recv.data, recv.bytes());
  detail::OpDesc d{.op = "send_recv",
                   .shape = detail::OpDesc::Shape::kSendRecv,
                   .dtype = send.dtype,
                   .dtype2 = recv.dtype,
                   .count = send.count,
                   .count2 = recv.count,
                   .peer = dst,
                   .peer2 = src,
                   .tag = tag};
  return start(do_send_recv(send, dst, recv, src, tag), d);
}

Work Communicator::barrier_async() {
  check_usable("barrier");
  return start(do_barrier(), detail::OpDesc{.op = "barrier", .shape = detail::OpDesc::Shape::kBarrier});
}

}  // namespace nibble::parallel
