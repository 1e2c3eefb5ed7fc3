// nibble.quantize / DelayedScaling / rht: block-scaled quantization of torch tensors (CPU).
#include <string>

#include "core/quantized_tensor.h"
#include "precision/delayed_scaling.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "precision/hadamard.h"
#include "precision/quantize.h"
#include "python/csrc/bindings.h"

namespace nibble::python {
namespace {

namespace py = pybind11;
using precision::CopyLayout;
using precision::QuantizeOptions;

py::dict to_dict(const core::QuantizedCopyTensor& c) {
  py::dict d;
  d["data"] = c.data;
  d["scale"] = c.scale;
  d["global_amax"] = c.global_amax;
  d["mask"] = c.mask.defined() ? py::cast(c.mask) : py::none();
  return d;
}

QuantizeOptions make_options(const std::string& scheme, bool rowwise, bool columnwise, const std::string& rounding,
                             uint64_t seed, uint64_t offset, bool rht, uint64_t rht_seed, const py::object& fmt,
                             const py::object& pow2_scale, float amax_epsilon, const std::string& mx_scale_rule) {
  precision::Format element;
  const precision::Scheme s = precision::parse_scheme(scheme, &element);
  QuantizeOptions o = precision::default_options(s);
  o.element = fmt.is_none() ? element : precision::parse_format(fmt.cast<std::string>());
  o.rowwise = rowwise;
  o.columnwise = columnwise;
  o.rounding = parse_rounding(rounding, "nibble.quantize", false);
  o.seed = seed;
  o.offset = offset;
  o.rht = rht;
  o.rht_seed = rht_seed;
  if (!pow2_scale.is_none()) o.pow2_scale = pow2_scale.cast<bool>();
  o.amax_epsilon = amax_epsilon;
  if (mx_scale_rule == "ceil") {
    o.mx_rule = precision::MxScaleRule::kCeil;
  } else if (mx_scale_rule == "floor") {
    o.mx_rule = precision::MxScaleRule::kFloor;
  } else {
    throw InvalidArgument("nibble.quantize: unknown mx_scale_rule '" + mx_scale_rule + "'; valid: 'ceil', 'floor'");
  }
  return o;
}

}  // namespace

QuantizeOptions options_for_copy(const std::string& scheme, const py::object& fmt) {
  return make_options(scheme, true, false, "rne", 0, 0, false, 0, fmt, py::none(), 0.0f, "ceil");
}

namespace {

// Returns (rowwise dict or None, columnwise dict or None, amax of the input).
py::tuple quantize(const torch::Tensor& x, const std::string& scheme, bool rowwise, bool columnwise,
                   const std::string& rounding, uint64_t seed, uint64_t offset, bool rht, uint64_t rht_seed,
                   const py::object& fmt, const py::object& pow2_scale, float amax_epsilon,
                   const std::string& mx_scale_rule, py::object delayed, const std::string& name,
                   const py::object& sr_index, float group_amax, float group_rht_amax) {
  QuantizeOptions o = make_options(scheme, rowwise, columnwise, rounding, seed, offset, rht, rht_seed, fmt,
                                   pow2_scale, amax_epsilon, mx_scale_rule);
  if (!sr_index.is_none()) {
    const auto m = sr_index.cast<std::tuple<int64_t, int64_t, int64_t, int64_t>>();
    o.sr_index = {std::get<0>(m), std::get<1>(m), std::get<2>(m), std::get<3>(m)};
  }
  o.group_amax = group_amax;
  o.group_rht_amax = group_rht_amax;
  precision::DelayedScaling* state = delayed.is_none() ? nullptr : delayed.cast<precision::DelayedScaling*>();
  if (state) {
    o.use_fixed_scale = true;
    o.fixed_scale = state->scale();
    if (state->format() != o.element)
      throw InvalidArgument("nibble.quantize(" + name + "): the DelayedScaling state is for " +
                            precision::format_name(state->format()) + " but the scheme quantizes to " +
                            precision::format_name(o.element));
  }
  if (x.scalar_type() != torch::kFloat32 && x.scalar_type() != torch::kBFloat16)
    throw py::type_error("nibble.quantize(" + name + "): input dtype " + std::string(c10::toString(x.scalar_type())) +
                         " is not supported; pass torch.float32 or torch.bfloat16");
  core::QuantizedTensor q;
  {
    py::gil_scoped_release no_gil;
    q = core::quantize(x, o, name);
  }
  if (state) state->record(q.input_amax);
  return py::make_tuple(q.rowwise ? py::object(to_dict(*q.rowwise)) : py::none(),
                        q.columnwise ? py::object(to_dict(*q.columnwise)) : py::none(), q.input_amax);
}

torch::Tensor dequantize(const torch::Tensor& data, const torch::Tensor& scale, const torch::Tensor& global_amax,
                         int64_t rows, int64_t cols, const std::string& scheme, const py::object& fmt) {
  const QuantizeOptions o = options_for_copy(scheme, fmt);
  const CopyLayout L = precision::copy_layout(o, rows, cols);
  if (data.numel() != L.rows * L.data_row_bytes || scale.numel() != L.scale_rows * L.scale_cols)
    throw InvalidArgument("nibble.dequantize: data/scale sizes do not match a (" + std::to_string(rows) + ", " +
                          std::to_string(cols) + ") " + scheme + " copy");
  torch::Tensor d = data.contiguous(), s = scale.contiguous(), a = global_amax.to(torch::kFloat32).contiguous();
  torch::Tensor out = torch::empty({rows, cols}, torch::TensorOptions().dtype(torch::kFloat32));
  precision::QuantizedCopy q{d.data_ptr<uint8_t>(), s.data_ptr(), a.data_ptr<float>(), nullptr};
  {
    py::gil_scoped_release no_gil;
    precision::dequantize(q, L, o, out.data_ptr<float>());
  }
  return out;
}

// The RHT applied to the rows of a (rows, n) float32 matrix, in groups of 16 along each row.
torch::Tensor rht(const torch::Tensor& x, uint64_t seed) {
  if (x.dim() != 2 || x.scalar_type() != torch::kFloat32 || x.size(1) % 16 != 0)
    throw InvalidArgument("nibble.rht: expects a 2-D float32 tensor whose last dimension is a multiple of 16, got " +
                          c10::str(x.sizes()) + " " + std::string(c10::toString(x.scalar_type())));
  torch::Tensor in = x.contiguous();
  torch::Tensor out = torch::empty_like(in);
  const uint32_t mask = precision::rht_sign_mask(seed);
  const float* src = in.data_ptr<float>();
  float* dst = out.data_ptr<float>();
  for (int64_t g = 0; g < in.numel() / 16; ++g) precision::rht16(src + 16 * g, mask, dst + 16 * g);
  return out;
}

}  // namespace

void bind_quantize(py::module_& m) {
  m.def("quantize", &quantize, py::arg("x"), py::arg("scheme"), py::arg("rowwise"), py::arg("columnwise"),
        py::arg("rounding"), py::arg("seed"), py::arg("offset"), py::arg("rht"), py::arg("rht_seed"), py::arg("fmt"),
        py::arg("pow2_scale"), py::arg("amax_epsilon"), py::arg("mx_scale_rule"), py::arg("delayed"), py::arg("name"),
        py::arg("sr_index"), py::arg("group_amax") = -1.0f, py::arg("group_rht_amax") = -1.0f);
  m.def("dequantize", &dequantize, py::arg("data"), py::arg("scale"), py::arg("global_amax"), py::arg("rows"),
        py::arg("cols"), py::arg("scheme"), py::arg("fmt"));
  m.def("rht", &rht, py::arg("x"), py::arg("seed") = 0);

  py::class_<precision::DelayedScaling>(m, "DelayedScaling")
      .def(py::init([](int history_len, const std::string& algo, int margin, const std::string& fmt) {
             return precision::DelayedScaling(history_len, precision::parse_amax_algo(algo), margin,
                                              precision::parse_format(fmt));
           }),
           py::arg("history_len") = 1024, py::arg("algo") = "max", py::arg("margin") = 0, py::arg("fmt") = "e4m3")
      .def("record", &precision::DelayedScaling::record, py::arg("amax"))
      .def("update", &precision::DelayedScaling::update)
      .def_property_readonly("scale", &precision::DelayedScaling::scale)
      .def_property_readonly("amax_history",
                             [](const precision::DelayedScaling& s) {
                               const auto& h = s.history();
                               return torch::tensor(std::vector<float>(h.begin(), h.end()));
                             })
      .def_property_readonly("margin", &precision::DelayedScaling::margin)
      .def("restore", [](precision::DelayedScaling& s, const torch::Tensor& history, float scale) {
        torch::Tensor h = history.to(torch::kFloat32).contiguous();
        s.restore(std::vector<float>(h.data_ptr<float>(), h.data_ptr<float>() + h.numel()), scale);
      });
}

}  // namespace nibble::python
