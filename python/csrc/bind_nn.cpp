// nibble.nn's C++ half: recipes, the Linear layer's state and autograd function, RMSNorm and SwiGLU with
// compressed activations, and the saved-bytes meter.
#include "core/activations.h"
#include "core/cpu_allocation_tracker.h"
#include "core/linear.h"
#include "core/recipe.h"
#include "core/saved_for_backward_meter.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "python/csrc/bindings.h"

namespace nibble::python {
namespace {

namespace py = pybind11;

py::dict describe_spec(const core::OperandSpec& s) {
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

core::OperandSpec custom_spec(const std::string& scheme, const py::object& fmt, const std::string& rounding) {
  if (scheme == "bf16") return core::OperandSpec{};
  core::OperandSpec s;
  s.quantized = true;
  s.options = options_for_copy(scheme, fmt);
  s.options.rounding = parse_rounding(rounding, "nibble.Recipe.custom", false);
  return s;
}

}  // namespace

void bind_nn(py::module_& m) {
  py::class_<core::Recipe>(m, "Recipe")
      .def(py::init([](const std::string& name, bool reproducible_sums) {
             core::Recipe r = core::recipe_preset(name);
             r.reproducible_sums = reproducible_sums;
             return r;
           }),
           py::arg("name"), py::arg("reproducible_sums") = false)
      .def_static(
          "custom",
          [](const std::string& name, const std::string& forward_scheme, const py::object& forward_format,
             const std::string& backward_scheme, const py::object& backward_format, const std::string& grad_rounding,
             bool compress_activations, bool backward_hadamard, bool reproducible_sums) {
            core::Recipe r;
            r.name = name;
            r.x_row = r.w_row = r.x_col = r.w_col = custom_spec(forward_scheme, forward_format, "rne");
            r.dy_row = r.dy_col = custom_spec(backward_scheme, backward_format, grad_rounding);
            r.compress_activations = compress_activations;
            r.backward_hadamard = backward_hadamard;
            r.reproducible_sums = reproducible_sums;
            r.validate();
            return r;
          },
          py::arg("name"), py::arg("forward_scheme"), py::arg("forward_format") = py::none(),
          py::arg("backward_scheme") = "bf16", py::arg("backward_format") = py::none(),
          py::arg("grad_rounding") = "rne", py::arg("compress_activations") = true,
          py::arg("backward_hadamard") = false, py::arg("reproducible_sums") = false)
      .def_readonly("name", &core::Recipe::name)
      .def_readwrite("compress_activations", &core::Recipe::compress_activations)
      .def_readonly("backward_hadamard", &core::Recipe::backward_hadamard)
      .def_readonly("reproducible_sums", &core::Recipe::reproducible_sums)
      .def("describe",
           [](const core::Recipe& r) {
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
             d["reproducible_sums"] = r.reproducible_sums;
             return d;
           })
      .def("__repr__", [](const core::Recipe& r) { return "nibble.Recipe('" + r.name + "')"; });
  m.def("recipe_presets", &core::recipe_preset_names);
  m.attr("quantization_sum_fields") = core::QuantizationErrorSums::kSumFields;
  m.attr("quantization_max_fields") = core::QuantizationErrorSums::kMaxFields;
  m.def(
      "quantization_figures",
      [](const std::vector<double>& sums, const std::vector<double>& maxes) {
        if (sums.size() != core::QuantizationErrorSums::kSumFields ||
            maxes.size() != core::QuantizationErrorSums::kMaxFields)
          throw nibble::InvalidArgument("quantization_figures: expected " +
                                std::to_string(core::QuantizationErrorSums::kSumFields) + " sums and " +
                                std::to_string(core::QuantizationErrorSums::kMaxFields) + " maxima, got " +
                                std::to_string(sums.size()) + " and " + std::to_string(maxes.size()));
        return core::stats_json(core::QuantizationErrorSums::load(sums.data(), maxes.data())).dump();
      },
      py::arg("sums"), py::arg("maxes"));
  m.def("layer_seed", &core::layer_seed, py::arg("name"), py::arg("run_seed") = 0);

  py::class_<core::LinearState, std::shared_ptr<core::LinearState>>(m, "LinearState")
      .def(py::init([](const core::Recipe& recipe, const std::string& name, uint64_t seed) {
             return std::make_shared<core::LinearState>(recipe, name, seed);
           }),
           py::arg("recipe"), py::arg("name"), py::arg("seed") = 0)
      .def_property_readonly("recipe", [](const core::LinearState& s) { return s.recipe; })
      .def_readwrite("name", &core::LinearState::name)
      .def_readonly("weight_quantizations", &core::LinearState::weight_quantizations)
      .def("end_step", &core::LinearState::end_step)
      .def_readwrite("capture", &core::LinearState::capture)
      .def("captured",
           [](const core::LinearState& s) {
             // role -> (data, scale, global_amax, rows, cols, scheme, fmt) of the copy that role used: the
             // columnwise copy for *_col roles, except under backward_hadamard, whose rotated backward
             // operands are rowwise copies (blocks along the rotated inner dimension).
             py::dict d;
             for (const auto& [role, q] : s.captured) {
               const bool col = role.size() > 4 && role.substr(role.size() - 3) == "col" && q->columnwise;
               const core::QuantizedCopyTensor& c = col ? *q->columnwise : *q->rowwise;
               d[py::str(role)] = py::make_tuple(c.data, c.scale, c.global_amax, c.rows, c.cols,
                                                 precision::scheme_name(q->options.scheme),
                                                 precision::format_name(q->options.element));
             }
             return d;
           })
      .def("captured_rotations", [](const core::LinearState& s) { return s.captured_rotations; })
      .def_readwrite("collect_stats", &core::LinearState::collect_stats)
      .def("stats_sums",
           [](const core::LinearState& s) {
             // role -> (sums, maxima) of core::QuantizationErrorSums, to be reduced over ranks (sum, max) and
             // turned into figures by quantization_figures.
             py::dict d;
             for (const auto& [role, sums] : s.stats) {
               std::vector<double> a(core::QuantizationErrorSums::kSumFields), b(core::QuantizationErrorSums::kMaxFields);
               sums.store(a.data(), b.data());
               d[py::str(role)] = py::make_tuple(a, b);
             }
             return d;
           })
      .def("clear_stats", [](core::LinearState& s) { s.stats.clear(); })
      .def("delayed_scales", [](const core::LinearState& s) {
        py::dict d;
        if (s.ds_x) d["input"] = s.ds_x->scale();
        if (s.ds_w) d["weight"] = s.ds_w->scale();
        if (s.ds_dy) d["grad_output"] = s.ds_dy->scale();
        return d;
      });

  m.def(
      "linear",
      [](const torch::Tensor& x, const torch::Tensor& weight, std::optional<torch::Tensor> bias,
         const std::shared_ptr<core::LinearState>& state) { return core::linear_forward(x, weight, bias, state); },
      py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("state"));
  m.def("rms_norm", &core::rms_norm, py::arg("x"), py::arg("weight"), py::arg("eps"), py::arg("compress"),
        py::arg("name") = "rms_norm");
  m.def("swiglu", &core::swiglu, py::arg("gate"), py::arg("up"), py::arg("compress"), py::arg("name") = "swiglu");
  m.def("hadamard32", &core::hadamard32_last_dim, py::arg("x"));
  m.def("saved_bytes", &core::saved_bytes);
  m.def("reset_saved_bytes", &core::reset_saved_bytes);
  // Live and peak bytes of torch CPU allocations, counted at the allocator (core/cpu_allocation_tracker.h): what
  // benchmarks compare memory by, in this process, for nibble and plain torch alike.
  m.def("track_cpu_allocations", &core::track_cpu_allocations);
  m.def("cpu_allocation_stats", [] {
    const core::AllocationStats s = core::cpu_allocation_stats();
    return py::dict(py::arg("current") = s.current, py::arg("peak") = s.peak,
                    py::arg("tracking") = core::tracking_cpu_allocations());
  });
  m.def("reset_cpu_allocation_peak", &core::reset_cpu_allocation_peak);
}

}  // namespace nibble::python
