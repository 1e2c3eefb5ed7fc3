// nibble.optim's C++ half: the optimizer front-end (optim/torch/optimizer.h, bound as TorchOptimizer; the
// Python AdamW / SGD classes are torch.optim.Optimizer wrappers around it), its config, the clipping
// coefficient (optim/clip.h), codec round trips and LR schedule factors.
#include <pybind11/stl.h>

#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "optim/clip.h"
#include "optim/dynamic_map.h"
#include "optim/fused_step.h"
#include "optim/lr_schedule.h"
#include "optim/torch/optimizer.h"
#include "precision/error.h"
#include "python/csrc/bindings.h"

namespace nibble::python {
namespace {

namespace py = pybind11;
using optim::ElementType;
using optim::StateCodec;

ElementType element_type(const torch::Tensor& t, const std::string& what) {
  if (!t.device().is_cpu())
    throw InvalidArgument("nibble.optim: " + what + " is on " + t.device().str() +
                          "; this build's Python optimizer steps CPU tensors");
  if (!t.is_contiguous()) throw InvalidArgument("nibble.optim: " + what + " is not contiguous");
  if (t.scalar_type() == torch::kFloat32) return ElementType::kFloat32;
  if (t.scalar_type() == torch::kBFloat16) return ElementType::kBFloat16;
  throw py::type_error("nibble.optim: " + what + " has dtype " + std::string(c10::toString(t.scalar_type())) +
                       "; supported: torch.float32, torch.bfloat16");
}

// A state tensor by key, checked for dtype and element count.
torch::Tensor state_tensor(const py::dict& state, const std::string& key, torch::ScalarType dtype, int64_t numel,
                           const std::string& name) {
  if (!state.contains(key.c_str())) throw InvalidArgument("nibble.optim: state of " + name + " has no '" + key + "'");
  torch::Tensor t = state[key.c_str()].cast<torch::Tensor>();
  if (t.scalar_type() != dtype || t.numel() != numel || !t.is_contiguous() || !t.device().is_cpu())
    throw InvalidArgument("nibble.optim: state '" + key + "' of " + name + " must be a contiguous CPU " +
                          std::string(c10::toString(dtype)) + " tensor of " + std::to_string(numel) +
                          " elements, got " + std::string(c10::toString(t.scalar_type())) + " with " +
                          std::to_string(t.numel()));
  return t;
}

optim::MomentView moment_view(const py::dict& state, const std::string& key, StateCodec codec, int64_t numel,
                              const std::string& name) {
  const optim::MomentLayout L = optim::moment_layout(codec, numel);
  optim::MomentView v;
  const torch::ScalarType value_type = L.codec == StateCodec::kFP32   ? torch::kFloat32
                                       : L.codec == StateCodec::kBF16 ? torch::kBFloat16
                                                                      : torch::kUInt8;
  v.values = state_tensor(state, key, value_type, numel, name).data_ptr();
  if (L.has_scale) v.scale = state_tensor(state, key + "_scale", torch::kFloat32, L.groups, name).data_ptr<float>();
  if (L.has_expansion) v.expansion = state_tensor(state, key + "_k", torch::kFloat32, L.groups, name).data_ptr<float>();
  if (L.has_centre) v.centre = state_tensor(state, key + "_centre", torch::kFloat32, L.groups, name).data_ptr<float>();
  return v;
}

using NamedParams = std::vector<std::pair<std::string, torch::Tensor>>;
using StateDict = std::map<std::string, torch::Tensor>;

// A config from a dict of OptimizerConfig's fields (torch's "betas" pair accepted for beta1, beta2; seed and
// max_grad_norm checked here, where Python's int and None arrive).
optim::OptimizerConfig config_of(const py::dict& d) {
  optim::OptimizerConfig c;
  for (const auto& [k, v] : d) {
    const std::string key = py::str(k);
    if (key == "kind")
      c.kind = v.cast<std::string>();
    else if (key == "state")
      c.state = v.cast<std::string>();
    else if (key == "master")
      c.master = v.cast<std::string>();
    else if (key == "lr")
      c.lr = v.cast<double>();
    else if (key == "beta1")
      c.beta1 = v.cast<double>();
    else if (key == "beta2")
      c.beta2 = v.cast<double>();
    else if (key == "betas")
      std::tie(c.beta1, c.beta2) = v.cast<std::pair<double, double>>();
    else if (key == "eps")
      c.eps = v.cast<double>();
    else if (key == "weight_decay")
      c.weight_decay = v.cast<double>();
    else if (key == "momentum")
      c.momentum = v.cast<double>();
    else if (key == "dampening")
      c.dampening = v.cast<double>();
    else if (key == "nesterov")
      c.nesterov = v.cast<bool>();
    else if (key == "stochastic_rounding")
      c.stochastic_rounding = v.cast<bool>();
    else if (key == "dre_clamp_k")
      c.dre_clamp_k = v.cast<bool>();
    else if (key == "max_grad_norm")
      c.max_grad_norm = v.is_none() ? std::nullopt : std::optional(v.cast<double>());
    else if (key == "seed") {
      try {
        c.seed = v.cast<uint64_t>();
      } catch (const py::cast_error&) {
        throw InvalidArgument("nibble optimizer config: seed = " + std::string(py::str(v)) +
                              " is invalid; valid: an integer in [0, 2^64)");
      }
    } else {
      throw InvalidArgument("nibble optimizer config: unknown key '" + key +
                            "'; valid: kind, state, master, lr, beta1, beta2 (or betas), eps, weight_decay, "
                            "momentum, dampening, nesterov, stochastic_rounding, dre_clamp_k, seed, max_grad_norm");
    }
  }
  c.validate();
  return c;
}

// Python callers expect TypeError for an unsupported parameter dtype (as torch raises); the optimizer's own
// check raises ValueError, so the binding looks first.
void check_param_dtypes(const NamedParams& params) {
  for (const auto& [name, p] : params)
    if (p.defined() && p.scalar_type() != torch::kFloat32 && p.scalar_type() != torch::kBFloat16)
      throw py::type_error("nibble.optim: parameter '" + name + "' has dtype " +
                           std::string(py::str(py::cast(p).attr("dtype"))) +
                           "; supported: torch.float32, torch.bfloat16");
}

py::dict step_report(const optim::StepResult& r) {
  py::dict d;
  d["applied"] = r.applied;
  d["nonfinite_param"] = r.nonfinite_param;
  d["nonfinite_element"] = r.nonfinite_element;
  d["grad_norm"] = r.grad_norm;
  d["grad_scale"] = r.grad_scale;
  d["stepped"] = r.stepped;
  d["message"] = r.describe();
  return d;
}

void bind_optimizer(py::module_& m) {
  py::class_<optim::OptimizerConfig>(m, "OptimizerConfig")
      .def(py::init(&config_of), py::arg("config"))
      .def_readonly("kind", &optim::OptimizerConfig::kind)
      .def_readonly("state", &optim::OptimizerConfig::state)
      .def_readonly("master", &optim::OptimizerConfig::master)
      .def_readonly("lr", &optim::OptimizerConfig::lr)
      .def_readonly("seed", &optim::OptimizerConfig::seed)
      .def_readonly("max_grad_norm", &optim::OptimizerConfig::max_grad_norm);

  py::class_<optim::Optimizer>(m, "TorchOptimizer")
      .def(py::init([](const NamedParams& params, const py::dict& config) {
             check_param_dtypes(params);
             return std::make_unique<optim::Optimizer>(params, config_of(config));
           }),
           py::arg("named_params"), py::arg("config"))
      .def(
          "add_param_group",
          [](optim::Optimizer& o, const NamedParams& params, const py::dict& config) {
            check_param_dtypes(params);
            return o.add_param_group(params, config_of(config));
          },
          py::arg("named_params"), py::arg("config"))
      .def(
          "set_group_config",
          [](optim::Optimizer& o, size_t group, const py::dict& config) {
            o.set_group_config(group, config_of(config));
          },
          py::arg("group"), py::arg("config"))
      .def_property_readonly("num_groups", &optim::Optimizer::num_groups)
      .def("grad_norm_squared", &optim::Optimizer::grad_norm_squared, py::call_guard<py::gil_scoped_release>())
      .def("find_nonfinite_grad", &optim::Optimizer::find_nonfinite_grad, py::call_guard<py::gil_scoped_release>())
      .def(
          "step",
          [](optim::Optimizer& o, double lr_factor, float grad_scale) {
            optim::StepResult r;
            {
              py::gil_scoped_release no_gil;
              r = o.step(lr_factor, grad_scale);
            }
            return py::make_tuple(r.applied, r.nonfinite_param);
          },
          py::arg("lr_factor") = 1.0, py::arg("grad_scale") = 1.0f)
      .def(
          "step_report",
          [](optim::Optimizer& o, double lr_factor, float grad_scale) {
            optim::StepResult r;
            {
              py::gil_scoped_release no_gil;
              r = o.step(lr_factor, grad_scale);
            }
            return step_report(r);
          },
          py::arg("lr_factor") = 1.0, py::arg("grad_scale") = 1.0f)
      .def("zero_grad", &optim::Optimizer::zero_grad)
      .def(
          "param_state", [](const optim::Optimizer& o, size_t i) { return StateDict(o.param_state(i)); },
          py::arg("index"))
      .def("state_dict", &optim::Optimizer::state_dict)
      .def(
          "load_state_dict",
          [](optim::Optimizer& o, const StateDict& state, const std::optional<std::vector<py::dict>>& groups) {
            if (!groups) return o.load_state_dict(state);
            std::vector<optim::OptimizerConfig> configs;
            for (const py::dict& g : *groups) configs.push_back(config_of(g));
            o.load_state_dict(state, configs);
          },
          py::arg("state"), py::arg("group_configs") = py::none())
      .def("state_bytes", &optim::Optimizer::state_bytes, py::arg("include_master") = true);

  m.def(
      "clip_coefficient",
      [](double norm, double max_norm) {
        // optim/clip.h reads max_norm <= 0 as "no clipping"; a caller that asks for a coefficient means a bound.
        if (!(max_norm > 0.0))
          throw InvalidArgument("clip_coefficient: max_norm must be > 0, got " + std::to_string(max_norm));
        return optim::clip_coefficient(norm, max_norm);
      },
      py::arg("norm"), py::arg("max_norm"));
}

// Encodes x (float32, any shape) into a dict {"values", "scale", "k", "centre"} (absent ones omitted).
py::dict encode_state(const torch::Tensor& x, const std::string& codec_name, bool is_signed, uint64_t seed) {
  if (element_type(x, "input") != ElementType::kFloat32)
    throw py::type_error("nibble.optim.encode_state: pass float32");
  const StateCodec codec = optim::parse_state_codec(codec_name);
  const int64_t n = x.numel();
  const optim::MomentLayout L = optim::moment_layout(codec, n);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  py::dict d;
  torch::Tensor values =
      torch::empty({n}, torch::TensorOptions().dtype(L.codec == StateCodec::kFP32   ? torch::kFloat32
                                                     : L.codec == StateCodec::kBF16 ? torch::kBFloat16
                                                                                    : torch::kUInt8));
  d["values"] = values;
  optim::MomentView v{values.data_ptr(), nullptr, nullptr, nullptr};
  if (L.has_scale) {
    torch::Tensor t = torch::empty({L.groups}, f32);
    v.scale = t.data_ptr<float>();
    d["scale"] = t;
  }
  if (L.has_expansion) {
    torch::Tensor t = torch::empty({L.groups}, f32);
    v.expansion = t.data_ptr<float>();
    d["k"] = t;
  }
  if (L.has_centre) {
    torch::Tensor t = torch::empty({L.groups}, f32);
    v.centre = t.data_ptr<float>();
    d["centre"] = t;
  }
  {
    py::gil_scoped_release no_gil;
    optim::encode_state(codec, x.data_ptr<float>(), n, v, is_signed, seed);
  }
  return d;
}

torch::Tensor decode_state(const py::dict& encoded, const std::string& codec_name, int64_t numel, bool is_signed) {
  const StateCodec codec = optim::parse_state_codec(codec_name);
  py::dict renamed;
  renamed["s"] = encoded["values"];
  for (const char* k : {"scale", "k", "centre"})
    if (encoded.contains(k)) renamed[(std::string("s_") + k).c_str()] = encoded[k];
  const optim::MomentView v = moment_view(renamed, "s", codec, numel, "the encoded state");
  torch::Tensor out = torch::empty({numel}, torch::TensorOptions().dtype(torch::kFloat32));
  {
    py::gil_scoped_release no_gil;
    optim::decode_state(codec, v, numel, is_signed, out.data_ptr<float>());
  }
  return out;
}

double lr_factor(const std::string& kind, int64_t step, int64_t warmup_steps, int64_t total_steps, double min_ratio) {
  return optim::lr_factor(optim::make_lr_schedule(kind, warmup_steps, total_steps, min_ratio), step);
}

torch::Tensor dynamic_map(bool is_signed) {
  const optim::DynamicMap& map = optim::dynamic_map(is_signed);
  return torch::tensor(std::vector<float>(map.value, map.value + 256));
}

}  // namespace

void bind_optim(py::module_& m) {
  bind_optimizer(m);
  m.def("optim_encode_state", &encode_state, py::arg("x"), py::arg("codec"), py::arg("signed"), py::arg("seed") = 0);
  m.def("optim_decode_state", &decode_state, py::arg("encoded"), py::arg("codec"), py::arg("numel"), py::arg("signed"));
  m.def("optim_lr_factor", &lr_factor, py::arg("kind"), py::arg("step"), py::arg("warmup_steps"),
        py::arg("total_steps"), py::arg("min_ratio"));
  m.def("optim_dynamic_map", &dynamic_map, py::arg("signed"));
}

}  // namespace nibble::python
