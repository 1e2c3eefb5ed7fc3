// nibble.optim's C++ half: the fused CPU step over torch tensors, the gradient check, state layouts and
// codec round trips, LR schedule factors. The Python optimizer classes (python/nibble/optim.py) own the
// state tensors; this file only points the torch-free optim/ library at them.
#include <string>
#include <vector>

#include "optim/dynamic_map.h"
#include "optim/fused_step.h"
#include "optim/grad_check.h"
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

struct Group {
  std::vector<optim::TensorSlot> slots;
  std::vector<torch::Tensor> keep_alive;
};

// One slot per parameter: params, grads, states (dicts with "step", the moments and, if present, "master").
Group make_slots(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
                 const std::vector<py::dict>& states, const std::vector<uint64_t>& index_bases,
                 const std::vector<std::string>& names, const std::string& codec_name,
                 const std::vector<std::string>& moment_keys) {
  const size_t n = params.size();
  if (grads.size() != n || states.size() != n || index_bases.size() != n || names.size() != n)
    throw InvalidArgument("nibble.optim: params, grads, states, index_bases and names must have equal lengths");
  const StateCodec codec = optim::parse_state_codec(codec_name);
  Group g;
  g.slots.resize(n);
  for (size_t i = 0; i < n; ++i) {
    optim::TensorSlot& s = g.slots[i];
    const std::string& name = names[i];
    s.numel = params[i].numel();
    s.param_type = element_type(params[i], "parameter " + name);
    s.param = params[i].data_ptr();
    s.grad_type = element_type(grads[i], "gradient of " + name);
    if (grads[i].numel() != s.numel)
      throw InvalidArgument("nibble.optim: gradient of " + name + " has " + std::to_string(grads[i].numel()) +
                            " elements, the parameter " + std::to_string(s.numel));
    s.grad = grads[i].data_ptr();
    s.codec = codec;
    s.index_base = index_bases[i];
    const py::dict& st = states[i];
    torch::Tensor step = state_tensor(st, "step", torch::kInt64, 1, name);
    s.step = step.data_ptr<int64_t>();
    g.keep_alive.push_back(step);
    if (st.contains("master")) s.master = state_tensor(st, "master", torch::kFloat32, s.numel, name).data_ptr<float>();
    if (!moment_keys.empty()) s.m = moment_view(st, moment_keys[0], codec, s.numel, name);
    if (moment_keys.size() > 1) s.v = moment_view(st, moment_keys[1], codec, s.numel, name);
  }
  return g;
}

optim::UpdateOptions update_options(uint64_t seed, float grad_scale, double lr_factor, bool stochastic_rounding,
                                    bool dre_clamp_k) {
  optim::UpdateOptions o;
  o.seed = seed;
  o.grad_scale = grad_scale;
  o.lr_factor = lr_factor;
  o.stochastic_rounding = stochastic_rounding;
  o.dre_clamp_k = dre_clamp_k;
  return o;
}

void adamw_update(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
                  const std::vector<py::dict>& states, const std::vector<uint64_t>& index_bases,
                  const std::vector<std::string>& names, const std::string& codec, double lr, double beta1,
                  double beta2, double eps, double weight_decay, uint64_t seed, float grad_scale,
                  bool stochastic_rounding, bool dre_clamp_k) {
  Group g = make_slots(params, grads, states, index_bases, names, codec, {"exp_avg", "exp_avg_sq"});
  const optim::AdamWHyper h{lr, beta1, beta2, eps, weight_decay};
  const optim::UpdateOptions o = update_options(seed, grad_scale, 1.0, stochastic_rounding, dre_clamp_k);
  {
    py::gil_scoped_release no_gil;
    optim::adamw_update(g.slots, h, o);
  }
  optim::mark_written_in_place(params);
}

void sgd_update(const std::vector<torch::Tensor>& params, const std::vector<torch::Tensor>& grads,
                const std::vector<py::dict>& states, const std::vector<uint64_t>& index_bases,
                const std::vector<std::string>& names, const std::string& codec, double lr, double momentum,
                double dampening, double weight_decay, bool nesterov, uint64_t seed, float grad_scale,
                bool stochastic_rounding, bool dre_clamp_k) {
  std::vector<std::string> keys;
  if (momentum != 0.0) keys.push_back("momentum_buffer");
  Group g = make_slots(params, grads, states, index_bases, names, codec, keys);
  optim::SgdHyper h;
  h.lr = lr;
  h.momentum = momentum;
  h.dampening = dampening;
  h.weight_decay = weight_decay;
  h.nesterov = nesterov;
  const optim::UpdateOptions o = update_options(seed, grad_scale, 1.0, stochastic_rounding, dre_clamp_k);
  {
    py::gil_scoped_release no_gil;
    optim::sgd_update(g.slots, h, o);
  }
  optim::mark_written_in_place(params);
}

// (sum of squares, index of the first gradient with NaN/Inf or -1, element index inside it or -1)
py::tuple check_gradients(const std::vector<torch::Tensor>& grads) {
  std::vector<optim::GradientView> views;
  for (size_t i = 0; i < grads.size(); ++i)
    views.push_back({grads[i].data_ptr(), element_type(grads[i], "gradient " + std::to_string(i)), grads[i].numel()});
  optim::GradientReport r;
  {
    py::gil_scoped_release no_gil;
    r = optim::check_gradients(views);
  }
  return py::make_tuple(r.sum_squares, r.first_nonfinite, r.nonfinite_element);
}

py::dict state_layout(const std::string& codec, int64_t numel) {
  const optim::MomentLayout L = optim::moment_layout(optim::parse_state_codec(codec), numel);
  py::dict d;
  d["codec"] = optim::state_codec_name(L.codec);
  d["value_bytes"] = L.value_bytes;
  d["groups"] = L.groups;
  d["has_scale"] = L.has_scale;
  d["has_k"] = L.has_expansion;
  d["has_centre"] = L.has_centre;
  d["bytes"] = L.bytes();
  return d;
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
  m.def("optim_adamw_update", &adamw_update, py::arg("params"), py::arg("grads"), py::arg("states"),
        py::arg("index_bases"), py::arg("names"), py::arg("codec"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"),
        py::arg("eps"), py::arg("weight_decay"), py::arg("seed"), py::arg("grad_scale"), py::arg("stochastic_rounding"),
        py::arg("dre_clamp_k"));
  m.def("optim_sgd_update", &sgd_update, py::arg("params"), py::arg("grads"), py::arg("states"), py::arg("index_bases"),
        py::arg("names"), py::arg("codec"), py::arg("lr"), py::arg("momentum"), py::arg("dampening"),
        py::arg("weight_decay"), py::arg("nesterov"), py::arg("seed"), py::arg("grad_scale"),
        py::arg("stochastic_rounding"), py::arg("dre_clamp_k"));
  m.def("optim_check_gradients", &check_gradients, py::arg("grads"));
  m.def("optim_state_layout", &state_layout, py::arg("codec"), py::arg("numel"));
  m.def("optim_encode_state", &encode_state, py::arg("x"), py::arg("codec"), py::arg("signed"), py::arg("seed") = 0);
  m.def("optim_decode_state", &decode_state, py::arg("encoded"), py::arg("codec"), py::arg("numel"), py::arg("signed"));
  m.def("optim_lr_factor", &lr_factor, py::arg("kind"), py::arg("step"), py::arg("warmup_steps"),
        py::arg("total_steps"), py::arg("min_ratio"));
  m.def("optim_dynamic_map", &dynamic_map, py::arg("signed"));
}

}  // namespace nibble::python
