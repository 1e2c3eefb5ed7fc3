#include "parallel/nn/regions.h"

#include <cstdint>

#include "parallel/nn/torch_collectives.h"

namespace nibble::parallel::nn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The group travels through the autograd context as an integer: the Communicator outlives the graph (it is
// owned by the Mesh, which lives for the whole run).
void keep(AutogradContext* ctx, Communicator& comm) {
  ctx->saved_data["comm"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(&comm));
}
Communicator& group_of(AutogradContext* ctx) {
  return *reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["comm"].toInt()));
}

torch::Tensor summed(const torch::Tensor& t, Communicator& comm, const char* what) {
  torch::Tensor out = t.contiguous().clone();
  return all_reduce_(out, ReduceOp::kSum, comm, what);
}

struct CopyToTensorParallel : torch::autograd::Function<CopyToTensorParallel> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* comm) {
    keep(ctx, *comm);
    return x.view_as(x);
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {summed(g[0], group_of(ctx), "copy_to_tensor_parallel backward"), torch::Tensor()};
  }
};

struct ReduceFromTensorParallel : torch::autograd::Function<ReduceFromTensorParallel> {
  static torch::Tensor forward(AutogradContext*, const torch::Tensor& x, Communicator* comm) {
    return summed(x, *comm, "reduce_from_tensor_parallel");
  }
  static variable_list backward(AutogradContext*, variable_list g) { return {g[0], torch::Tensor()}; }
};

struct ScatterToSequence : torch::autograd::Function<ScatterToSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* comm) {
    keep(ctx, *comm);
    return split_dim0(x, *comm, "scatter_to_sequence_parallel");
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {all_gather_dim0(g[0], group_of(ctx), "scatter_to_sequence_parallel backward"), torch::Tensor()};
  }
};

struct GatherFromSequence : torch::autograd::Function<GatherFromSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* comm, bool partial) {
    keep(ctx, *comm);
    ctx->saved_data["partial"] = partial;
    return all_gather_dim0(x, *comm, "gather_from_sequence_parallel");
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    Communicator& comm = group_of(ctx);
    const char* what = "gather_from_sequence_parallel backward";
    torch::Tensor dx = ctx->saved_data["partial"].toBool() ? reduce_scatter_dim0(g[0], comm, what)
                                                           : split_dim0(g[0], comm, what);
    return {dx, torch::Tensor(), torch::Tensor()};
  }
};

struct ReduceScatterToSequence : torch::autograd::Function<ReduceScatterToSequence> {
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& x, Communicator* comm) {
    keep(ctx, *comm);
    return reduce_scatter_dim0(x, *comm, "reduce_scatter_to_sequence_parallel");
  }
  static variable_list backward(AutogradContext* ctx, variable_list g) {
    return {all_gather_dim0(g[0], group_of(ctx), "reduce_scatter_to_sequence_parallel backward"), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor copy_to_tensor_parallel(const torch::Tensor& x, Communicator& comm) {
  return comm.size() == 1 ? x : CopyToTensorParallel::apply(x, &comm);
}
torch::Tensor reduce_from_tensor_parallel(const torch::Tensor& x, Communicator& comm) {
  return comm.size() == 1 ? x : ReduceFromTensorParallel::apply(x, &comm);
}
torch::Tensor scatter_to_sequence_parallel(const torch::Tensor& x, Communicator& comm) {
  return comm.size() == 1 ? x : ScatterToSequence::apply(x, &comm);
}
torch::Tensor gather_from_sequence_parallel(const torch::Tensor& x, Communicator& comm, bool grad_is_partial) {
  return comm.size() == 1 ? x : GatherFromSequence::apply(x, &comm, grad_is_partial);
}
torch::Tensor reduce_scatter_to_sequence_parallel(const torch::Tensor& x, Communicator& comm) {
  return comm.size() == 1 ? x : ReduceScatterToSequence::apply(x, &comm);
}

}  // namespace nibble::parallel::nn
