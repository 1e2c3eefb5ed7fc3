#pragma once
// The model as one rank of a tp x cp x dp x pp job holds it: the GPT chunks of this pp rank (the whole model
// when pp = 1), its layers over the tp group (parallel/nn's GroupTensorParallel, SP optional), attention over
// the cp group (ring or Ulysses), and the forward-only pipeline pass eval and sampling use.
#include <torch/torch.h>

#include <memory>

#include "core/model/gpt.h"
#include "launch/train_config.h"
#include "parallel/mesh.h"
#include "parallel/pipeline_schedule.h"

namespace nibble::launch {

// The pipeline's layer split from the config (parallel.pp, virtual_stages, pp_layers).
parallel::LayerAssignmentOptions layer_assignment(const TrainConfig& config);
// Builds this rank's part of the model (collective-free; every rank of the mesh calls it).
std::unique_ptr<core::model::Gpt> build_model(const TrainConfig& config, const parallel::Mesh& mesh);
// The model's config as the trainer builds it ([model] plus parallel.reproducible_sums).
core::model::GptConfig model_config(const TrainConfig& config);
// The whole model on one process without a mesh (Python's nibble.models.GPT at tp = 1 outside mpirun): the same
// parameters as build_model at tp = 1. Throws InvalidArgument when the config's layout is not one rank.
std::unique_ptr<core::model::Gpt> build_single_rank_model(const TrainConfig& config);

// This cp rank's tokens of int64 [batch, seq] batches (core/model/context_parallel_interface.h's split, along dim 1).
torch::Tensor context_parallel_part(const torch::Tensor& tokens, const parallel::Mesh& mesh);

// Forward only, every virtual stage in order over the pp group (stage s on pp rank s % pp), no autograd.
// tokens: this rank's [batch, seq_local] tokens (needed by the rank holding the embedding; every rank passes
// its own). Returns, on the rank holding the head, its final hidden states; an undefined tensor elsewhere.
torch::Tensor pipeline_forward(core::model::Gpt& model, const parallel::Mesh& mesh, const torch::Tensor& tokens);
// The pp rank holding the LM head.
int head_pp_rank(const parallel::Mesh& mesh);

}  // namespace nibble::launch
