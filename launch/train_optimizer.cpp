#include "launch/train_optimizer.h"

#include <vector>

#include "launch/grad_sync.h"
#include "optim/torch/grad_norm.h"
#include "parallel/nn/zero_optimizer.h"
#include "precision/error.h"

namespace nibble::launch {

TrainOptimizer::TrainOptimizer(const TrainConfig& c, core::model::Gpt& model, const parallel::Mesh& mesh)
    : model_(model), mesh_(mesh) {
  if (c.zero == 1) {
    parallel::nn::ZeroOptions zo;
    zo.fp8_all_gather = c.zero_fp8_all_gather;
    zero_ =
        std::make_unique<parallel::nn::ZeroOptimizer>(model.named_parameters(), optimizer_config(c), mesh.dp_cp(), zo);
  } else {
    plain_ = std::make_unique<optim::Optimizer>(model.named_parameters(), optimizer_config(c));
  }
}

TrainOptimizer::~TrainOptimizer() = default;

std::string TrainOptimizer::find_nonfinite_grad() const {
  // The local gradients, before any reduction.
  if (plain_) return plain_->find_nonfinite_grad();
  const auto& params = model_.params();
  std::vector<torch::Tensor> grads;
  for (const auto& p : params) grads.push_back(p.tensor.grad());
  const optim::GradientReport r = optim::check_gradient_tensors(grads);
  return r.first_nonfinite >= 0 ? params[r.first_nonfinite].name : std::string();
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
  if (zero_) return global_grad_norm(model_, mesh_, zero_->shard_grads(), {&mesh_.dp_cp()});
  std::vector<torch::Tensor> grads;
  for (const auto& p : model_.params()) grads.push_back(p.tensor.grad());
  return global_grad_norm(model_, mesh_, grads);
}

void TrainOptimizer::step(double lr_factor, float grad_scale) {
  const optim::StepResult r = plain_ ? plain_->step(lr_factor, grad_scale) : zero_->step(lr_factor, grad_scale);
  if (!r.applied)  // the trainer checked every rank's gradients first
    throw Error("the optimizer skipped a step every rank agreed to take (non-finite '" + r.nonfinite_param + "')");
}

std::unique_ptr<OptimizerStateProbe> TrainOptimizer::probe_states(float grad_scale) const {
  return plain_ ? std::make_unique<OptimizerStateProbe>(*plain_, grad_scale) : nullptr;
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

}  // namespace nibble::launch
