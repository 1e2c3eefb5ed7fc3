// nibble.tensor_parallel's C++ half: GroupTensorParallel (column/row-parallel low-precision Linear,
// vocabulary-parallel embedding and cross-entropy, sequence-parallel scatter/gather) and the Megatron regions,
// over a group's Communicator. python/nibble/tensor_parallel.py wraps these in modules. The GIL is released
// while a call communicates; autograd keeps a pointer to the Communicator, so the group must outlive the
// backward pass (Mesh groups live as long as the Mesh).
#include <memory>
#include <optional>
#include <vector>

#include "core/linear.h"
#include "parallel/communicator.h"
#include "parallel/nn/group_tensor_parallel.h"
#include "parallel/nn/regions.h"
#include "parallel/nn/torch_collectives.h"
#include "python/csrc/bindings.h"

namespace nibble::python {

namespace py = pybind11;
namespace par = nibble::parallel;

void bind_tensor_parallel(py::module_& m) {
  using TP = par::nn::GroupTensorParallel;
  py::class_<TP, std::shared_ptr<TP>>(m, "TensorParallel")
      .def(py::init([](par::Communicator& comm, bool sp) { return std::make_shared<TP>(comm, sp); }), py::arg("comm"),
           py::arg("sequence_parallel"), py::keep_alive<1, 2>())
      .def_property_readonly("rank", &TP::rank)
      .def_property_readonly("size", &TP::size)
      .def_property_readonly("sequence_parallel", &TP::sequence_parallel)
      .def("column_linear", &TP::column_linear, py::arg("x"), py::arg("weight_shard"), py::arg("bias_shard"),
           py::arg("state"), py::call_guard<py::gil_scoped_release>())
      .def("row_linear", &TP::row_linear, py::arg("x_shard"), py::arg("weight_shard"), py::arg("bias"),
           py::arg("state"), py::call_guard<py::gil_scoped_release>())
      .def("embedding", &TP::embedding, py::arg("tokens"), py::arg("weight_shard"),
           py::call_guard<py::gil_scoped_release>())
      .def("cross_entropy", &TP::cross_entropy, py::arg("logits_shard"), py::arg("targets"),
           py::arg("fp64_sums") = false, py::call_guard<py::gil_scoped_release>())
      .def("scatter_sequence", &TP::scatter_sequence, py::arg("x"), py::call_guard<py::gil_scoped_release>())
      .def("gather_sequence", &TP::gather_sequence, py::arg("x"), py::call_guard<py::gil_scoped_release>())
      .def("all_reduce_replicated_grads", &TP::all_reduce_replicated_grads, py::arg("params"),
           py::call_guard<py::gil_scoped_release>());

  m.def("tp_copy_to_region", &par::nn::copy_to_tensor_parallel, py::arg("x"), py::arg("comm"),
        py::call_guard<py::gil_scoped_release>());
  m.def("tp_reduce_from_region", &par::nn::reduce_from_tensor_parallel, py::arg("x"), py::arg("comm"),
        py::call_guard<py::gil_scoped_release>());
  m.def("sp_scatter_to_region", &par::nn::scatter_to_sequence_parallel, py::arg("x"), py::arg("comm"),
        py::call_guard<py::gil_scoped_release>());
  m.def("sp_gather_from_region", &par::nn::gather_from_sequence_parallel, py::arg("x"), py::arg("comm"),
        py::arg("grad_is_partial"), py::call_guard<py::gil_scoped_release>());
  m.def("sp_reduce_scatter_to_region", &par::nn::reduce_scatter_to_sequence_parallel, py::arg("x"), py::arg("comm"),
        py::call_guard<py::gil_scoped_release>());
  m.def("tp_communicated_bytes", &par::nn::communicated_bytes);
  m.def("tp_reset_communicated_bytes", &par::nn::reset_communicated_bytes);
}

}  // namespace nibble::python
