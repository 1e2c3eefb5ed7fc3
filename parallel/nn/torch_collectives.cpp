#include "parallel/nn/torch_collectives.h"

#include <atomic>

#include "parallel/nn/host_staging.h"
#include "precision/error.h"

namespace nibble::parallel::nn {
namespace {

std::atomic<int64_t> g_bytes{0};

void count(const torch::Tensor& t) { g_bytes += t.numel() * static_cast<int64_t>(t.element_size()); }

int64_t rows_per_rank(const torch::Tensor& t, const Communicator& comm, const std::string& what) {
  if (t.dim() == 0) throw InvalidArgument(what + ": a 0-d tensor has no dimension to split");
  if (t.size(0) % comm.size() != 0)
    throw InvalidArgument(what + ": dim 0 (" + std::to_string(t.size(0)) + ") is not divisible by the size of " +
                          comm.describe() + " (" + std::to_string(comm.size()) + ")");
  return t.size(0) / comm.size();
}

ConstView const_view_of(const torch::Tensor& t, const std::string& what) {
  return ConstView{t.data_ptr(), static_cast<size_t>(t.numel()), dtype_of_tensor(t, what)};
}
View view_of(torch::Tensor& t, const std::string& what) {
  return View{t.data_ptr(), static_cast<size_t>(t.numel()), dtype_of_tensor(t, what)};
}

}  // namespace

DType dtype_of_tensor(const torch::Tensor& t, const std::string& what) {
  switch (t.scalar_type()) {
    case torch::kFloat32: return DType::kFloat32;
    case torch::kFloat64: return DType::kFloat64;
    case torch::kInt32: return DType::kInt32;
    case torch::kInt64: return DType::kInt64;
    case torch::kUInt8: return DType::kUInt8;
    case torch::kBFloat16: return DType::kBFloat16;
    default: break;
  }
  throw InvalidArgument(what + ": dtype " + std::string(c10::toString(t.scalar_type())) +
                        " cannot be communicated; valid: float32, float64, int32, int64, uint8, bfloat16");
}

torch::Tensor& all_reduce_(torch::Tensor& t, ReduceOp op, Communicator& comm, const std::string& what) {
  if (comm.size() == 1) return t;
  if (!t.is_contiguous()) throw InvalidArgument(what + ": all_reduce_ needs a contiguous tensor");
  count(t);
  HostStaged staged(t, /*copy_in=*/true, comm);  // CUDA tensors go through host memory on MPI
  const View v = view_of(staged.host(), what);
  comm.all_reduce(v, v, op);
  staged.copy_out();
  return t;
}

torch::Tensor all_gather_dim0(const torch::Tensor& t, Communicator& comm, const std::string& what) {
  if (comm.size() == 1) return t;
  if (t.dim() == 0) throw InvalidArgument(what + ": all_gather needs at least one dimension");
  if (!t.device().is_cpu() && !comm.moves_device_buffers())  // host-staged (MPI)
    return all_gather_dim0(t.cpu(), comm, what).to(t.device());
  const torch::Tensor in = t.contiguous();
  auto shape = in.sizes().vec();
  shape[0] *= comm.size();
  torch::Tensor out = torch::empty(shape, in.options());
  count(in);
  comm.all_gather(const_view_of(in, what), view_of(out, what));
  return out;
}

torch::Tensor reduce_scatter_dim0(const torch::Tensor& t, Communicator& comm, const std::string& what) {
  if (comm.size() == 1) return t;
  if (!t.device().is_cpu() && !comm.moves_device_buffers())  // host-staged (MPI)
    return reduce_scatter_dim0(t.cpu(), comm, what).to(t.device());
  const int64_t n = rows_per_rank(t, comm, what);
  const torch::Tensor in = t.contiguous();
  auto shape = in.sizes().vec();
  shape[0] = n;
  torch::Tensor out = torch::empty(shape, in.options());
  count(in);
  comm.reduce_scatter(const_view_of(in, what), view_of(out, what), ReduceOp::kSum);
  return out;
}

torch::Tensor split_dim0(const torch::Tensor& t, const Communicator& comm, const std::string& what) {
  if (comm.size() == 1) return t;
  const int64_t n = rows_per_rank(t, comm, what);
  return t.narrow(0, comm.rank() * n, n).contiguous();
}

int64_t communicated_bytes() { return g_bytes.load(); }
void reset_communicated_bytes() { g_bytes = 0; }

}  // namespace nibble::parallel::nn
