#pragma once
// Vocabulary-parallel embedding and cross-entropy (Megatron's VocabParallelEmbedding and
// tensor_parallel/cross_entropy.py): rank r holds rows [r*V/size, (r+1)*V/size) of the vocabulary, and no
// rank ever holds logits (or embeddings) of the whole vocabulary.
#include <torch/torch.h>

#include "parallel/communicator.h"

namespace nibble::parallel::nn {

// This rank's rows of the [V, hidden] table -> the partial embeddings of `tokens` (zero for ids outside the
// shard), [*tokens.shape, hidden]. The caller reduces them (all-reduce, or reduce-scatter under SP).
torch::Tensor vocab_parallel_embedding_partial(const torch::Tensor& tokens, const torch::Tensor& weight_shard,
                                               const Communicator& comm);

// Mean cross-entropy over targets != ignore_index, from logits_shard [..., V/size] (this rank's vocabulary
// slice) and full-vocabulary targets [...] (int64). Forward: one all-reduce(max) of the row maxima and one
// all-reduce(sum) of [sum exp, target logit]; the gradient (softmax - one-hot) / count is local. fp64_sums:
// the sums run in FP64, exact enough to round to the single-rank loss and gradient bit for bit.
torch::Tensor vocab_parallel_cross_entropy(const torch::Tensor& logits_shard, const torch::Tensor& targets,
                                           Communicator& comm, int64_t ignore_index = -100, bool fp64_sums = false);

}  // namespace nibble::parallel::nn
