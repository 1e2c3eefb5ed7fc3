#pragma once
// The trainer's optimizer: plain (every dp x cp replica holds all optimizer states; gradients all-reduced,
// grad_sync.h) or ZeRO-1 (optim.zero = 1: parallel/nn/zero_optimizer.h, states sharded over dp x cp,
// gradients reduce-scattered, parameters all-gathered after the step -- Megatron's distributed optimizer).
// Both give the same updates: ZeRO-1's shard optimizer steps each element with the index bases and codec
// groups the whole tensor has, and the gradient norm is assembled per parameter from the shards.
//
// The dp x cp reduction starts during backward (parallel.overlap_grad_reduce, launch/grad_overlap.h) when the
// parameters are on the CPU and dp x cp > 1: plain, through GradBuckets in all-reduce mode (an FP32 buffer of
// parallel.grad_bucket_mb buckets, averaged, copied back into .grad); ZeRO-1, through its own reduce-scatter
// buckets, marked from backward instead of all at once afterwards. The reduced gradients are bit for bit those
// of the reduction after backward when dp x cp = 2 (each element is a + b, then / 2, either way) and, for ZeRO-1,
// at any size (the same buckets carry the same values). At dp x cp > 2 the plain path's one flat all-reduce and
// the buckets' several can sum an element's ranks in different orders (MPI picks its algorithm by length). On a
// GPU the reduction stays after backward (a device all-reduce over NCCL; the buckets would stage through host
// memory over MPI, from autograd's device thread: not done until a GPU run can measure it).
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>

#include "core/model/gpt.h"
#include "launch/grad_overlap.h"
#include "launch/optimizer_state_stats.h"
#include "launch/train_config.h"
#include "optim/torch/optimizer.h"
#include "parallel/mesh.h"

namespace nibble::parallel::nn {
class ZeroOptimizer;
}

namespace nibble::launch {

class TrainOptimizer {
 public:
  TrainOptimizer(const TrainConfig& config, core::model::Gpt& model, const parallel::Mesh& mesh);
  ~TrainOptimizer();

  // The first parameter with a NaN/Inf in this rank's (unreduced) gradients, or "".
  std::string find_nonfinite_grad() const;
  // After backward (and the tp / tied-embedding fix-ups): the gradients averaged over dp x cp -- in every
  // .grad (plain) or in this rank's shard (ZeRO-1). Skipped steps call discard_gradients instead.
  void reduce_gradients();
  void discard_gradients();
  // Whether the reduction overlaps backward (see above), and how many buckets it uses.
  bool overlapped() const { return overlap_ != nullptr; }
  size_t num_buckets() const;
  // Buckets launched during the last backward, read by reduce_gradients before it waits (0 without overlap).
  size_t buckets_launched_in_backward() const { return launched_in_backward_; }
  // The global norm of the averaged gradients (tp-sharded parameters summed over tp, replicated ones once,
  // a tied embedding's pipeline copy not again, summed over pp).
  double grad_norm() const;
  // One step (every rank must agree to step); ZeRO-1 all-gathers the parameters after it.
  void step(double lr_factor, float grad_scale);
  // Before step(): a probe of the compressed states' error in that step (launch/optimizer_state_stats.h); null
  // for ZeRO-1's sharded states, which it does not measure.
  std::unique_ptr<OptimizerStateProbe> probe_states(float grad_scale) const;

  // This rank's states ("<param>.<field>"; ZeRO-1: the pieces of its shard) and their restore (ZeRO-1: the
  // shard's parameters are re-read from the loaded model).
  std::map<std::string, torch::Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, torch::Tensor>& state);
  bool sharded() const { return zero_ != nullptr; }

 private:
  core::model::Gpt& model_;
  const parallel::Mesh& mesh_;
  std::unique_ptr<optim::Optimizer> plain_;
  std::unique_ptr<parallel::nn::ZeroOptimizer> zero_;
  std::unique_ptr<parallel::nn::GradBuckets> plain_buckets_;  // plain optimizer with overlap only
  std::unique_ptr<GradReduceOverlap> overlap_;                // destroyed first: its hooks point at the buckets
  size_t launched_in_backward_ = 0;
};

}  // namespace nibble::launch
