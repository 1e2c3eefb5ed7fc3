#include "parallel/nn/amax_reduction.h"

#include <string>

#include "precision/error.h"

namespace nibble::parallel::nn {

void reduce_pending_amaxes(const std::vector<precision::DelayedScaling*>& states, Communicator& group) {
  std::vector<float> amax;
  amax.reserve(states.size());
  for (size_t i = 0; i < states.size(); ++i) {
    if (!states[i]) throw InvalidArgument("reduce_pending_amaxes: state " + std::to_string(i) + " is null");
    if (states[i]->history().empty())
      throw InvalidArgument("reduce_pending_amaxes: state " + std::to_string(i) + " has an empty amax history");
    amax.push_back(states[i]->history()[0]);
  }
  // One collective for all tensors; matching the states by position is the caller's contract.
  if (!amax.empty()) group.all_reduce(std::span<float>(amax), ReduceOp::kMax);
  for (size_t i = 0; i < states.size(); ++i) states[i]->record(amax[i]);
}

}  // namespace nibble::parallel::nn
