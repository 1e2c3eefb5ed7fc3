// nibble::optim::Optimizer: torch parameters stepped by optim/'s fused pass. The numerics are those of the
// Python nibble.optim classes (python/nibble/optim.py): states created at a parameter's first step with a
// gradient (zero codes, k = centre = 1, master = the parameter), index bases cumulative over the parameters in
// order (stochastic-rounding keys), the learning rate passed as lr * lr_factor through the same AdamWHyper.
#include "optim/torch/optimizer.h"

#include <limits>
#include <set>
#include <sstream>

#include "optim/fused_step.h"
#include "optim/grad_check.h"
#include "optim/state_codec.h"
#include "precision/error.h"

namespace nibble::optim {
namespace {

const char* const kSideNames[] = {"scale", "k", "centre"};

std::string num(double x) {
  std::ostringstream s;
  s.precision(17);
  s << x;
  return s.str();
}

ElementType element_type(const torch::Tensor& t, const std::string& what) {
  if (!t.device().is_cpu())
    throw InvalidArgument("nibble::optim::Optimizer: " + what + " is on " + t.device().str() +
                          "; this optimizer steps CPU tensors");
  if (t.scalar_type() == torch::kFloat32) return ElementType::kFloat32;
  if (t.scalar_type() == torch::kBFloat16) return ElementType::kBFloat16;
  throw InvalidArgument("nibble::optim::Optimizer: " + what + " has dtype " +
                        std::string(c10::toString(t.scalar_type())) + "; supported: float32, bfloat16");
}

torch::ScalarType value_dtype(StateCodec effective) {
  return effective == StateCodec::kFP32 ? torch::kFloat32 : effective == StateCodec::kBF16 ? torch::kBFloat16
                                                                                           : torch::kUInt8;
}

struct Expected {
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  float fill;  // value of a fresh state
};

}  // namespace

void mark_written_in_place(const std::vector<torch::Tensor>& tensors) {
  for (const torch::Tensor& t : tensors)
    if (t.defined()) t.unsafeGetTensorImpl()->bump_version();
}

void OptimizerConfig::validate() const {
  auto bad = [](const std::string& key, const std::string& value, const std::string& valid) {
    throw InvalidArgument("nibble::optim::OptimizerConfig: " + key + " = " + value + " is invalid; valid: " + valid);
  };
  if (kind != "adamw" && kind != "sgd") bad("kind", "'" + kind + "'", "adamw, sgd");
  parse_state_codec(state);  // throws naming the codecs
  if (master != "fp32" && master != "none") bad("master", "'" + master + "'", "fp32, none");
  if (!(lr >= 0.0) || !(lr < 1e30)) bad("lr", num(lr), "a finite number >= 0");
  if (!(beta1 >= 0.0 && beta1 < 1.0)) bad("beta1", num(beta1), "[0, 1)");
  if (!(beta2 >= 0.0 && beta2 < 1.0)) bad("beta2", num(beta2), "[0, 1)");
  if (!(eps >= 0.0)) bad("eps", num(eps), ">= 0");
  if (!(weight_decay >= 0.0)) bad("weight_decay", num(weight_decay), ">= 0");
  if (!(momentum >= 0.0)) bad("momentum", num(momentum), ">= 0");
}

struct Optimizer::Impl {
  std::vector<std::pair<std::string, torch::Tensor>> params;
  OptimizerConfig config;
  StateCodec codec = StateCodec::kFP32;
  std::vector<uint64_t> index_bases;
  std::vector<std::map<std::string, torch::Tensor>> state;  // per parameter; empty until its first step

  std::vector<std::string> moment_keys() const {
    if (config.kind == "adamw") return {"exp_avg", "exp_avg_sq"};
    if (config.momentum != 0.0) return {"momentum_buffer"};
    return {};
  }

  bool uses_master(const torch::Tensor& p) const {
    return config.master == "fp32" && p.scalar_type() == torch::kBFloat16;
  }

  std::map<std::string, Expected> expected(size_t i) const {
    const torch::Tensor& p = params[i].second;
    const int64_t n = p.numel();
    const MomentLayout L = moment_layout(codec, n);
    std::map<std::string, Expected> e;
    e["step"] = {torch::kInt64, {}, 0.0f};
    const torch::ScalarType vt = value_dtype(L.codec);
    const std::vector<int64_t> value_shape = vt == torch::kUInt8 ? std::vector<int64_t>{n} : p.sizes().vec();
    const bool has[3] = {L.has_scale, L.has_expansion, L.has_centre};
    for (const std::string& key : moment_keys()) {
      e[key] = {vt, value_shape, 0.0f};
      // Zero codes decode to 0 in every codec (scale 0 / absmax 0); k and centre start at 1 (as in Python).
      for (int s = 0; s < 3; ++s)
        if (has[s]) e[key + "_" + kSideNames[s]] = {torch::kFloat32, {L.groups}, s == 0 ? 0.0f : 1.0f};
    }
    if (uses_master(p)) e["master"] = {torch::kFloat32, p.sizes().vec(), 0.0f};
    return e;
  }

