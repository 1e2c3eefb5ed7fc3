#pragma once
// The dp x cp gradient reduction overlapped with backward (parallel.overlap_grad_reduce): a post-accumulate-grad
// hook on every parameter counts the gradients accumulated into its .grad this step, and on the last one (one
// per micro-batch: the last micro-batch's backward under plain accumulation, the last backward of the
// parameter's chunk under a pipeline schedule, which interleaves micro-batches) hands the parameter to the
// GradBuckets, whose bucket then starts its reduction as soon as all its parameters are final. Earlier
// micro-batches launch nothing (DDP's no_sync). Counting rather than flagging "the last backward" is what
// makes pipelines work: the schedule decides the order, the count only needs one backward per micro-batch.
//
// Parameters whose gradient changes after backward are not handed over by the hook (they are marked when the
// buckets are finished, after their fix-up), and every bucket from theirs on waits until then, since buckets
// launch in order on every rank:
//  - under tp with sequence parallelism, the replicated norm weights (summed over tp after backward);
//  - under pp with tied embeddings, embedding.weight and its last-stage copy (summed over pp after backward).
// The reduced values are those of the reduction after backward: a bucket holds the same FP32 gradients either
// way; see launch/train_optimizer.h for what is bit for bit.
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "core/model/gpt.h"
#include "parallel/nn/grad_buckets.h"

namespace nibble::launch {

class GradReduceOverlap {
 public:
  // `accumulations`: backward passes per step that reach every parameter (this rank's micro-batches). `buckets`
  // must outlive this object. `deferred`: the parameters (model.params() indices) whose gradient is fixed up
  // after backward.
  GradReduceOverlap(core::model::Gpt& model, parallel::nn::GradBuckets& buckets, int64_t accumulations,
                    std::vector<bool> deferred);
  ~GradReduceOverlap();  // removes the hooks
  GradReduceOverlap(const GradReduceOverlap&) = delete;
  GradReduceOverlap& operator=(const GradReduceOverlap&) = delete;

  // After the buckets were finished or discarded: the next step counts from zero.
  void next_step();

 private:
  void on_gradient(size_t i);

  core::model::Gpt& model_;
  parallel::nn::GradBuckets& buckets_;
  int64_t accumulations_;
  std::vector<bool> deferred_;
  std::vector<int64_t> count_;  // per parameter: gradients accumulated this step
};

// The parameters (model.params() indices) whose gradient a step changes after backward (see above).
std::vector<bool> grads_fixed_up_after_backward(const core::model::Gpt& model, bool sequence_parallel, int tp,
                                                int pp);

}  // namespace nibble::launch
