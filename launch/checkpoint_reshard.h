#pragma once
// Loading a checkpoint written at another layout (tp, cp, dp, pp or the pipeline split differ): this rank's
// tensors are rebuilt from the saved shards by name. Every parameter is concatenated from the saved tp
// shards of dp/cp rank 0 (dp and cp ranks hold equal copies) along its shard dim into the full tensor, then
// sliced for this rank's tp coordinate; pipeline stages are irrelevant because lookups are by name.
// Optimizer states reshard the same way when they are elementwise (state codecs fp32 and bf16: moments and
// master copies have the parameter's shape); the block-compressed codecs (fp8, fp8_plain, int8) keep one
// scale per group of the flattened tensor, which a different split would cut through, so they are refused
// before anything is touched. Linear states (stochastic-rounding counters, delayed-scaling histories: equal
// on every tp rank because amaxes are group-reduced) come from the saved tp rank 0.
#include <torch/torch.h>

#include <map>
#include <string>

#include "core/checkpoint/manifest.h"
#include "core/model/gpt.h"
#include "launch/train_config.h"
#include "parallel/mesh.h"

namespace nibble::launch {

using core::checkpoint::Manifest;

// The saved layout as "tp=2 cp=1 dp=1 pp=1 (...)" and whether it equals this job's (then every rank loads
// its own shard file as written).
std::string saved_layout(const Manifest& manifest);
bool same_layout(const Manifest& manifest, const TrainConfig& config);

// The files this rank must read to reshard (dp rank 0, cp rank 0, every tp and pp rank), as indices into
// manifest.shards.
std::vector<size_t> reshard_sources(const Manifest& manifest);

// Throws nibble::Error (naming the codec and what would work) when the saved optimizer states cannot be
// resharded (a weights-only checkpoint has none). Called before any file is read.
void check_reshardable(const Manifest& manifest, const TrainConfig& config);

// The tensors this rank's own shard would hold ("model.*", "optim.*", "linear.*"), built from the saved
// shards `files` (manifest shard index -> its tensors).
std::map<std::string, torch::Tensor> reshard(const Manifest& manifest,
                                             const std::map<size_t, std::map<std::string, torch::Tensor>>& files,
                                             const core::model::Gpt& model, const parallel::Mesh& mesh);

}  // namespace nibble::launch
