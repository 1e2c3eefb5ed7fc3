#include "core/quantized_tensor.h"

#include "core/cuda_dispatch.h"
#include "precision/error.h"

namespace nibble::core {
QuantizedCopyTensor QuantizedCopyTensor::empty(const precision::CopyLayout& L, precision::Scheme scheme,
                                               const torch::Device& device) {
  const auto u8 = torch::TensorOptions().dtype(torch::kUInt8).device(device);
  QuantizedCopyTensor t;
  t.rows = L.rows;
  t.cols = L.cols;
  t.data = torch::empty({L.rows, L.data_row_bytes}, u8);
  // A per-tensor scale is a 1-element vector; block scales are (rows, blocks) matrices.
  const std::vector<int64_t> scale_shape =
      scheme == precision::Scheme::kFP8Tensor ? std::vector<int64_t>{1} : std::vector<int64_t>{L.scale_rows, L.scale_cols};
  t.scale = torch::empty(scale_shape, L.scale_storage == precision::ScaleStorage::kFloat32
                                          ? torch::TensorOptions().dtype(torch::kFloat32).device(device)
                                          : u8);
  t.global_amax = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  if (L.has_mask) t.mask = torch::empty({L.rows, L.cols}, u8);
  return t;
}

precision::QuantizedCopy QuantizedCopyTensor::view() const {
  return precision::QuantizedCopy{data.data_ptr<uint8_t>(), scale.data_ptr(), global_amax.data_ptr<float>(),
                                  mask.defined() ? mask.data_ptr<uint8_t>() : nullptr};
}

int64_t QuantizedCopyTensor::bytes() const {
  int64_t b = data.numel() + scale.numel() * static_cast<int64_t>(scale.element_size()) + 4;
  if (mask.defined()) b += mask.numel();
  return b;
}

int64_t QuantizedTensor::bytes() const {
  return (rowwise ? rowwise->bytes() : 0) + (columnwise ? columnwise->bytes() : 0);
}

namespace {

// A CPU float32/bfloat16 tensor as precision/'s input (leading dims flatten into M); `contiguous` keeps the
// memory alive for the call.
precision::QuantizeInput as_input(const torch::Tensor& x, const torch::Tensor& contiguous, const std::string& who,
                                  const std::string& name) {
  if (!x.device().is_cpu())
    throw InvalidArgument(who + "(" + name + "): input is on " + x.device().str() +
                          (x.is_cuda() ? "; this build of nibble has no CUDA kernels (configure with NIBBLE_CUDA=ON)"
                                       : "; nibble quantizes CPU and CUDA tensors"));
  if (x.scalar_type() != torch::kFloat32 && x.scalar_type() != torch::kBFloat16)
    throw InvalidArgument(who + "(" + name + "): input dtype " + std::string(c10::toString(x.scalar_type())) +
                          " is not supported; pass float32 or bfloat16");
  if (x.dim() < 1) throw InvalidArgument(who + "(" + name + "): input must have at least one dimension");
  precision::QuantizeInput in;
  in.data = contiguous.data_ptr();
  in.type = x.scalar_type() == torch::kFloat32 ? precision::InputType::kFloat32 : precision::InputType::kBFloat16;
  in.cols = x.size(-1);
  in.rows = 1;
  for (int64_t d = 0; d + 1 < x.dim(); ++d) in.rows *= x.size(d);
  in.name = name;
  return in;
}

}  // namespace

// A CUDA tensor goes to core/cuda_dispatch.h where this build has the kernels; otherwise as_input says it has none.
precision::TensorAmax tensor_amax(const torch::Tensor& x, bool rht, uint64_t rht_seed, const std::string& name) {
#if NIBBLE_WITH_CUDA
  if (x.is_cuda()) return tensor_amax_on_cuda(x, rht, rht_seed, name);
#endif
  const torch::Tensor input = x.contiguous();
  return precision::tensor_amax(as_input(x, input, "tensor_amax", name), rht, rht_seed);
}

QuantizedTensor quantize(const torch::Tensor& x, const precision::QuantizeOptions& options, const std::string& name) {
#if NIBBLE_WITH_CUDA
  if (x.is_cuda()) return quantize_on_cuda(x, options, name);
#endif
  const torch::Tensor input = x.contiguous();
  const precision::QuantizeInput in = as_input(x, input, "quantize", name);
  QuantizedTensor q;
  q.options = options;
  q.shape = x.sizes().vec();
  precision::QuantizedCopy row_view, col_view;
  if (options.rowwise) {
    q.rowwise = QuantizedCopyTensor::empty(precision::copy_layout(options, in.rows, in.cols), options.scheme, x.device());
    row_view = q.rowwise->view();
  }
  if (options.columnwise) {
    q.columnwise = QuantizedCopyTensor::empty(precision::copy_layout(options, in.cols, in.rows), options.scheme, x.device());
    col_view = q.columnwise->view();
  }
  const precision::QuantizeStats stats = precision::quantize(in, options, options.rowwise ? &row_view : nullptr,
                                                             options.columnwise ? &col_view : nullptr);
  q.input_amax = stats.amax;
  return q;
}

torch::Tensor dequantize(const QuantizedCopyTensor& copy, const precision::QuantizeOptions& options) {
#if NIBBLE_WITH_CUDA
  if (copy.data.is_cuda()) return dequantize_on_cuda(copy, options);
#endif
  if (!copy.data.device().is_cpu())
    throw InvalidArgument("dequantize: the copy is on " + copy.data.device().str() +
                          "; this build of nibble has no CUDA kernels (configure with NIBBLE_CUDA=ON)");
  torch::Tensor out = torch::empty({copy.rows, copy.cols}, torch::TensorOptions().dtype(torch::kFloat32));
  precision::dequantize(copy.view(), precision::copy_layout(options, copy.rows, copy.cols), options,
                        out.data_ptr<float>());
  return out;
}

}  // namespace nibble::core
