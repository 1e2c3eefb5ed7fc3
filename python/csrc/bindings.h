#pragma once
// Declarations shared by the binding files of nibble._C: each file registers one area of the API.
#include <torch/extension.h>

namespace nibble::python {

void bind_formats(pybind11::module_& m);
void bind_quantize(pybind11::module_& m);

}  // namespace nibble::python
