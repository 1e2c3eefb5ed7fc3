// nibble::optim::Optimizer: torch parameters stepped by optim/'s fused pass. States are created at a parameter's
// first step with a gradient (zero codes, k = centre = 1, master = the parameter), index bases are cumulative
// over the parameters in order across groups (stochastic-rounding keys), and each group's learning rate is
// passed as lr * lr_factor through AdamWHyper / SgdHyper.
#include "optim/torch/optimizer.h"

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <sstream>

#include "optim/clip.h"
#include "optim/fused_step.h"
#include "optim/state_codec.h"
#include "optim/torch/grad_norm.h"
#if NIBBLE_WITH_CUDA
#include "optim/torch/cuda_update.h"
#endif
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

// Where a parameter may live: the CPU, or a CUDA device when this build has the CUDA step.
bool steppable_device(const torch::Device& d) {
#if NIBBLE_WITH_CUDA
  return d.is_cpu() || d.is_cuda();
#else
  return d.is_cpu();
#endif
}

ElementType element_type(const torch::Tensor& t, const std::string& what) {
  if (!steppable_device(t.device()))
    throw InvalidArgument("nibble::optim::Optimizer: " + what + " is on " + t.device().str() +
                          (t.is_cuda() ? "; this build of nibble has no CUDA kernels (configure with NIBBLE_CUDA=ON)"
                                       : "; this optimizer steps CPU and CUDA tensors"));
  if (t.scalar_type() == torch::kFloat32) return ElementType::kFloat32;
  if (t.scalar_type() == torch::kBFloat16) return ElementType::kBFloat16;
  throw InvalidArgument("nibble::optim::Optimizer: " + what + " has dtype " +
                        std::string(c10::toString(t.scalar_type())) + "; supported: float32, bfloat16");
}

torch::ScalarType value_dtype(StateCodec effective) {
  return effective == StateCodec::kFP32   ? torch::kFloat32
         : effective == StateCodec::kBF16 ? torch::kBFloat16
                                          : torch::kUInt8;
}

struct Expected {
  torch::ScalarType dtype;
  std::vector<int64_t> shape;
  float fill;  // value of a fresh state
};

using Layout = std::map<std::string, Expected>;

bool same_layout(const Layout& a, const Layout& b) {
  if (a.size() != b.size()) return false;
  for (auto i = a.begin(), j = b.begin(); i != a.end(); ++i, ++j)
    if (i->first != j->first || i->second.dtype != j->second.dtype || i->second.shape != j->second.shape) return false;
  return true;
}

// A parameter group: its hyperparameters and parsed codec.
struct Group {
  OptimizerConfig config;
  StateCodec codec = StateCodec::kFP32;
};

Group make_group(OptimizerConfig config) {
  config.validate();
  Group g;
  g.codec = parse_state_codec(config.state);
  g.config = std::move(config);
  return g;
}

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
  // torch spells the pair betas = (beta1, beta2): say both, whichever front-end the caller used.
  if (!(beta1 >= 0.0 && beta1 < 1.0)) bad("beta1", num(beta1), "[0, 1) (torch's betas[0])");
  if (!(beta2 >= 0.0 && beta2 < 1.0)) bad("beta2", num(beta2), "[0, 1) (torch's betas[1])");
  if (!(eps >= 0.0)) bad("eps", num(eps), ">= 0");
  if (!(weight_decay >= 0.0)) bad("weight_decay", num(weight_decay), ">= 0");
  if (!(momentum >= 0.0)) bad("momentum", num(momentum), ">= 0");
  if (!(dampening >= 0.0 && dampening <= 1.0)) bad("dampening", num(dampening), "[0, 1]");
  if (nesterov && !(momentum > 0.0 && dampening == 0.0))
    bad("nesterov", "true",
        "only with momentum > 0 and dampening = 0 (got momentum " + num(momentum) + ", dampening " + num(dampening) +
            ")");
  if (max_grad_norm && !(*max_grad_norm > 0.0 && *max_grad_norm < 1e300))
    bad("max_grad_norm", num(*max_grad_norm), "a finite number > 0, or unset (no clipping)");
}

std::vector<std::string> moment_keys(const OptimizerConfig& c) {
  if (c.kind == "adamw") return {"exp_avg", "exp_avg_sq"};
  if (c.momentum != 0.0) return {"momentum_buffer"};
  return {};
}

