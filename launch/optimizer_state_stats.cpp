#include "launch/optimizer_state_stats.h"

#include "optim/fused_step.h"
#include "optim/state_codec.h"
#include "optim/update_rules.h"

namespace nibble::launch {
namespace {

constexpr const char* kMoments[] = {"exp_avg", "exp_avg_sq"};

// Moment `key` of a parameter's state decoded to n floats (zeros before its first step, as the step starts).
std::vector<float> decode_moment(const std::map<std::string, torch::Tensor>& state, const std::string& key,
                                 optim::StateCodec codec, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n), 0.0f);
  if (state.empty()) return out;
  const optim::MomentLayout L = optim::moment_layout(codec, n);
  optim::MomentView v;
  v.values = state.at(key).data_ptr();
  if (L.has_scale) v.scale = state.at(key + "_scale").data_ptr<float>();
  if (L.has_expansion) v.expansion = state.at(key + "_k").data_ptr<float>();
  if (L.has_centre) v.centre = state.at(key + "_centre").data_ptr<float>();
  // (int8 uses a signed map for the first moment, an unsigned one for the second)
  optim::decode_state(L.codec, v, n, key == "exp_avg", out.data());
  return out;
}

}  // namespace

OptimizerStateProbe::OptimizerStateProbe(const optim::Optimizer& optimizer, float grad_scale) : optimizer_(optimizer) {
  const auto& params = optimizer.params();
  const optim::OptimizerConfig& config = optimizer.group_config(0);  // (the trainer's one parameter group)
  if (config.kind != "adamw") return;
  optim::AdamWHyper hyper;
  hyper.beta1 = config.beta1;
  hyper.beta2 = config.beta2;
  const optim::AdamWScalars scalars = optim::adamw_scalars(hyper, 1, 1.0);  // (m and v need only the betas)
  for (size_t i = 0; i < params.size(); ++i) {
    const torch::Tensor& p = params[i].second;
    const int64_t n = p.numel();
    const optim::StateCodec codec = optim::effective_codec(optim::parse_state_codec(config.state), n);
    if (codec == optim::StateCodec::kFP32 || !p.grad().defined() || !p.is_cpu()) continue;
    const auto& state = optimizer.param_state(i);
    Expected e{i, codec, decode_moment(state, "exp_avg", codec, n), decode_moment(state, "exp_avg_sq", codec, n)};
    const torch::Tensor g = p.grad().to(torch::kFloat32).contiguous();
    const float* gp = g.data_ptr<float>();
    for (int64_t k = 0; k < n; ++k) {
      float unused_param = 0.0f;  // (the moments do not depend on it)
      optim::adamw_element(unused_param, e.exp_avg[k], e.exp_avg_sq[k], gp[k] * grad_scale, scalars);
    }
    expected_.push_back(std::move(e));
  }
}

std::map<std::string, std::map<std::string, core::QuantizationErrorSums>> OptimizerStateProbe::measure() const {
  std::map<std::string, std::map<std::string, core::QuantizationErrorSums>> out;
  for (const Expected& e : expected_) {
    const auto& [name, p] = optimizer_.params()[e.index];
    const int64_t n = p.numel();
    const auto& state = optimizer_.param_state(e.index);
    for (const char* key : kMoments) {
      const std::vector<float> stored = decode_moment(state, key, e.codec, n);
      const std::vector<float>& exact = std::string(key) == "exp_avg" ? e.exp_avg : e.exp_avg_sq;
      // bf16 states are written with stochastic rounding (optim/fused_step.h).
      out[name][key] = core::measure_values(exact.data(), stored.data(), n, e.codec == optim::StateCodec::kBF16);
    }
  }
  return out;
}

}  // namespace nibble::launch
