#pragma once
// ZeRO-1: the optimizer states sharded over the data-parallel group. Rank r owns a contiguous shard of the
// flattened parameters (parallel/nn/grad_buckets.h's FlatLayout: parameters in reverse registration order,
// starts and shard boundaries on 256-element boundaries), keeps the optimizer states (any codec of
// nibble::optim::Optimizer) and, for bfloat16 parameters, the FP32 master of that shard only. A step:
//   1. gradients reach the shard by per-bucket reduce-scatter (GradBuckets in kReduceScatter mode, started
//      from the post-accumulate-grad hooks, waited here);
//   2. the NaN/Inf verdict is all-reduced over the group, so every rank skips or steps together;
//   3. the shard optimizer steps the shard (per parameter piece, with the index bases and codec groups the
//      whole tensor would have, so each element gets exactly the single-rank update);
//   4. the shard is all-gathered into every rank's model parameters.
// FP8 all-gather (ZeroOptions::fp8_all_gather): the shard is sent as E4M3 codes plus one FP32 scale per 128
// elements (s = amax/448, RNE, satfinite) and every rank, the owner included, writes the dequantized values
// q*s into the model parameters. This CHANGES the parameters the forward sees (to their FP8-rounded values:
// relative error up to 2^-4 per element) while the owner's shard (the FP32 master / the optimizer's copy)
// keeps the exact values, so the rounding never accumulates across steps. It moves ~1.03 B/element instead
// of 4 (fp32) or 2 (bf16).
// Parameters on a GPU: the shard, its states and the flat buffers stay in host memory (ZeRO-Offload's
// arrangement); gradients are copied down and parameters back with Tensor::copy_. Compiled only on that path.
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "optim/torch/optimizer.h"
#include "parallel/communicator.h"
#include "parallel/nn/grad_buckets.h"

namespace nibble::parallel::nn {

struct ZeroOptions {
  double bucket_mb = 25.0;
  bool fp8_all_gather = false;
};

class ZeroOptimizer {
 public:
  // Parameters: all float32 or all bfloat16, CPU, contiguous, in registration order. `dp` must outlive this.
  // config.max_grad_norm must be unset: a shard's own norm is not the model's; clip by the global norm and pass
  // the coefficient as step()'s grad_scale.
  ZeroOptimizer(std::vector<std::pair<std::string, torch::Tensor>> named_params, optim::OptimizerConfig config,
                Communicator& dp, ZeroOptions options = {});
  ~ZeroOptimizer();
  ZeroOptimizer(const ZeroOptimizer&) = delete;
  ZeroOptimizer& operator=(const ZeroOptimizer&) = delete;

  // The buckets to feed from backward (mark_ready per parameter; step() calls finish()).
  GradBuckets& buckets();
  // Waits for the gradient reductions (GradBuckets::finish). step() calls it; call it earlier to clip.
  void finish_gradients();
  // Finishes the gradients; per parameter (registration order) this rank's piece of its averaged gradient, a
  // view into the shard (undefined where this rank holds none). Pieces are disjoint over the dp group: the
  // global norm (parallel/nn/global_clip.h) sums their squares over dp.
  std::vector<torch::Tensor> shard_grads();
  // Finishes the gradients, then one step (see above). Every rank returns the same `applied`.
  optim::StepResult step(double lr_factor = 1.0, float grad_scale = 1.0f);
  // Copies this rank's shard from the model parameters (done at construction; call it after loading model
  // weights into the parameters from outside, e.g. a checkpoint).
  void sync_from_model();

  // This rank's states: "<param>.<field>" of the pieces it owns (fields as optim::Optimizer's, flat).
  std::map<std::string, torch::Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, torch::Tensor>& state);
  int64_t state_bytes() const;
  const FlatLayout& layout() const;
  const optim::OptimizerConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Checkpoint resharding. `params`: every parameter's name and shape, in registration order (the same list the
// optimizers were built from). gather: the per-rank state_dicts of a dp = shards.size() run -> the state_dict
// of a single-rank optim::Optimizer over the full parameters (bit-exact, except int8 pieces under 4096
// elements, which keep fp32 states as optim/'s rule says and are re-encoded). split: the reverse, rank
// `rank`'s shard of a dp = `ranks` run. gather then split reshards to another dp size.
using ParamShapes = std::vector<std::pair<std::string, std::vector<int64_t>>>;
std::map<std::string, torch::Tensor> gather_zero_state(const std::vector<std::map<std::string, torch::Tensor>>& shards,
                                                       const ParamShapes& params, const optim::OptimizerConfig& config);
std::map<std::string, torch::Tensor> split_zero_state(const std::map<std::string, torch::Tensor>& full,
                                                      const ParamShapes& params, const optim::OptimizerConfig& config,
                                                      int ranks, int rank);

}  // namespace nibble::parallel::nn
