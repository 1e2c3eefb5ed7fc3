#pragma once
// What the trainer does between backward and the optimizer step, over the mesh's groups:
//  - gradients averaged over dp x cp (cp ranks saw different tokens of the same samples; each rank's loss is
//    the mean over its tokens and every rank holds as many, so the average is the gradient of the mean);
//  - the global gradient norm: tp-sharded parameters summed over tp, replicated ones counted once, then
//    summed over the pipeline stages (a tied embedding's copy on the last stage not counted again);
//  - delayed-scaling amaxes max-reduced over tp x dp x cp once per step (never across pp: stages hold
//    different layers), so every rank quantizes a tensor with the same scale.
#include "core/model/gpt.h"
#include "parallel/mesh.h"

namespace nibble::train {

void average_gradients(nn::Gpt& model, const parallel::Mesh& mesh);
// Tied embeddings under pp: the first stage's embedding.weight and the last stage's copy get the sum of both
// gradients (one all-reduce over pp; the other stages add zeros). A no-op unless tied and pp > 1.
void sum_tied_embedding_grads(nn::Gpt& model, const parallel::Mesh& mesh);
double global_grad_norm(const nn::Gpt& model, const parallel::Mesh& mesh);
void reduce_delayed_amaxes(const nn::Gpt& model, const parallel::Mesh& mesh);
// sum over `group` of value / group size.
double mean_over(parallel::Communicator& group, double value);

}  // namespace nibble::train
