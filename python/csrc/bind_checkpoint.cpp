// nibble._C: the build's facts (core/build_info.h), and nibble's own safetensors reader and writer (core/checkpoint/safetensors.h), the ones nibble-train's
// checkpoints go through, so Python can read a shard with exactly the code a resume uses and tests can check
// interoperability with the `safetensors` package value by value.
#include "core/build_info.h"
#include "core/checkpoint/safetensors.h"
#include "torch/headeronly/version.h"
#include "python/csrc/bindings.h"

namespace nibble::python {

namespace py = pybind11;

void bind_checkpoint(py::module_& m) {
  // (With the build's facts: both are about what this build reads and is.)
  m.def("build_info", [] {
    const core::BuildInfo b = core::build_info();
    return py::dict(py::arg("version") = b.version, py::arg("cuda_kernels") = b.cuda_kernels,
                    py::arg("cuda_architectures") = b.cuda_architectures,
                    py::arg("cpu_vector_compiled") = b.cpu_vector_compiled,
                    py::arg("cpu_vector_supported") = b.cpu_vector_supported, py::arg("compiler") = b.compiler,
                    py::arg("cpu_gemm_kernel") = b.cpu_gemm_kernel,
                    py::arg("torch_compiled") = std::string(TORCH_VERSION));
  });
  m.def(
      "read_safetensors",
      [](const std::string& path) {
        core::checkpoint::SafetensorsFile f = core::checkpoint::read_safetensors(path);
        return py::make_tuple(f.tensors, f.metadata);
      },
      py::arg("path"), "(tensors: dict[str, Tensor], metadata: dict[str, str]) of a safetensors file");
  m.def(
      "write_safetensors",
      [](const std::string& path, const std::map<std::string, torch::Tensor>& tensors,
         const std::map<std::string, std::string>& metadata) {
        std::vector<std::pair<std::string, torch::Tensor>> list(tensors.begin(), tensors.end());
        core::checkpoint::write_safetensors(path, list, metadata);
      },
      py::arg("path"), py::arg("tensors"), py::arg("metadata") = std::map<std::string, std::string>{});
}

}  // namespace nibble::python
