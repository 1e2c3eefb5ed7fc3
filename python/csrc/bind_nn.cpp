// nibble.nn's C++ half: recipes, the Linear layer's state and autograd function, RMSNorm and SwiGLU with
// compressed activations, and the saved-bytes meter.
#include "core/activations.h"
#include "core/linear.h"
#include "core/recipe.h"
#include "core/saved_bytes.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "python/csrc/bindings.h"

namespace nibble::python {
namespace {

namespace py = pybind11;

py::dict describe_spec(const nn::OperandSpec& s) {
  py::dict d;
  d["quantized"] = s.quantized;
  if (s.quantized) {
    d["scheme"] = precision::scheme_name(s.options.scheme);
    d["format"] = precision::format_name(s.options.element);
    d["rounding"] = s.options.rounding == precision::Rounding::kStochastic ? "stochastic" : "rne";
    d["rht"] = s.options.rht;
    d["delayed"] = s.delayed;
  }
  return d;
}

nn::OperandSpec custom_spec(const std::string& scheme, const py::object& fmt, const std::string& rounding) {
  if (scheme == "bf16") return nn::OperandSpec{};
  nn::OperandSpec s;
  s.quantized = true;
  s.options = options_for_copy(scheme, fmt);
  s.options.rounding = parse_rounding(rounding, "nibble.Recipe.custom", false);
  return s;
}

}  // namespace

void bind_nn(py::module_& m) {
  py::class_<nn::Recipe>(m, "Recipe")
      .def(py::init(&nn::recipe_preset), py::arg("name"))
      .def_static(
          "custom",
          [](const std::string& name, const std::string& forward_scheme, const py::object& forward_format,
             const std::string& backward_scheme, const py::object& backward_format, const std::string& grad_rounding,
             bool compress_activations, bool backward_hadamard) {
            nn::Recipe r;
            r.name = name;
            r.x_row = r.w_row = r.x_col = r.w_col = custom_spec(forward_scheme, forward_format, "rne");
            r.dy_row = r.dy_col = custom_spec(backward_scheme, backward_format, grad_rounding);
            r.compress_activations = compress_activations;
            r.backward_hadamard = backward_hadamard;
            r.validate();
            return r;
          },
          py::arg("name"), py::arg("forward_scheme"), py::arg("forward_format") = py::none(),
          py::arg("backward_scheme") = "bf16", py::arg("backward_format") = py::none(),
          py::arg("grad_rounding") = "rne", py::arg("compress_activations") = true,
          py::arg("backward_hadamard") = false)
      .def_readonly("name", &nn::Recipe::name)
      .def_readwrite("compress_activations", &nn::Recipe::compress_activations)
      .def_readonly("backward_hadamard", &nn::Recipe::backward_hadamard)
      .def("describe",
           [](const nn::Recipe& r) {
             py::dict d;
             d["name"] = r.name;
             d["x_row"] = describe_spec(r.x_row);
             d["w_row"] = describe_spec(r.w_row);
             d["dy_row"] = describe_spec(r.dy_row);
             d["w_col"] = describe_spec(r.w_col);
             d["dy_col"] = describe_spec(r.dy_col);
             d["x_col"] = describe_spec(r.x_col);
             d["compress_activations"] = r.compress_activations;
             d["backward_hadamard"] = r.backward_hadamard;
             return d;
           })
      .def("__repr__", [](const nn::Recipe& r) { return "nibble.Recipe('" + r.name + "')"; });
  m.def("recipe_presets", &nn::recipe_preset_names);

  py::class_<nn::LinearState, std::shared_ptr<nn::LinearState>>(m, "LinearState")
      .def(py::init([](const nn::Recipe& recipe, const std::string& name, uint64_t seed) {
             return std::make_shared<nn::LinearState>(recipe, name, seed);
           }),
           py::arg("recipe"), py::arg("name"), py::arg("seed") = 0)
      .def_property_readonly("recipe", [](const nn::LinearState& s) { return s.recipe; })
      .def_readwrite("name", &nn::LinearState::name)
      .def_readonly("weight_quantizations", &nn::LinearState::weight_quantizations)
      .def("end_step", &nn::LinearState::end_step)
      .def_readwrite("capture", &nn::LinearState::capture)
      .def("captured",
           [](const nn::LinearState& s) {
             // role -> (data, scale, global_amax, rows, cols, scheme, fmt) of the copy that role used: the
             // columnwise copy for *_col roles, except under backward_hadamard, whose rotated backward
             // operands are rowwise copies (blocks along the rotated inner dimension).
             py::dict d;
             for (const auto& [role, q] : s.captured) {
               const bool col = role.size() > 4 && role.substr(role.size() - 3) == "col" && q->columnwise;
               const nn::QuantizedCopyTensor& c = col ? *q->columnwise : *q->rowwise;
               d[py::str(role)] = py::make_tuple(c.data, c.scale, c.global_amax, c.rows, c.cols,
                                                 precision::scheme_name(q->options.scheme),
                                                 precision::format_name(q->options.element));
             }
             return d;
           })
      .def("captured_rotations", [](const nn::LinearState& s) { return s.captured_rotations; })
      .def("delayed_scales", [](const nn::LinearState& s) {
        py::dict d;
        if (s.ds_x) d["input"] = s.ds_x->scale();
        if (s.ds_w) d["weight"] = s.ds_w->scale();
        if (s.ds_dy) d["grad_output"] = s.ds_dy->scale();
        return d;
      });

  m.def(
      "linear",
      [](const torch::Tensor& x, const torch::Tensor& weight, std::optional<torch::Tensor> bias,
         const std::shared_ptr<nn::LinearState>& state) { return nn::linear_forward(x, weight, bias, state); },
      py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("state"));
  m.def("rms_norm", &nn::rms_norm, py::arg("x"), py::arg("weight"), py::arg("eps"), py::arg("compress"),
        py::arg("name") = "rms_norm");
  m.def("swiglu", &nn::swiglu, py::arg("gate"), py::arg("up"), py::arg("compress"), py::arg("name") = "swiglu");
  m.def("hadamard32", &nn::hadamard32_last_dim, py::arg("x"));
  m.def("saved_bytes", &nn::saved_bytes);
  m.def("reset_saved_bytes", &nn::reset_saved_bytes);
}

}  // namespace nibble::python
