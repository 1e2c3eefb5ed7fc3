#pragma once
// The per-layer state a bit-exact resume needs besides weights and optimizer states: each Linear's
// stochastic-rounding counter and its delayed-scaling amax histories and scales, as named tensors of a
// checkpoint shard ("linear.<layer>.sr_counter", "linear.<layer>.ds_x.history", "...ds_x.scale", ...).
#include <torch/torch.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/linear.h"

namespace nibble::core::checkpoint {

void append_linear_states(const std::vector<std::shared_ptr<core::LinearState>>& states,
                          std::vector<std::pair<std::string, torch::Tensor>>& out);
// Throws nibble::Error naming `source` and the missing or mis-shaped entry.
void restore_linear_states(const std::vector<std::shared_ptr<core::LinearState>>& states,
                           const std::map<std::string, torch::Tensor>& tensors, const std::string& source);

}  // namespace nibble::core::checkpoint
