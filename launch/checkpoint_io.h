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
#include "precision/error.h"

namespace nibble::launch {

class PrecisionPolicy;  // launch/precision_policy.h

struct TrainingState {
  int64_t step = 0;                // steps completed
  int64_t consecutive_skips = 0;   // NaN/Inf policy counter
  int64_t skipped_total = 0;
};

// A checkpoint some rank could not write (disk full, a file-size limit, a vanished directory). Every rank throws
// it at the same point (they agree before going on, so none waits in a collective for a failed one); the
// failing rank's message says why, the others' that another rank failed. The step's temporary directory is
// removed; the previous checkpoint and `latest` are untouched.
class CheckpointWriteError : public Error {
 public:
  CheckpointWriteError(const std::string& what, bool here) : Error(what), here_(here) {}
  bool here() const { return here_; }  // this rank's own part failed (its message says why)

 private:
  bool here_;
};

// `policy` (may be null): the adaptive precision rungs go into every shard and are restored, into the model's
// Linears, before the Linear states (launch/precision_policy.h).
void save_checkpoint(const TrainConfig& config, const parallel::Mesh& mesh, core::model::Gpt& model,
                     TrainOptimizer& optimizer, const TrainingState& state, const PrecisionPolicy* policy = nullptr);
// Loads a checkpoint under config.checkpoints() and returns its directory ("" when there is none):
// checkpoint.resume = true / "latest" takes the one `latest` names (a shard that fails verification stops the
// job, naming it); "latest_valid" takes the newest that verifies on every rank, after saying on stderr which
// newer ones failed and why.
std::string load_checkpoint(const TrainConfig& config, const parallel::Mesh& mesh, core::model::Gpt& model,
                            TrainOptimizer& optimizer, TrainingState& state, PrecisionPolicy* policy = nullptr);

}  // namespace nibble::launch
