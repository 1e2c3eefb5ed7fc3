// nibble.encode / nibble.decode: element-format conversion of torch tensors (CPU).
#include <string>

#include "precision/convert.h"
#include "precision/error.h"
#include "precision/format_names.h"
#include "python/csrc/bindings.h"

namespace nibble::python {
namespace {

using precision::Format;

precision::NanPolicy parse_nan_policy(const std::string& name) {
  if (name == "error") return precision::NanPolicy::kError;
  if (name == "propagate") return precision::NanPolicy::kPropagate;
  throw InvalidArgument("unknown nan policy '" + name + "'; valid: 'error', 'propagate'");
}

torch::Tensor encode(const torch::Tensor& x, const std::string& fmt_name, const std::string& rounding,
                     uint64_t seed, uint64_t offset, int random_bits, const std::string& nan) {
  const Format fmt = precision::parse_format(fmt_name);
  precision::EncodeOptions options;
  options.rounding = parse_rounding(rounding, "nibble.encode", true);
  options.seed = seed;
  options.offset = offset;
  options.random_bits = random_bits;
  options.nan = parse_nan_policy(nan);
  if (!x.device().is_cpu())
    throw InvalidArgument("nibble.encode: input is on " + x.device().str() +
                          "; this build's Python encode takes CPU tensors");
  if (x.scalar_type() != torch::kFloat32 && x.scalar_type() != torch::kBFloat16)
    throw pybind11::type_error("nibble.encode: input dtype " + std::string(c10::toString(x.scalar_type())) +
                               " is not supported; pass torch.float32 or torch.bfloat16");
  auto shape = x.sizes().vec();
  const int bits = fmt.bits();
  if (bits <= 4) {
    if (shape.empty() || shape.back() % 2 != 0)
      throw InvalidArgument("nibble.encode: " + precision::format_name(fmt) +
                            " packs two codes per byte along the last dimension, which must be even; got shape " +
                            c10::str(x.sizes()));
    shape.back() /= 2;
  }
  const torch::Tensor input = x.contiguous();
  const auto n = static_cast<size_t>(input.numel());
  torch::Tensor codes = torch::empty(shape, x.options().dtype(bits <= 8 ? torch::kUInt8 : torch::kInt16));
  auto* out = reinterpret_cast<uint8_t*>(codes.data_ptr());
  {
    pybind11::gil_scoped_release no_gil;
    if (input.scalar_type() == torch::kFloat32) {
      precision::encode_f32(input.data_ptr<float>(), n, fmt, options, out);
    } else {
      precision::encode_bf16(reinterpret_cast<const uint16_t*>(input.data_ptr()), n, fmt, options, out);
    }
  }
  return codes;
}

torch::Tensor decode(const torch::Tensor& codes, const std::string& fmt_name) {
  const Format fmt = precision::parse_format(fmt_name);
  const int bits = fmt.bits();
  const auto expected = bits <= 8 ? torch::kUInt8 : torch::kInt16;
  if (codes.scalar_type() != expected)
    throw pybind11::type_error("nibble.decode: " + precision::format_name(fmt) + " codes must be " +
                               std::string(c10::toString(expected)) + ", got " +
                               std::string(c10::toString(codes.scalar_type())));
  if (!codes.device().is_cpu())
    throw InvalidArgument("nibble.decode: codes are on " + codes.device().str() + "; pass CPU tensors");
  auto shape = codes.sizes().vec();
  if (bits <= 4) {
    if (shape.empty()) throw InvalidArgument("nibble.decode: packed 4-bit codes need at least one dimension");
    shape.back() *= 2;
  }
  const torch::Tensor input = codes.contiguous();
  torch::Tensor out = torch::empty(shape, codes.options().dtype(torch::kFloat32));
  const auto n = static_cast<size_t>(out.numel());
  {
    pybind11::gil_scoped_release no_gil;
    precision::decode_to_f32(reinterpret_cast<const uint8_t*>(input.data_ptr()), n, fmt, out.data_ptr<float>());
  }
  return out;
}

pybind11::dict format_info(const std::string& fmt_name) {
  const Format fmt = precision::parse_format(fmt_name);
  pybind11::dict info;
  info["name"] = precision::format_name(fmt);
  info["bits"] = fmt.bits();
  info["ebits"] = static_cast<int>(fmt.ebits);
  info["mbits"] = static_cast<int>(fmt.mbits);
  info["bias"] = static_cast<int>(fmt.bias);
  info["signed"] = fmt.is_signed;
  info["has_inf"] = fmt.has_inf();
  info["has_nan"] = fmt.has_nan();
  info["max"] = precision::max_finite(fmt);
  info["min_subnormal"] = fmt.has_subnormals ? precision::decode_scalar(1u, fmt) : precision::decode_scalar(0u, fmt);
  return info;
}

}  // namespace

precision::Rounding parse_rounding(const std::string& name, const std::string& who, bool allow_toward_zero) {
  if (name == "rne" || name == "nearest") return precision::Rounding::kNearestEven;
  if (name == "stochastic" || name == "sr") return precision::Rounding::kStochastic;
  if (allow_toward_zero && (name == "toward_zero" || name == "rtz")) return precision::Rounding::kTowardZero;
  throw InvalidArgument(who + ": unknown rounding '" + name + "'; valid: 'rne', 'stochastic'" +
                        (allow_toward_zero ? ", 'toward_zero'" : ""));
}

void bind_formats(pybind11::module_& m) {
  m.def("encode", &encode, pybind11::arg("x"), pybind11::arg("fmt"), pybind11::arg("rounding") = "rne",
        pybind11::arg("seed") = 0, pybind11::arg("offset") = 0, pybind11::arg("random_bits") = 0,
        pybind11::arg("nan") = "error");
  m.def("decode", &decode, pybind11::arg("codes"), pybind11::arg("fmt"));
  m.def("format_info", &format_info, pybind11::arg("fmt"));
  m.def("set_num_threads", &precision::set_num_threads, pybind11::arg("n"));
  m.def("get_num_threads", &precision::num_threads);
}

}  // namespace nibble::python