std::string StepResult::describe() const {
  if (applied) return "the step was applied";
  std::string where = "parameter '" + nonfinite_param + "'";
  if (nonfinite_element >= 0) where += " (element " + std::to_string(nonfinite_element) + ")";
  return "non-finite gradient (NaN/Inf) in " + where + "; the step was skipped, no parameter or state changed";
}

struct Optimizer::Impl {
  std::vector<std::pair<std::string, torch::Tensor>> params;
  std::vector<Group> groups;
  std::vector<size_t> group_of;  // per parameter
  std::set<std::string> names;
  std::vector<uint64_t> index_bases;
  uint64_t next_base = 0;
  std::vector<std::map<std::string, torch::Tensor>> state;  // per parameter; empty until its first step

  const OptimizerConfig& config_of(size_t i) const { return groups[group_of[i]].config; }

  bool uses_master(const torch::Tensor& p, const OptimizerConfig& c) const {
    return c.master == "fp32" && p.scalar_type() == torch::kBFloat16;
  }

  // The state fields of parameter i under group hyperparameters `g`.
  Layout expected(size_t i, const Group& g) const {
    const torch::Tensor& p = params[i].second;
    const int64_t n = p.numel();
    const MomentLayout L = moment_layout(g.codec, n);
    Layout e;
    e["step"] = {torch::kInt64, {}, 0.0f};
    const torch::ScalarType vt = value_dtype(L.codec);
    const std::vector<int64_t> value_shape = vt == torch::kUInt8 ? std::vector<int64_t>{n} : p.sizes().vec();
    const bool has[3] = {L.has_scale, L.has_expansion, L.has_centre};
    for (const std::string& key : moment_keys(g.config)) {
      e[key] = {vt, value_shape, 0.0f};
      // Zero codes decode to 0 in every codec (scale 0 / absmax 0); k and centre start at 1.
      for (int s = 0; s < 3; ++s)
        if (has[s]) e[key + "_" + kSideNames[s]] = {torch::kFloat32, {L.groups}, s == 0 ? 0.0f : 1.0f};
    }
    if (uses_master(p, g.config)) e["master"] = {torch::kFloat32, p.sizes().vec(), 0.0f};
    return e;
  }
  Layout expected(size_t i) const { return expected(i, groups[group_of[i]]); }

  void init_state(size_t i) {
    if (!state[i].empty()) return;
    for (const auto& [key, e] : expected(i))
      state[i][key] = torch::full(e.shape, e.fill, torch::TensorOptions().dtype(e.dtype).device(params[i].second.device()));
    if (state[i].count("master")) state[i]["master"].copy_(params[i].second.detach());
  }

  MomentView moment(size_t i, const std::string& key) {
    const MomentLayout L = moment_layout(groups[group_of[i]].codec, params[i].second.numel());
    auto& st = state[i];
    MomentView v;
    v.values = st.at(key).data_ptr();
    if (L.has_scale) v.scale = st.at(key + "_scale").data_ptr<float>();
    if (L.has_expansion) v.expansion = st.at(key + "_k").data_ptr<float>();
    if (L.has_centre) v.centre = st.at(key + "_centre").data_ptr<float>();
    return v;
  }

  void check_shared(const OptimizerConfig& c, const std::string& who) const {
    const OptimizerConfig& o = groups.front().config;
    if (c.kind != o.kind || c.seed != o.seed || c.max_grad_norm != o.max_grad_norm)
      throw InvalidArgument(who + ": kind, seed and max_grad_norm belong to the optimizer ('" + o.kind + "', " +
                            std::to_string(o.seed) + ", " + (o.max_grad_norm ? num(*o.max_grad_norm) : "unset") +
                            "); a group cannot change them");
  }

  size_t add_group(std::vector<std::pair<std::string, torch::Tensor>> named_params, OptimizerConfig config) {
    Group g = make_group(std::move(config));
    if (!groups.empty()) check_shared(g.config, "nibble::optim::Optimizer::add_param_group");
    // Check every parameter before taking any: a failed call leaves the optimizer as it was.
    std::set<std::string> added;
    for (const auto& [name, p] : named_params) {
      if (!p.defined()) throw InvalidArgument("nibble::optim::Optimizer: parameter '" + name + "' is undefined");
      element_type(p, "parameter '" + name + "'");
      if (!p.is_contiguous())
        throw InvalidArgument("nibble::optim::Optimizer: parameter '" + name +
                              "' is not contiguous (the fused step writes it in place as one flat buffer)");
      if (names.count(name) || !added.insert(name).second)
        throw InvalidArgument("nibble::optim::Optimizer: two parameters are named '" + name +
                              "'; names key the state dict and must be unique");
    }
    const size_t index = groups.size();
    groups.push_back(std::move(g));
    for (auto& np : named_params) {
      names.insert(np.first);
      index_bases.push_back(next_base);
      next_base += static_cast<uint64_t>(np.second.numel());
      group_of.push_back(index);
      params.push_back(std::move(np));
      state.emplace_back();
    }
    return index;
  }

