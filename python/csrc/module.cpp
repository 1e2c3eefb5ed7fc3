// nibble._C: the torch extension module. Each bind_* registers one area; errors map to Python exceptions.
#include "precision/error.h"
#include "python/csrc/bindings.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "nibble: low-precision training kernels (C++ core of the `nibble` package)";
  // InvalidArgument is the caller's mistake (ValueError); other nibble errors are RuntimeError. pybind11
  // tries translators newest first, so the base class is registered before the derived one.
  pybind11::register_exception<nibble::Error>(m, "Error", PyExc_RuntimeError);
  pybind11::register_exception<nibble::InvalidArgument>(m, "InvalidArgument", PyExc_ValueError);
  nibble::python::bind_formats(m);
  nibble::python::bind_quantize(m);
  nibble::python::bind_optim(m);
  nibble::python::bind_gemm(m);
  nibble::python::bind_nn(m);
  nibble::python::bind_parallel(m);
  nibble::python::bind_tensor_parallel(m);
  nibble::python::bind_context_parallel(m);
  nibble::python::bind_data_parallel(m);
  nibble::python::bind_checkpoint(m);
  nibble::python::bind_models(m);
}
