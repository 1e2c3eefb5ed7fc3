// nibble.gemm: C = A · Bᵀ on quantized copies or high-precision tensors (core/gemm.h).
#include "core/gemm.h"
#include "core/gemm_path.h"
#include "core/recipe.h"
#include "precision/error.h"
#include "python/csrc/bindings.h"

namespace nibble::python {
namespace {

namespace py = pybind11;

// An operand from Python: a torch.Tensor, or a tuple (data, scale, global_amax, rows, cols, scheme, fmt)
// describing a quantized copy (python/nibble/quantize.py builds it).
struct PyOperand {
  core::QuantizedCopyTensor copy;
  core::GemmOperand op;
};

void load(const py::object& obj, PyOperand& out) {
  if (py::isinstance<py::tuple>(obj)) {
    const py::tuple t = obj.cast<py::tuple>();
    out.copy.data = t[0].cast<torch::Tensor>().contiguous();
    out.copy.scale = t[1].cast<torch::Tensor>().contiguous();
    out.copy.global_amax = t[2].cast<torch::Tensor>().to(torch::kFloat32).contiguous();
    out.copy.rows = t[3].cast<int64_t>();
    out.copy.cols = t[4].cast<int64_t>();
    out.op = core::GemmOperand::quantized(out.copy, options_for_copy(t[5].cast<std::string>(), t[6]));
  } else {
    out.op = core::GemmOperand::high_precision(obj.cast<torch::Tensor>());
  }
}

torch::Tensor gemm(const py::object& a, const py::object& b, std::optional<torch::Tensor> bias,
                   std::optional<torch::Tensor> accumulate, py::object out_dtype, bool fp64_accumulation) {
  PyOperand pa, pb;
  load(a, pa);
  load(b, pb);
  core::GemmOptions options;
  options.bias = bias;
  options.accumulate = accumulate;
  options.name = "nibble.gemm";
  options.fp64_accumulation = fp64_accumulation;
  if (!out_dtype.is_none()) options.out_dtype = torch::python::detail::py_object_to_dtype(out_dtype);
  py::gil_scoped_release no_gil;
  return core::gemm(pa.op, pb.op, options);
}

}  // namespace

void bind_gemm(py::module_& m) {
  m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("bias") = py::none(), py::arg("accumulate") = py::none(),
        py::arg("out_dtype") = py::none(), py::arg("fp64_accumulation") = false);
  // The kernel for a scheme pair on a device of compute capability `sm` (0 = the CPU): core/gemm_path.h.
  m.def(
      "gemm_path",
      [](const std::string& a, const std::string& b, int sm) {
        if (sm < 0)
          throw InvalidArgument("gemm_path: compute capability must be >= 0 (0 = cpu), got " + std::to_string(sm));
        return std::string(core::gemm_path_name(core::choose_gemm_path(
            options_for_copy(a, py::none()), options_for_copy(b, py::none()), core::GemmDevice{sm})));
      },
      py::arg("a"), py::arg("b"), py::arg("sm"));
  // The three GEMMs of a Linear under `recipe`: {"fprop": ..., "dgrad": ..., "wgrad": ...}.
  m.def(
      "recipe_gemm_paths",
      [](const core::Recipe& r, int sm) {
        const core::LinearGemmPaths p = core::linear_gemm_paths(r, core::GemmDevice{sm});
        py::dict out;
        out["fprop"] = core::gemm_path_name(p.fprop);
        out["dgrad"] = core::gemm_path_name(p.dgrad);
        out["wgrad"] = core::gemm_path_name(p.wgrad);
        return out;
      },
      py::arg("recipe"), py::arg("sm"));
}

}  // namespace nibble::python