  // Gradients by parameter (undefined: no gradient, the parameter is skipped).
  std::vector<torch::Tensor> current_grads() const {
    std::vector<torch::Tensor> g;
    g.reserve(params.size());
    for (const auto& [name, p] : params) g.push_back(p.grad());
    return g;
  }

  std::vector<std::string> param_names() const {
    std::vector<std::string> n;
    n.reserve(params.size());
    for (const auto& [name, p] : params) n.push_back(name);
    return n;
  }

  GradientReport check(const std::vector<torch::Tensor>& grads) const {
    for (size_t i = 0; i < grads.size(); ++i)
      if (grads[i].defined() && grads[i].numel() != params[i].second.numel())
        throw InvalidArgument("nibble::optim::Optimizer: gradient of '" + params[i].first + "' has " +
                              std::to_string(grads[i].numel()) + " elements, the parameter " +
                              std::to_string(params[i].second.numel()));
    return check_gradient_tensors(grads, param_names());
  }

  StepResult step(const std::vector<torch::Tensor>& raw_grads, double lr_factor, float grad_scale) {
    const GradientReport report = check(raw_grads);
    StepResult result;
    if (report.first_nonfinite >= 0) {
      result.applied = false;
      result.nonfinite_param = params[report.first_nonfinite].first;
      result.nonfinite_element = report.nonfinite_element;
      result.grad_norm = std::numeric_limits<double>::infinity();
      result.grad_scale = 0.0f;
      return result;
    }
    result.grad_norm = std::sqrt(report.sum_squares);
    const std::optional<double>& max_norm = groups.front().config.max_grad_norm;
    if (max_norm) grad_scale *= clip_coefficient(result.grad_norm, *max_norm);
    result.grad_scale = grad_scale;
    std::vector<torch::Tensor> grads;  // contiguous: the fused pass reads them as flat buffers
    grads.reserve(raw_grads.size());
    for (const torch::Tensor& g : raw_grads) grads.push_back(g.defined() ? g.contiguous() : g);
    std::vector<torch::Tensor> written;
    // Groups are stepped one after the other, each with its hyperparameters (torch's param_groups order).
    for (size_t gi = 0; gi < groups.size(); ++gi) {
      const OptimizerConfig& c = groups[gi].config;
      const std::vector<std::string> keys = moment_keys(c);
      std::vector<TensorSlot> slots;                        // CPU tensors
      std::map<c10::DeviceIndex, std::vector<TensorSlot>> on_cuda;  // CUDA tensors by device
      for (size_t i = 0; i < params.size(); ++i) {
        if (group_of[i] != gi || !grads[i].defined()) continue;
        init_state(i);
        const torch::Tensor& p = params[i].second;
        if (grads[i].device() != p.device())
          throw InvalidArgument("nibble::optim::Optimizer: the gradient of '" + params[i].first + "' is on " +
                                grads[i].device().str() + ", the parameter on " + p.device().str());
        TensorSlot s;
        s.numel = p.numel();
        s.param_type = element_type(p, "parameter '" + params[i].first + "'");
        s.param = p.data_ptr();
        s.grad = grads[i].data_ptr();
        s.grad_type = element_type(grads[i], "gradient of '" + params[i].first + "'");
        s.codec = groups[gi].codec;
        s.index_base = index_bases[i];
        s.step = state[i].at("step").data_ptr<int64_t>();
        if (state[i].count("master")) s.master = state[i].at("master").data_ptr<float>();
        if (!keys.empty()) s.m = moment(i, keys[0]);
        if (keys.size() > 1) s.v = moment(i, keys[1]);
        if (!p.is_cuda()) {
          slots.push_back(s);
        } else if (s.numel > 0) {  // (the CUDA plan takes no empty tensors; they have nothing to update)
          on_cuda[p.device().index()].push_back(s);
        }
        written.push_back(p);
      }
      if (slots.empty() && on_cuda.empty()) continue;
      UpdateOptions o;
      o.seed = c.seed;
      o.grad_scale = grad_scale;
      o.lr_factor = lr_factor;
      o.stochastic_rounding = c.stochastic_rounding;
      o.dre_clamp_k = c.dre_clamp_k;
      const AdamWHyper adamw{c.lr, c.beta1, c.beta2, c.eps, c.weight_decay};
      SgdHyper sgd;
      sgd.lr = c.lr;
      sgd.momentum = c.momentum;
      sgd.dampening = c.dampening;
      sgd.weight_decay = c.weight_decay;
      sgd.nesterov = c.nesterov;
      if (!slots.empty()) {
        if (c.kind == "adamw") {
          adamw_update(slots, adamw, o);
        } else {
          sgd_update(slots, sgd, o);
        }
      }
#if NIBBLE_WITH_CUDA
      for (const auto& [device, device_slots] : on_cuda)
        update_on_cuda(device_slots, c.kind == "adamw" ? UpdateKind::kAdamW : UpdateKind::kSGD, adamw, sgd, o,
                       torch::Device(torch::kCUDA, device));
#endif
    }
    mark_written_in_place(written);
    result.stepped = written.size();
    return result;
  }

