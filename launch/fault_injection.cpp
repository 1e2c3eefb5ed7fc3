#include "launch/fault_injection.h"

#include <sys/resource.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>
#include <vector>

#include "launch/log.h"
#include "precision/error.h"

namespace nibble::launch {
namespace {

constexpr const char* kUsage =
    "NIBBLE_FAULT (test-only) must be nan_grad:<param>:<first_step>:<steps>, nan_param:<param>:<step> or "
    "file_size_limit:<bytes>";

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, sep)) out.push_back(item);
  return out;
}

int64_t positive(const std::string& text, const std::string& value) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != text.size() || v < 1)
    throw InvalidArgument(std::string(kUsage) + " with positive integers; got '" + value + "'");
  return v;
}

// This rank's tensor of parameter `name`, or undefined (another pipeline stage holds it).
torch::Tensor find_param(const core::model::Gpt& model, const std::string& name) {
  for (const auto& p : model.params())
    if (p.name == name && !p.tied_copy) return p.tensor;
  return {};
}

}  // namespace

FaultPlan read_fault_plan(const core::model::Gpt& model) {
  const char* env = std::getenv("NIBBLE_FAULT");
  FaultPlan plan;
  if (!env || !*env) return plan;
  const std::string value = env;
  const std::vector<std::string> f = split(value, ':');
  if (f.size() == 2 && f[0] == "file_size_limit") {
    plan.kind = FaultPlan::Kind::kFileSizeLimit;
    plan.bytes = positive(f[1], value);
    // Writes past the limit then fail with EFBIG (main() ignores SIGXFSZ, which would end the process instead).
    const rlimit limit{static_cast<rlim_t>(plan.bytes), static_cast<rlim_t>(plan.bytes)};
    if (setrlimit(RLIMIT_FSIZE, &limit) != 0)
      throw Error(std::string("NIBBLE_FAULT: setrlimit(RLIMIT_FSIZE) failed: ") + std::strerror(errno));
    log_warning("test-only fault injection is on: NIBBLE_FAULT=" + value);
    return plan;
  }
  if (f.size() == 4 && f[0] == "nan_grad") {
    plan.kind = FaultPlan::Kind::kNanGrad;
    plan.first_step = positive(f[2], value);
    plan.steps = positive(f[3], value);
  } else if (f.size() == 3 && f[0] == "nan_param") {
    plan.kind = FaultPlan::Kind::kNanParam;
    plan.first_step = positive(f[2], value);
    plan.steps = 1;
  } else {
    throw InvalidArgument(std::string(kUsage) + "; got '" + value + "'");
  }
  plan.param = f[1];
  // The name must exist in the model (on some stage); a typo would otherwise inject nothing and pass.
  const auto& config = model.config();
  bool known = false;
  for (const auto& p : model.params()) known = known || p.name == plan.param;
  const bool other_stage = model.chunks().size() != 1 || !model.chunks()[0].embedding || !model.chunks()[0].head;
  if (!known && !other_stage)
    throw InvalidArgument("NIBBLE_FAULT names parameter '" + plan.param + "', which this model (" +
                          std::to_string(config.layers) + " layers) does not have; e.g. embedding.weight, "
                          "layers.0.up.weight, final_norm.weight");
  log_warning("test-only fault injection is on: NIBBLE_FAULT=" + value);
  return plan;
}

void inject_before_forward(const FaultPlan& plan, core::model::Gpt& model, int64_t step) {
  if (plan.kind != FaultPlan::Kind::kNanParam || step != plan.first_step) return;
  torch::Tensor p = find_param(model, plan.param);
  if (!p.defined()) return;
  torch::NoGradGuard no_grad;
  p.fill_(std::numeric_limits<float>::quiet_NaN());
  log_warning("NIBBLE_FAULT: parameter " + plan.param + " set to NaN before step " + std::to_string(step));
}

void inject_after_backward(const FaultPlan& plan, core::model::Gpt& model, int64_t step) {
  if (plan.kind != FaultPlan::Kind::kNanGrad || step < plan.first_step || step >= plan.first_step + plan.steps)
    return;
  torch::Tensor p = find_param(model, plan.param);
  if (!p.defined()) return;
  torch::NoGradGuard no_grad;
  if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
  p.mutable_grad().fill_(std::numeric_limits<float>::quiet_NaN());
  log_warning("NIBBLE_FAULT: the gradient of " + plan.param + " set to NaN at step " + std::to_string(step));
}

}  // namespace nibble::launch
