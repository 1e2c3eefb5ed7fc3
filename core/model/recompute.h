#pragma once
// Activation recomputation (Megatron's activation checkpointing; model.recompute): run a piece of the model
// without keeping anything for backward but its inputs, and in backward run it again with autograd on and
// backpropagate through that second graph. Memory for time: the piece's activations live only while its
// backward runs.
//
// The recomputation must compute exactly what the first run computed, or the gradients would differ from a run
// without it. Everything in the model is a function of its inputs except the Linears' stochastic-rounding
// counters (core/linear.h), which advance as they quantize: `counters` are saved before the first run and set
// back before the second, and what they had reached is put back afterwards (a pipeline schedule may have run
// other micro-batches' forwards in between). Delayed scaling records the same amaxes twice, which its max
// keeps as they were.
#include <torch/torch.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/linear.h"

namespace nibble::core::model {

using RecomputedFn = std::function<torch::Tensor(const std::vector<torch::Tensor>&)>;

// fn(activations) with recomputation in backward. `activations`: the tensors fn is given (its second run gets
// fresh leaves of the same values); `params`: the parameters fn reads directly, whose gradients the second run
// computes and this node passes on. `counters`: the Linears fn runs. Without grad mode, or when nothing requires
// grad, just fn(activations).
torch::Tensor recomputed(const std::string& name, const RecomputedFn& fn, const std::vector<torch::Tensor>& activations,
                         const std::vector<torch::Tensor>& params,
                         std::vector<std::shared_ptr<LinearState>> counters = {});

}  // namespace nibble::core::model
