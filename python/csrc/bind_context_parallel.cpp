// nibble.context_parallel's C++ half: ring and Ulysses attention (torch autograd functions over a group's
// Communicator) and the load-balanced sequence split. python/nibble/context_parallel.py wraps these.
#include <optional>

#include "parallel/communicator.h"
#include "parallel/nn/context_parallel_attention.h"
#include "python/csrc/bindings.h"

namespace nibble::python {

namespace py = pybind11;
namespace par = nibble::parallel;

void bind_context_parallel(py::module_& m) {
  // The GIL is released while the ring/all-to-all waits on peers; autograd keeps a pointer to the
  // Communicator, so the group must outlive the backward pass (Mesh groups live as long as the Mesh).
  m.def(
      "cp_ring_attention",
      [](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, par::Communicator& comm,
         std::optional<double> scale) {
        py::gil_scoped_release release;
        return par::nn::ring_attention(q, k, v, comm, scale);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("comm"), py::arg("scale") = py::none());
  m.def(
      "cp_ulysses_attention",
      [](const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v, par::Communicator& comm,
         std::optional<double> scale) {
        py::gil_scoped_release release;
        return par::nn::ulysses_attention(q, k, v, comm, scale);
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("comm"), py::arg("scale") = py::none());
  m.def("cp_split", &par::nn::context_parallel_split, py::arg("x"), py::arg("dim"), py::arg("cp"), py::arg("rank"));
  m.def("cp_merge", &par::nn::context_parallel_merge, py::arg("x"), py::arg("dim"), py::arg("cp"));
}

}  // namespace nibble::python
