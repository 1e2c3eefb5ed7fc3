#pragma once
// Saving and loading a training checkpoint over all ranks (core/checkpoint has the file formats): each rank
// writes its shard (model shards, optimizer states, Linear states) into the step's temporary directory; rank
// 0 gathers sizes and CRC-32s, writes manifest.json and commits (atomic renames). Loading verifies this
// rank's shard against the manifest and agrees with every rank before any tensor is touched, so a corrupted
// shard stops the whole job with its name. A checkpoint written at another layout is resharded on load
// (checkpoint_reshard.h).
#include <cstdint>
#include <string>

#include "core/model/gpt.h"
#include "launch/train_config.h"
#include "launch/train_optimizer.h"
#include "parallel/mesh.h"

namespace nibble::launch {

struct TrainingState {
  int64_t step = 0;                // steps completed
  int64_t consecutive_skips = 0;   // NaN/Inf policy counter
  int64_t skipped_total = 0;
};

void save_checkpoint(const TrainConfig& config, const parallel::Mesh& mesh, core::model::Gpt& model,
                     TrainOptimizer& optimizer, const TrainingState& state);
// Loads the checkpoint `latest` names under config.checkpoints(); returns false when there is none.
bool load_checkpoint(const TrainConfig& config, const parallel::Mesh& mesh, core::model::Gpt& model,
                     TrainOptimizer& optimizer, TrainingState& state);

}  // namespace nibble::launch