  void init_state(size_t i) {
    if (!state[i].empty()) return;
    for (const auto& [key, e] : expected(i))
      state[i][key] = torch::full(e.shape, e.fill, torch::TensorOptions().dtype(e.dtype));
    if (state[i].count("master")) state[i]["master"].copy_(params[i].second.detach());
  }

  MomentView moment(size_t i, const std::string& key) {
    const MomentLayout L = moment_layout(codec, params[i].second.numel());
    auto& st = state[i];
    MomentView v;
    v.values = st.at(key).data_ptr();
    if (L.has_scale) v.scale = st.at(key + "_scale").data_ptr<float>();
    if (L.has_expansion) v.expansion = st.at(key + "_k").data_ptr<float>();
    if (L.has_centre) v.centre = st.at(key + "_centre").data_ptr<float>();
    return v;
  }

  // Gradients by parameter (undefined: no gradient, the parameter is skipped), made contiguous.
  std::vector<torch::Tensor> current_grads() const {
    std::vector<torch::Tensor> g;
    for (const auto& [name, p] : params) {
      torch::Tensor grad = p.grad();
      g.push_back(grad.defined() ? grad.contiguous() : grad);
    }
    return g;
  }

  GradientReport check(const std::vector<torch::Tensor>& grads, std::vector<size_t>* order) const {
    std::vector<GradientView> views;
    for (size_t i = 0; i < grads.size(); ++i) {
      if (!grads[i].defined()) continue;
      const std::string what = "gradient of '" + params[i].first + "'";
      if (grads[i].numel() != params[i].second.numel())
        throw InvalidArgument("nibble::optim::Optimizer: " + what + " has " + std::to_string(grads[i].numel()) +
                              " elements, the parameter " + std::to_string(params[i].second.numel()));
      views.push_back({grads[i].data_ptr(), element_type(grads[i], what), grads[i].numel()});
      if (order) order->push_back(i);
    }
    return check_gradients(views);
  }

