#include "launch/grad_sync.h"

#include <cmath>

#include "parallel/nn/amax_reduction.h"

namespace nibble::train {

// One flat FP32 all-reduce in parameter order (a fixed order, so every rank of the group holds bit-identical
// gradients and parameters). parallel/nn/grad_buckets.h is the overlapped, bucketed version for larger models.
void average_gradients(nn::Gpt& model, const parallel::Mesh& mesh) {
  parallel::Communicator& group = mesh.dp_cp();
  if (group.size() == 1) return;
  std::vector<torch::Tensor> grads;
  for (const auto& p : model.params()) {
    if (!p.tensor.grad().defined()) p.tensor.mutable_grad() = torch::zeros_like(p.tensor);
    grads.push_back(p.tensor.grad().reshape({-1}));
  }
  torch::Tensor flat = torch::cat(grads).contiguous();
  group.all_reduce<float>(std::span<float>(flat.data_ptr<float>(), static_cast<size_t>(flat.numel())),
                          parallel::ReduceOp::kSum);
  flat.div_(static_cast<double>(group.size()));
  int64_t offset = 0;
  for (const auto& p : model.params()) {
    p.tensor.mutable_grad().copy_(flat.narrow(0, offset, p.tensor.numel()).view_as(p.tensor));
    offset += p.tensor.numel();
  }
}

void sum_tied_embedding_grads(nn::Gpt& model, const parallel::Mesh& mesh) {
  if (!model.config().tie_embeddings || mesh.pp().size() == 1) return;
  const nn::ParamInfo* tied = nullptr;
  for (const auto& p : model.params())
    if (p.name == "embedding.weight") tied = &p;
  const int64_t rows = model.config().vocab / mesh.tp().size(), h = model.config().hidden;
  torch::Tensor buf = torch::zeros({rows, h}, torch::kFloat32);
  if (tied && tied->tensor.grad().defined()) buf.copy_(tied->tensor.grad());
  mesh.pp().all_reduce<float>(std::span<float>(buf.data_ptr<float>(), static_cast<size_t>(buf.numel())),
                              parallel::ReduceOp::kSum);
  if (tied) tied->tensor.mutable_grad() = buf;
}

double global_grad_norm(const nn::Gpt& model, const parallel::Mesh& mesh) {
  double sq[2] = {0.0, 0.0};  // tp-sharded, replicated over tp
  for (const auto& p : model.params()) {
    if (!p.tensor.grad().defined() || p.tied_copy) continue;
    sq[p.shard_dim >= 0 ? 0 : 1] += p.tensor.grad().to(torch::kFloat64).square().sum().item<double>();
  }
  if (mesh.tp().size() > 1) mesh.tp().all_reduce<double>(std::span<double>(sq, 1), parallel::ReduceOp::kSum);
  double total = sq[0] + sq[1];
  if (mesh.pp().size() > 1) mesh.pp().all_reduce<double>(std::span<double>(&total, 1), parallel::ReduceOp::kSum);
  return std::sqrt(total);
}

void reduce_delayed_amaxes(const nn::Gpt& model, const parallel::Mesh& mesh) {
  if (mesh.tp_dp_cp().size() == 1) return;
  std::vector<precision::DelayedScaling*> states;
  for (const auto& s : model.linear_states())
    for (auto* d : {s->ds_x.get(), s->ds_w.get(), s->ds_dy.get()})
      if (d) states.push_back(d);
  parallel::reduce_pending_amaxes(states, mesh.tp_dp_cp());
}

double mean_over(parallel::Communicator& group, double value) {
  if (group.size() > 1) group.all_reduce<double>(std::span<double>(&value, 1), parallel::ReduceOp::kSum);
  return value / group.size();
}

}  // namespace nibble::train