  // Splits "<param>.<field>" keys into per-parameter field maps and checks each against `layout_of(i)`.
  template <class LayoutOf>
  std::vector<std::map<std::string, torch::Tensor>> parse_state(const std::map<std::string, torch::Tensor>& saved,
                                                                const std::vector<Group>& with,
                                                                LayoutOf layout_of) const {
    const std::string who = "nibble::optim::Optimizer::load_state_dict: ";
    std::map<std::string, size_t> index;
    for (size_t i = 0; i < params.size(); ++i) index[params[i].first] = i;
    std::vector<std::map<std::string, torch::Tensor>> loaded(params.size());
    for (const auto& [full, t] : saved) {
      const size_t dot = full.rfind('.');
      const auto it = dot == std::string::npos ? index.end() : index.find(full.substr(0, dot));
      if (it == index.end())
        throw InvalidArgument(who + "key '" + full +
                              "' names no parameter of this optimizer (keys are '<param>.<field>')");
      loaded[it->second][full.substr(dot + 1)] = t;
    }
    for (size_t i = 0; i < loaded.size(); ++i) {
      if (loaded[i].empty()) continue;
      const std::string& name = params[i].first;
      const Layout expected = layout_of(i);
      const OptimizerConfig& c = with[group_of[i]].config;
      std::string want, got;
      for (const auto& [k, e] : expected) want += " " + k;
      for (const auto& [k, t] : loaded[i]) got += " " + k;
      if (want != got)
        throw InvalidArgument(who + "saved state of '" + name + "' has fields [" + got + " ]; codec '" + c.state +
                              "' with master='" + c.master + "' needs [" + want + " ]");
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
    return loaded;
  }

  // Copies the checked fields in as saved (never cast: FP32 side data of bfloat16 parameters stays FP32).
  void commit_state(const std::vector<std::map<std::string, torch::Tensor>>& loaded) {
    for (size_t i = 0; i < loaded.size(); ++i) {
      state[i].clear();
      const Layout e = expected(i);
      for (const auto& [k, t] : loaded[i])
        state[i][k] = t.detach().to(params[i].second.device()).clone().contiguous().reshape(e.at(k).shape);
    }
  }
};

Optimizer::Optimizer(std::vector<std::pair<std::string, torch::Tensor>> named_params, OptimizerConfig config)
    : impl_(std::make_unique<Impl>()) {
  impl_->add_group(std::move(named_params), std::move(config));
}

Optimizer::~Optimizer() = default;

double Optimizer::grad_norm_squared() const {
  const GradientReport r = impl_->check(impl_->current_grads());
  return r.first_nonfinite >= 0 ? std::numeric_limits<double>::infinity() : r.sum_squares;
}

std::string Optimizer::find_nonfinite_grad() const {
  const GradientReport r = impl_->check(impl_->current_grads());
  return r.first_nonfinite >= 0 ? impl_->params[r.first_nonfinite].first : std::string();
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
  return impl_->step(grads, lr_factor, grad_scale);
}

void Optimizer::set_index_bases(const std::vector<uint64_t>& bases) {
  if (bases.size() != impl_->params.size())
    throw InvalidArgument("nibble::optim::Optimizer::set_index_bases: " + std::to_string(bases.size()) + " bases for " +
                          std::to_string(impl_->params.size()) + " parameters");
  impl_->index_bases = bases;
}

size_t Optimizer::add_param_group(std::vector<std::pair<std::string, torch::Tensor>> named_params,
                                  OptimizerConfig config) {
  return impl_->add_group(std::move(named_params), std::move(config));
}

size_t Optimizer::num_groups() const {
  return impl_->groups.size();
}

const OptimizerConfig& Optimizer::group_config(size_t group) const {
  if (group >= impl_->groups.size())
    throw InvalidArgument("nibble::optim::Optimizer: group " + std::to_string(group) + " does not exist (" +
                          std::to_string(impl_->groups.size()) + " groups)");
  return impl_->groups[group].config;
}

void Optimizer::set_group_config(size_t group, OptimizerConfig config) {
  group_config(group);  // range check
  Group g = make_group(std::move(config));
  impl_->check_shared(g.config, "nibble::optim::Optimizer::set_group_config");
  const OptimizerConfig& now = impl_->groups[group].config;
  // Front-ends call this before every step (an LR scheduler moves lr): compare layouts only when one may change.
  const bool may_relayout =
      g.config.state != now.state || g.config.master != now.master || moment_keys(g.config) != moment_keys(now);
  for (size_t i = 0; may_relayout && i < impl_->params.size(); ++i)
    if (impl_->group_of[i] == group && !impl_->state[i].empty() &&
        !same_layout(impl_->expected(i), impl_->expected(i, g)))
      throw InvalidArgument("nibble::optim::Optimizer::set_group_config: parameter '" + impl_->params[i].first +
                            "' of group " + std::to_string(group) + " holds state in codec '" +
                            impl_->groups[group].config.state + "' with master='" + impl_->groups[group].config.master +
                            "'; the new state '" + g.config.state + "' / master='" + g.config.master +
                            "' / momentum would lay it out differently (change it before the first step, or load "
                            "a state saved with it)");
  impl_->groups[group] = std::move(g);
}

const std::map<std::string, torch::Tensor>& Optimizer::param_state(size_t i) const {
  if (i >= impl_->params.size())
    throw InvalidArgument("nibble::optim::Optimizer::param_state: parameter " + std::to_string(i) +
                          " does not exist (" + std::to_string(impl_->params.size()) + " parameters)");
  return impl_->state[i];
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
  Impl& m = *impl_;
  m.commit_state(m.parse_state(saved, m.groups, [&m](size_t i) { return m.expected(i); }));
}

void Optimizer::load_state_dict(const std::map<std::string, torch::Tensor>& saved,
                                const std::vector<OptimizerConfig>& group_configs) {
  Impl& m = *impl_;
  if (group_configs.size() != m.groups.size())
    throw InvalidArgument("nibble::optim::Optimizer::load_state_dict: " + std::to_string(group_configs.size()) +
                          " group configs for " + std::to_string(m.groups.size()) + " groups");
  std::vector<Group> groups;
  for (const OptimizerConfig& c : group_configs) {
    groups.push_back(make_group(c));
    m.check_shared(c, "nibble::optim::Optimizer::load_state_dict");
  }
  const auto loaded = m.parse_state(saved, groups, [&](size_t i) { return m.expected(i, groups[m.group_of[i]]); });
  m.groups = std::move(groups);
  m.commit_state(loaded);
}

int64_t Optimizer::state_bytes(bool include_master) const {
  int64_t total = 0;
  for (size_t i = 0; i < impl_->params.size(); ++i) {
    const torch::Tensor& p = impl_->params[i].second;
    const Group& g = impl_->groups[impl_->group_of[i]];
    total += moment_layout(g.codec, p.numel()).bytes() * static_cast<int64_t>(moment_keys(g.config).size());
    if (include_master && impl_->uses_master(p, g.config)) total += 4 * p.numel();
  }
  return total;
}

const OptimizerConfig& Optimizer::config() const {
  return impl_->groups.front().config;
}

const std::vector<std::pair<std::string, torch::Tensor>>& Optimizer::params() const {
  return impl_->params;
}

}  // namespace nibble::optim
