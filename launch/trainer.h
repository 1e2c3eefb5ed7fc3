#pragma once
// The training loop of nibble-train: mesh and model construction, micro-batched steps with gradient
// accumulation, data-parallel gradient averaging, clipping, the NaN/Inf policy, LR schedule, eval, progress
// lines and metrics.jsonl, checkpoints and resume, and a text sample at the end. Collective: every rank of
// the job runs it with the same (validated) config.
#include "launch/device_choice.h"
#include "launch/train_config.h"

namespace nibble::launch {

// Returns the process exit code (0: finished; 3: stopped by the NaN/Inf policy). `device` is what main resolved
// from train.device before MPI started.
int run_training(const TrainConfig& config, const DeviceChoice& device);

}  // namespace nibble::launch
