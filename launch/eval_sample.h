#pragma once
// Held-out evaluation and text sampling at any layout. Both are collective (every rank of the job calls them
// in lockstep): the forward runs stage by stage over pp (model_layout.h's pipeline_forward), losses are averaged
// over dp x cp, and sampling gathers the head's vocabulary slices over tp so every rank draws the same token
// with the same seeded generator.
#include <string>

#include "core/data/batch_sampler.h"
#include "core/data/tokenizer.h"
#include "core/model/gpt.h"
#include "launch/train_config.h"
#include "parallel/mesh.h"

namespace nibble::launch {

// The mean loss over `batches` (train.eval_batches for the held-out loss) fixed batches of windows of `data`'s
// split, the same on every rank.
double evaluate(const TrainConfig& c, core::model::Gpt& model, const core::data::BatchSampler& data,
                const parallel::Mesh& mesh, int64_t batches);
// train.sample_tokens tokens after train.sample_prompt at train.sample_temperature, decoded by `tok` (bytes
// outside printable ASCII shown as '?').
std::string sample(const TrainConfig& c, core::model::Gpt& model, const parallel::Mesh& mesh,
                   const core::data::Tokenizer& tok);

}  // namespace nibble::launch
