#include "launch/grad_overlap.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <functional>
#include <string>
#include <utility>

#include "precision/error.h"

namespace nibble::launch {
namespace {

// torch's C++ form of Tensor.register_post_accumulate_grad_hook: AccumulateGrad calls it after adding a
// backward pass's gradient into the leaf's .grad.
struct Hook final : torch::autograd::PostAccumulateGradHook {
  explicit Hook(std::function<void()> f) : fn(std::move(f)) {}
  void operator()(const torch::autograd::Variable&) override { fn(); }
  std::function<void()> fn;
};

}  // namespace

GradReduceOverlap::GradReduceOverlap(core::model::Gpt& model, parallel::nn::GradBuckets& buckets,
                                     int64_t accumulations, std::vector<bool> deferred)
    : model_(model), buckets_(buckets), accumulations_(accumulations), deferred_(std::move(deferred)) {
  const auto& params = model_.params();
  if (accumulations_ < 1)
    throw InvalidArgument("GradReduceOverlap: accumulations per step must be >= 1, got " +
                          std::to_string(accumulations_));
  if (deferred_.size() != params.size() || buckets_.params().size() != params.size())
    throw InvalidArgument("GradReduceOverlap: " + std::to_string(params.size()) + " parameters, but " +
                          std::to_string(deferred_.size()) + " deferral flags and " +
                          std::to_string(buckets_.params().size()) + " bucket entries");
  count_.assign(params.size(), 0);
  for (size_t i = 0; i < params.size(); ++i) {
    if (!buckets_.params()[i].second.is_same(params[i].tensor))
      throw InvalidArgument("GradReduceOverlap: bucket entry " + std::to_string(i) + " is not parameter '" +
                            params[i].name + "' (the buckets must hold model.params() in order)");
    // One hook per tensor in torch: replacing another owner's would silently switch it off.
    if (torch::autograd::impl::post_acc_grad_hooks(params[i].tensor) != nullptr)
      throw Error("GradReduceOverlap: parameter '" + params[i].name + "' already has a post-accumulate-grad hook");
    torch::autograd::impl::set_post_acc_grad_hooks(params[i].tensor,
                                                   std::make_unique<Hook>([this, i] { on_gradient(i); }));
  }
}

GradReduceOverlap::~GradReduceOverlap() {
  for (const auto& p : model_.params()) torch::autograd::impl::set_post_acc_grad_hooks(p.tensor, nullptr);
}

void GradReduceOverlap::on_gradient(size_t i) {
  const int64_t n = ++count_[i];
  if (n > accumulations_)
    throw Error("gradient overlap: parameter '" + model_.params()[i].name + "' received " + std::to_string(n) +
                " gradients in one step, expected one per micro-batch (" + std::to_string(accumulations_) +
                "); set parallel.overlap_grad_reduce = false and report this");
  if (n == accumulations_ && !deferred_[i]) buckets_.mark_ready(i);
  // Every hook is a chance for MPI to move the buckets already launched (it has no progress thread).
  buckets_.progress();
}

void GradReduceOverlap::next_step() { std::fill(count_.begin(), count_.end(), 0); }

std::vector<bool> grads_fixed_up_after_backward(const core::model::Gpt& model, bool sequence_parallel, int tp,
                                                int pp) {
  const auto& params = model.params();
  std::vector<bool> out(params.size(), false);
  // GroupTensorParallel::all_reduce_replicated_grads sums them over tp only under SP.
  if (tp > 1 && sequence_parallel) {
    for (const torch::Tensor& r : model.replicated_parameters())
      for (size_t i = 0; i < params.size(); ++i)
        if (params[i].tensor.is_same(r)) out[i] = true;
  }
  // sum_tied_embedding_grads (launch/grad_sync.h): the original on the first stage, the copy on the last.
  if (pp > 1 && model.config().tie_embeddings)
    for (size_t i = 0; i < params.size(); ++i)
      if (params[i].name == "embedding.weight") out[i] = true;
  return out;
}

}  // namespace nibble::launch
