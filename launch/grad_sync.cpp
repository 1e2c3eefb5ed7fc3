#include "launch/grad_sync.h"

#include "parallel/nn/amax_reduction.h"
#include "parallel/nn/global_clip.h"
#include "parallel/nn/torch_collectives.h"
#include "precision/error.h"

namespace nibble::launch {

// One flat FP32 all-reduce in parameter order (a fixed order, so every rank of the group holds bit-identical
// gradients and parameters). parallel/nn/grad_buckets.h is the overlapped, bucketed version for larger models.
void average_gradients(core::model::Gpt& model, const parallel::Mesh& mesh) {
  parallel::Communicator& group = mesh.dp_cp();
  if (group.size() == 1) return;
  std::vector<torch::Tensor> grads;
  for (const auto& p : model.params()) {
    if (!p.tensor.grad().defined()) p.tensor.mutable_grad() = torch::zeros_like(p.tensor);
    grads.push_back(p.tensor.grad().reshape({-1}));
  }
  // On a GPU: over NCCL where the group has it, else staged through host memory (parallel/nn/torch_collectives.h).
  torch::Tensor flat = torch::cat(grads).contiguous();
  parallel::nn::all_reduce_(flat, parallel::ReduceOp::kSum, group, "gradient average over dp x cp");
  flat.div_(static_cast<double>(group.size()));
  int64_t offset = 0;
  for (const auto& p : model.params()) {
    p.tensor.mutable_grad().copy_(flat.narrow(0, offset, p.tensor.numel()).view_as(p.tensor));
    offset += p.tensor.numel();
  }
}

void sum_tied_embedding_grads(core::model::Gpt& model, const parallel::Mesh& mesh) {
  if (!model.config().tie_embeddings || mesh.pp().size() == 1) return;
  const core::model::ParamInfo* tied = nullptr;
  for (const auto& p : model.params())
    if (p.name == "embedding.weight") tied = &p;
  const int64_t rows = model.config().vocab / mesh.tp().size(), h = model.config().hidden;
  // In host memory on every pp rank (the stages between the two copies hold none, so have no device tensor to
  // offer; one operation must move host buffers on every member or device buffers on every member).
  torch::Tensor buf = torch::zeros({rows, h}, torch::kFloat32);
  if (tied && tied->tensor.grad().defined()) buf.copy_(tied->tensor.grad());
  mesh.pp().all_reduce<float>(std::span<float>(buf.data_ptr<float>(), static_cast<size_t>(buf.numel())),
                              parallel::ReduceOp::kSum);
  if (tied) tied->tensor.mutable_grad() = buf.to(tied->tensor.device());
}

double global_grad_norm(const core::model::Gpt& model, const parallel::Mesh& mesh,
                        const std::vector<torch::Tensor>& grads,
                        const std::vector<parallel::Communicator*>& also_sum_over) {
  const auto& params = model.params();
  if (grads.size() != params.size())
    throw InvalidArgument("global_grad_norm: " + std::to_string(grads.size()) + " gradients for " +
                          std::to_string(params.size()) + " parameters");
  parallel::nn::GradNormPart sharded{{}, {&mesh.tp()}}, replicated;  // tp ranks hold equal replicated copies
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].tied_copy) continue;  // the first stage's embedding.weight counts it
    (params[i].shard_dim >= 0 ? sharded : replicated).grads.push_back(grads[i]);
  }
  std::vector<parallel::Communicator*> sum_over = also_sum_over;
  sum_over.push_back(&mesh.pp());
  return parallel::nn::global_grad_norm({sharded, replicated}, sum_over);
}

void reduce_delayed_amaxes(const core::model::Gpt& model, const parallel::Mesh& mesh) {
  if (mesh.tp_dp_cp().size() == 1) return;
  std::vector<precision::DelayedScaling*> states;
  for (const auto& s : model.linear_states())
    for (auto* d : {s->ds_x.get(), s->ds_w.get(), s->ds_dy.get()})
      if (d) states.push_back(d);
  parallel::nn::reduce_pending_amaxes(states, mesh.tp_dp_cp());
}

double mean_over(parallel::Communicator& group, double value) {
  if (group.size() > 1) group.all_reduce<double>(std::span<double>(&value, 1), parallel::ReduceOp::kSum);
  return value / group.size();
}

}  // namespace nibble::launch
