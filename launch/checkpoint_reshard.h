#pragma once
// Loading a checkpoint written at another layout (tp, cp, dp, pp, the pipeline split or optim.zero differ): this
// rank's tensors are rebuilt from the saved shards by name, reading only the byte ranges it needs
// (core/checkpoint/safetensors_index.h); pipeline stages are irrelevant because lookups are by name.
// - Parameters: the rows (or columns) of this rank's tp part are read from the saved tp shards of dp/cp rank 0
//   that overlap it (dp and cp ranks hold equal copies) and concatenated: no rank reads, or holds, more of a
//   parameter than its own part.
// - Optimizer states, per parameter: the state of each saved tp shard is read (a plain optimizer's from its dp-0
//   file; ZeRO-1's pieces from every dp x cp file of that tp and pp rank, gathered as zero_optimizer.h's
//   gather_zero_state does), moved to this rank's tp split (parallel/nn/tp_state_reshard.h: exact for
//   elementwise codecs, and for the block codecs where their groups line up in both splits; decoded and
//   re-encoded otherwise, which reshard() reports), then split for this job's ZeRO-1 shard when optim.zero = 1.
// - Linear states (stochastic-rounding counters, delayed-scaling histories: equal on every tp rank because amaxes
//   are group-reduced) come from the saved tp rank 0.
#include <torch/torch.h>

#include <map>
#include <string>

#include "core/checkpoint/manifest.h"
#include "core/checkpoint/safetensors_index.h"
#include "core/model/gpt.h"
#include "launch/train_config.h"
#include "parallel/mesh.h"

namespace nibble::launch {

using core::checkpoint::Manifest;

// The saved layout as "tp=2 cp=1 dp=1 pp=1 (...)" and whether it equals this job's (then every rank loads
// its own shard file as written).
std::string saved_layout(const Manifest& manifest);
bool same_layout(const Manifest& manifest, const TrainConfig& config);

// The files this rank may read from to reshard, as indices into manifest.shards: dp rank 0 and cp rank 0 of
// every tp and pp rank; every file when the saved optimizer states are ZeRO-1 shards (optim.zero = 1).
std::vector<size_t> reshard_sources(const Manifest& manifest);

// Throws nibble::Error (naming what differs and what would work) when the checkpoint cannot be resharded into
// this job: another model, optimizer or optimizer state codec. Called before any file is read.
void check_reshardable(const Manifest& manifest, const TrainConfig& config);

// The saved shard files opened for range reads, by manifest shard index (reshard_sources).
using SavedShards = std::map<size_t, core::checkpoint::SafetensorsIndex>;

struct Resharded {
  std::map<std::string, torch::Tensor> tensors;  // what this rank's own shard would hold ("model.*", "optim.*", ...)
  std::vector<std::string> inexact;              // "<param>: why" for optimizer states re-encoded, not copied
};
Resharded reshard(const Manifest& manifest, const SavedShards& saved, const core::model::Gpt& model,
                  const parallel::Mesh& mesh, const TrainConfig& config);

}  // namespace nibble::launch
