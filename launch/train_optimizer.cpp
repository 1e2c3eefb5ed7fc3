#include "launch/train_optimizer.h"

#include <vector>

#include "launch/grad_sync.h"
#include "optim/torch/grad_norm.h"
#include "parallel/nn/grad_buckets.h"
#include "parallel/nn/zero_optimizer.h"
#include "precision/error.h"

namespace nibble::launch {

TrainOptimizer::TrainOptimizer(const TrainConfig& c, core::model::Gpt& model, const parallel::Mesh& mesh)
    : model_(model), mesh_(mesh) {
  if (c.zero == 1) {
    parallel::nn::ZeroOptions zo;
    zo.fp8_all_gather = c.zero_fp8_all_gather;
    zo.bucket_mb = c.grad_bucket_mb;
    zero_ =
        std::make_unique<parallel::nn::ZeroOptimizer>(model.named_parameters(), optimizer_config(c), mesh.dp_cp(), zo);
  } else {
    plain_ = std::make_unique<optim::Optimizer>(model.named_parameters(), optimizer_config(c));
  }
  if (!c.overlap_grad_reduce || mesh.dp_cp().size() == 1 || !model.device().is_cpu()) return;
  if (plain_)
    plain_buckets_ = std::make_unique<parallel::nn::GradBuckets>(
        model.named_parameters(), mesh.dp_cp(),
        parallel::nn::GradBucketOptions{c.grad_bucket_mb, parallel::nn::BucketMode::kAllReduce});
  parallel::nn::GradBuckets& buckets = plain_buckets_ ? *plain_buckets_ : zero_->buckets();
  // One backward per micro-batch of this rank (launch/micro_batches.h), under every pipeline schedule too.
  const int64_t micro_batches = c.global_batch / c.dp / c.micro_batch;
  overlap_ = std::make_unique<GradReduceOverlap>(
      model, buckets, micro_batches,
      grads_fixed_up_after_backward(model, c.sequence_parallel, mesh.tp().size(), mesh.pp().size()));
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
  launched_in_backward_ = 0;
  if (overlap_) {
    launched_in_backward_ = (plain_buckets_ ? *plain_buckets_ : zero_->buckets()).launched();
    overlap_->next_step();
  }
  if (plain_buckets_) {
    plain_buckets_->finish();  // the deferred parameters (fixed up by now), the wait, averaged grads into .grad
  } else if (plain_) {
    average_gradients(model_, mesh_);
  } else {
    zero_->finish_gradients();
  }
}

void TrainOptimizer::discard_gradients() {
  if (overlap_) overlap_->next_step();
  // discard() waits for buckets backward launched (every rank launched the same ones); reset() expects none.
  if (plain_buckets_) plain_buckets_->discard();
  if (zero_) zero_->buckets().discard();
}

size_t TrainOptimizer::num_buckets() const {
  if (plain_buckets_) return plain_buckets_->num_buckets();
  return zero_ ? zero_->buckets().num_buckets() : 1;
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
