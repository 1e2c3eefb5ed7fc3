#include "launch/train_optimizer.h"

#include <cmath>

#include "launch/grad_sync.h"
#include "parallel/nn/zero_optimizer.h"
#include "precision/error.h"

namespace nibble::train {

TrainOptimizer::TrainOptimizer(const TrainConfig& c, nn::Gpt& model, const parallel::Mesh& mesh)
    : model_(model), mesh_(mesh) {
  if (c.zero == 1) {
    parallel::ZeroOptions zo;
    zo.fp8_all_gather = c.zero_fp8_all_gather;
    zero_ = std::make_unique<parallel::ZeroOptimizer>(model.named_parameters(), optimizer_config(c), mesh.dp_cp(), zo);
  } else {
    plain_ = std::make_unique<optim::Optimizer>(model.named_parameters(), optimizer_config(c));
  }
}

TrainOptimizer::~TrainOptimizer() = default;

std::string TrainOptimizer::find_nonfinite_grad() const {
  // The local gradients, before any reduction (a plain Optimizer over the same parameters checks them).
  if (plain_) return plain_->find_nonfinite_grad();
  for (const auto& p : model_.params()) {
    const torch::Tensor& g = p.tensor.grad();
    if (g.defined() && !torch::isfinite(g).all().item<bool>()) return p.name;
  }
  return "";
}

void TrainOptimizer::reduce_gradients() {
  if (plain_) {
    average_gradients(model_, mesh_);
    return;
  }
  zero_->finish_gradients();
}

void TrainOptimizer::discard_gradients() {
  if (zero_) zero_->buckets().reset();
}

double TrainOptimizer::grad_norm() const {
  if (plain_) return global_grad_norm(model_, mesh_);
  // Per parameter from this rank's shard of the averaged gradient, classified as global_grad_norm does, then
  // summed over the dp x cp shards, tp (sharded ones) and pp.
  const parallel::GradBuckets& b = zero_->buckets();
  const parallel::FlatLayout& L = b.layout();
  const int r = mesh_.dp_cp().rank();
  double sq[2] = {0.0, 0.0};  // tp-sharded, replicated over tp
  const auto& params = model_.params();
  for (size_t i = 0; i < params.size(); ++i) {
    if (params[i].tied_copy) continue;
    const auto [begin, end] = L.piece(i, r);
    if (end <= begin) continue;
    const torch::Tensor g = b.shard_grad().narrow(0, L.offset[i] + begin - L.shard_begin(r), end - begin);
    sq[params[i].shard_dim >= 0 ? 0 : 1] += g.to(torch::kFloat64).square().sum().item<double>();
  }
  if (mesh_.dp_cp().size() > 1) mesh_.dp_cp().all_reduce<double>(std::span<double>(sq, 2), parallel::ReduceOp::kSum);
  if (mesh_.tp().size() > 1) mesh_.tp().all_reduce<double>(std::span<double>(sq, 1), parallel::ReduceOp::kSum);
  double total = sq[0] + sq[1];
  if (mesh_.pp().size() > 1) mesh_.pp().all_reduce<double>(std::span<double>(&total, 1), parallel::ReduceOp::kSum);
  return std::sqrt(total);
}

void TrainOptimizer::step(double lr_factor, float grad_scale) {
  const optim::StepResult r = plain_ ? plain_->step(lr_factor, grad_scale) : zero_->step(lr_factor, grad_scale);
  if (!r.applied)  // the trainer checked every rank's gradients first
    throw Error("the optimizer skipped a step every rank agreed to take (non-finite '" + r.nonfinite_param + "')");
}

std::map<std::string, torch::Tensor> TrainOptimizer::state_dict() const {
  return plain_ ? plain_->state_dict() : zero_->state_dict();
}

void TrainOptimizer::load_state_dict(const std::map<std::string, torch::Tensor>& state) {
  if (plain_) {
    plain_->load_state_dict(state);
    return;
  }
  zero_->load_state_dict(state);
  zero_->sync_from_model();
}

}  // namespace nibble::train
