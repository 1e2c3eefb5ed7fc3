#include "core/checkpoint/linear_state_io.h"

#include <cstring>

#include "precision/error.h"

namespace nibble::core::checkpoint {
namespace {

using DsSlot = std::unique_ptr<precision::DelayedScaling> core::LinearState::*;
constexpr std::pair<const char*, DsSlot> kRoles[] = {
    {"ds_x", &core::LinearState::ds_x}, {"ds_w", &core::LinearState::ds_w}, {"ds_dy", &core::LinearState::ds_dy}};

const torch::Tensor& need(const std::map<std::string, torch::Tensor>& tensors, const std::string& key,
                          const std::string& source) {
  auto it = tensors.find(key);
  if (it == tensors.end())
    throw Error("checkpoint '" + source + "' has no entry '" + key +
                "': it was written by a different model or recipe");
  return it->second;
}

}  // namespace

void append_linear_states(const std::vector<std::shared_ptr<core::LinearState>>& states,
                          std::vector<std::pair<std::string, torch::Tensor>>& out) {
  for (const auto& s : states) {
    const std::string base = "linear." + s->name + ".";
    // The counter is a uint64 carried bit for bit in an int64 tensor.
    int64_t counter = 0;
    std::memcpy(&counter, &s->sr_counter, sizeof counter);
    out.emplace_back(base + "sr_counter", torch::tensor({counter}, torch::kInt64));
    for (const auto& [role, slot] : kRoles) {
      const auto& ds = (*s).*slot;
      if (!ds) continue;
      out.emplace_back(base + role + ".history", torch::tensor(ds->history(), torch::kFloat32));
      out.emplace_back(base + role + ".scale", torch::tensor({ds->scale()}, torch::kFloat32));
    }
  }
}

void restore_linear_states(const std::vector<std::shared_ptr<core::LinearState>>& states,
                           const std::map<std::string, torch::Tensor>& tensors, const std::string& source) {
  for (const auto& s : states) {
    const std::string base = "linear." + s->name + ".";
    const int64_t counter = need(tensors, base + "sr_counter", source).item<int64_t>();
    std::memcpy(&s->sr_counter, &counter, sizeof counter);
    for (const auto& [role, slot] : kRoles) {
      auto& ds = (*s).*slot;
      if (!ds) continue;
      const torch::Tensor h = need(tensors, base + role + ".history", source).contiguous();
      const float* p = h.data_ptr<float>();
      ds->restore(std::vector<float>(p, p + h.numel()), need(tensors, base + role + ".scale", source).item<float>());
    }
  }
}

}  // namespace nibble::core::checkpoint
