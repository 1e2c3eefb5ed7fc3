#pragma once
// Declarations shared by the binding files of nibble._C: each file registers one area of the API.
#include <torch/extension.h>

#include <string>

#include "precision/quantize.h"

namespace nibble::python {

void bind_formats(pybind11::module_& m);
void bind_quantize(pybind11::module_& m);
void bind_optim(pybind11::module_& m);
void bind_gemm(pybind11::module_& m);
void bind_nn(pybind11::module_& m);
void bind_parallel(pybind11::module_& m);
void bind_tensor_parallel(pybind11::module_& m);
void bind_context_parallel(pybind11::module_& m);
void bind_data_parallel(pybind11::module_& m);
void bind_checkpoint(pybind11::module_& m);
void bind_models(pybind11::module_& m);

// "rne" | "stochastic" (| "toward_zero" where `allow_toward_zero`), aliases "nearest", "sr", "rtz". Unknown names
// throw InvalidArgument starting with `who` and listing the valid names.
precision::Rounding parse_rounding(const std::string& name, const std::string& who, bool allow_toward_zero);

// The options describing a stored copy of `scheme` (element format `fmt`, None = the scheme's default).
precision::QuantizeOptions options_for_copy(const std::string& scheme, const pybind11::object& fmt);

}  // namespace nibble::python