  StepResult step(const std::vector<torch::Tensor>& grads, double lr_factor, float grad_scale) {
    std::vector<size_t> order;
    const GradientReport report = check(grads, &order);
    if (report.first_nonfinite >= 0) return {false, params[order[report.first_nonfinite]].first};
    if (order.empty()) return {};
    std::vector<TensorSlot> slots;
    for (size_t i : order) {
      init_state(i);
      const torch::Tensor& p = params[i].second;
      TensorSlot s;
      s.numel = p.numel();
      s.param_type = element_type(p, "parameter '" + params[i].first + "'");
      s.param = p.data_ptr();
      s.grad = grads[i].data_ptr();
      s.grad_type = element_type(grads[i], "gradient of '" + params[i].first + "'");
      s.codec = codec;
      s.index_base = index_bases[i];
      s.step = state[i].at("step").data_ptr<int64_t>();
      if (state[i].count("master")) s.master = state[i].at("master").data_ptr<float>();
      const std::vector<std::string> keys = moment_keys();
      if (!keys.empty()) s.m = moment(i, keys[0]);
      if (keys.size() > 1) s.v = moment(i, keys[1]);
      slots.push_back(s);
    }
    UpdateOptions o;
    o.seed = config.seed;
    o.grad_scale = grad_scale;
    o.lr_factor = lr_factor;
    o.stochastic_rounding = config.stochastic_rounding;
    if (config.kind == "adamw") {
      adamw_update(slots, AdamWHyper{config.lr, config.beta1, config.beta2, config.eps, config.weight_decay}, o);
    } else {
      SgdHyper h;
      h.lr = config.lr;
      h.momentum = config.momentum;
      h.dampening = 0.0;
      h.weight_decay = config.weight_decay;
      h.nesterov = false;
      sgd_update(slots, h, o);
    }
    std::vector<torch::Tensor> written;
    for (size_t i : order) written.push_back(params[i].second);
    mark_written_in_place(written);
    return {};
  }
};

Optimizer::Optimizer(std::vector<std::pair<std::string, torch::Tensor>> named_params, OptimizerConfig config)
    : impl_(std::make_unique<Impl>()) {
  config.validate();
  impl_->config = std::move(config);
  impl_->codec = parse_state_codec(impl_->config.state);
  std::set<std::string> names;
  uint64_t base = 0;
  for (const auto& [name, p] : named_params) {
    if (!p.defined()) throw InvalidArgument("nibble::optim::Optimizer: parameter '" + name + "' is undefined");
    element_type(p, "parameter '" + name + "'");
    if (!p.is_contiguous())
      throw InvalidArgument("nibble::optim::Optimizer: parameter '" + name +
                            "' is not contiguous (the fused step writes it in place as one flat buffer)");
    if (!names.insert(name).second)
      throw InvalidArgument("nibble::optim::Optimizer: two parameters are named '" + name +
                            "'; names key the state dict and must be unique");
    impl_->index_bases.push_back(base);
    base += static_cast<uint64_t>(p.numel());
  }
  impl_->params = std::move(named_params);
  impl_->state.resize(impl_->params.size());
}

Optimizer::~Optimizer() = default;

double Optimizer::grad_norm_squared() const {
  const GradientReport r = impl_->check(impl_->current_grads(), nullptr);
  return r.first_nonfinite >= 0 ? std::numeric_limits<double>::infinity() : r.sum_squares;
}

std::string Optimizer::find_nonfinite_grad() const {
  std::vector<size_t> order;
  const GradientReport r = impl_->check(impl_->current_grads(), &order);
  return r.first_nonfinite >= 0 ? impl_->params[order[r.first_nonfinite]].first : std::string();
}

StepResult Optimizer::step(double lr_factor, float grad_scale) {
  torch::NoGradGuard no_grad;
  return impl_->step(impl_->current_grads(), lr_factor, grad_scale);
}

StepResult Optimizer::step_with_grads(const std::vector<torch::Tensor>& grads, double lr_factor, float grad_scale) {
  if (grads.size() != impl_->params.size())
    throw InvalidArgument("nibble::optim::Optimizer::step_with_grads: " + std::to_string(grads.size()) +
                          " gradients for " + std::to_string(impl_->params.size()) + " parameters");
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> g;
  for (const torch::Tensor& t : grads) g.push_back(t.defined() ? t.contiguous() : t);
  return impl_->step(g, lr_factor, grad_scale);
}

void Optimizer::set_index_bases(const std::vector<uint64_t>& bases) {
  if (bases.size() != impl_->params.size())
    throw InvalidArgument("nibble::optim::Optimizer::set_index_bases: " + std::to_string(bases.size()) +
                          " bases for " + std::to_string(impl_->params.size()) + " parameters");
  impl_->index_bases = bases;
}

void Optimizer::zero_grad() {
  for (auto& [name, p] : impl_->params) {
    torch::Tensor& g = p.mutable_grad();
    if (g.defined()) g = torch::Tensor();  // set_to_none, torch's default
  }
}

std::map<std::string, torch::Tensor> Optimizer::state_dict() const {
  std::map<std::string, torch::Tensor> out;
  for (size_t i = 0; i < impl_->params.size(); ++i)
    for (const auto& [key, t] : impl_->state[i]) out[impl_->params[i].first + "." + key] = t.clone();
  return out;
}

void Optimizer::load_state_dict(const std::map<std::string, torch::Tensor>& saved) {
  const std::string who = "nibble::optim::Optimizer::load_state_dict: ";
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < impl_->params.size(); ++i) index[impl_->params[i].first] = i;
  std::vector<std::map<std::string, torch::Tensor>> loaded(impl_->params.size());
  for (const auto& [full, t] : saved) {
    const size_t dot = full.rfind('.');
    const auto it = dot == std::string::npos ? index.end() : index.find(full.substr(0, dot));
    if (it == index.end())
      throw InvalidArgument(who + "key '" + full + "' names no parameter of this optimizer (keys are '<param>.<field>')");
    loaded[it->second][full.substr(dot + 1)] = t;
  }
  for (size_t i = 0; i < loaded.size(); ++i) {
    if (loaded[i].empty()) continue;
    const std::string& name = impl_->params[i].first;
    const auto expected = impl_->expected(i);
    std::string want, got;
    for (const auto& [k, e] : expected) want += " " + k;
    for (const auto& [k, t] : loaded[i]) got += " " + k;
    if (want != got)
      throw InvalidArgument(who + "saved state of '" + name + "' has fields [" + got + " ]; codec '" +
                            impl_->config.state + "' with master='" + impl_->config.master + "' needs [" + want +
                            " ]");
    for (const auto& [k, e] : expected) {
      const torch::Tensor& t = loaded[i].at(k);
      int64_t numel = 1;
      for (int64_t d : e.shape) numel *= d;
      if (t.scalar_type() != e.dtype || t.numel() != numel)
        throw InvalidArgument(who + "'" + name + "." + k + "' must be a " + c10::toString(e.dtype) + " tensor of " +
                              std::to_string(numel) + " elements, got " + c10::toString(t.scalar_type()) + " with " +
                              std::to_string(t.numel()));
    }
  }
  for (size_t i = 0; i < loaded.size(); ++i) {
    impl_->state[i].clear();
    for (const auto& [k, t] : loaded[i]) {
      const auto e = impl_->expected(i).at(k);
      impl_->state[i][k] = t.detach().to(torch::kCPU).clone().contiguous().reshape(e.shape);
    }
  }
}

int64_t Optimizer::state_bytes() const {
  int64_t total = 0;
  const int64_t moments = static_cast<int64_t>(impl_->moment_keys().size());
  for (const auto& [name, p] : impl_->params) {
    total += moment_layout(impl_->codec, p.numel()).bytes() * moments;
    if (impl_->uses_master(p)) total += 4 * p.numel();
  }
  return total;
}

const OptimizerConfig& Optimizer::config() const { return impl_->config; }

const std::vector<std::pair<std::string, torch::Tensor>>& Optimizer::params() const { return impl_->params; }

}  // namespace nibble::optim
