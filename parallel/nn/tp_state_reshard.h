#pragma once
// One parameter's optimizer state moved from one tensor-parallel split to another: what resuming a checkpoint
// at a different tp needs (launch/checkpoint_reshard.h). Input and output are the fields a plain
// optim::Optimizer over one tp shard holds (state_fields.h: "step", "master", per moment its values and side
// arrays); ZeRO-1 states are gathered into that form first and split from it after (zero_optimizer.h).
//
// Exactness. Elementwise states (fp32, bf16 moments, the FP32 master) are concatenated along the shard dim and
// sliced: bit for bit. The block codecs (fp8, fp8_plain: groups of 128; int8: blocks of 256) keep side data
// per group of the flattened shard. View the full tensor as [A, D, B] around the shard dim (A: the dims
// before it, B: after): a split into T shards has groups that are the full tensor's own aligned groups
// [kG, (k+1)G) exactly when T = 1 or each shard row (D/T)·B is a multiple of G. When both the saved and the new
// split are so, every new group IS a saved group: codes and side data are copied, bit for bit. Otherwise (or
// when int8's small-tensor rule changes the effective codec) the moments are decoded to FP32, reassembled,
// and encoded again for the new groups: each value is rounded once more (the result says which and why).
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "optim/torch/optimizer.h"

namespace nibble::parallel::nn {

struct TpStateReshard {
  std::map<std::string, torch::Tensor> fields;  // the new shard's state ("<field>" -> tensor)
  bool exact = true;
  std::string why_not;  // when !exact: which moment was re-encoded, and why
};

// `saved[t]`: the fields of the state of saved tp rank t's shard (all saved ranks, in order). `shard_dim`
// (-1: replicated; then saved[0] is taken) and `full_shape`: the parameter's. Returns the state of shard
// `rank` of `tp`. Throws InvalidArgument naming the parameter when a saved shard's fields are missing or do
// not fit the shape and codec.
TpStateReshard reshard_tp_state(const std::string& param, const std::vector<std::map<std::string, torch::Tensor>>& saved,
                                int shard_dim, const std::vector<int64_t>& full_shape, int tp, int rank,
                                const optim::OptimizerConfig& config);

// Whether a block codec of group size G keeps the full tensor's aligned groups when `full_shape` is split in
// `tp` along `shard_dim` (see above).
bool tp_groups_aligned(const std::vector<int64_t>& full_shape, int shard_dim, int tp, int64_t group);

}  // namespace nibble::parallel::nn
