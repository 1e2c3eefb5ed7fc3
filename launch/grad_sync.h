#pragma once
// What the trainer does between backward and the optimizer step, over the mesh's groups:
//  - gradients averaged over dp x cp (cp ranks saw different tokens of the same samples; each rank's loss is
//    the mean over its tokens and every rank holds as many, so the average is the gradient of the mean);
//  - the global gradient norm (parallel/nn/global_clip.h): tp-sharded parameters summed over tp, replicated
//    ones counted once, then summed over the pipeline stages (a tied embedding's copy on the last stage not
//    counted again) and, under ZeRO-1, over the dp x cp shards;
//  - delayed-scaling amaxes max-reduced over tp x dp x cp once per step (never across pp: stages hold
//    different layers), so every rank quantizes a tensor with the same scale.
#include <torch/torch.h>

#include <vector>

#include "core/model/gpt.h"
#include "parallel/mesh.h"

namespace nibble::launch {

void average_gradients(core::model::Gpt& model, const parallel::Mesh& mesh);
// Tied embeddings under pp: the first stage's embedding.weight and the last stage's copy get the sum of both
// gradients (one all-reduce over pp; the other stages add zeros). A no-op unless tied and pp > 1.
void sum_tied_embedding_grads(core::model::Gpt& model, const parallel::Mesh& mesh);
// `grads`: one per model.params() entry, in order -- each .grad (replicated optimizer), or this rank's piece of
// it (ZeRO-1: also_sum_over = {dp x cp}, whose ranks hold disjoint pieces); undefined = none.
double global_grad_norm(const core::model::Gpt& model, const parallel::Mesh& mesh,
                        const std::vector<torch::Tensor>& grads,
                        const std::vector<parallel::Communicator*>& also_sum_over = {});
void reduce_delayed_amaxes(const core::model::Gpt& model, const parallel::Mesh& mesh);
// sum over `group` of value / group size.
double mean_over(parallel::Communicator& group, double value);

}  // namespace nibble::launch
