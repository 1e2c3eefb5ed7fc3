// core::quantize / tensor_amax / dequantize for CUDA tensors (core/cuda_dispatch.h). The order of work is the
// CPU quantizer's (precision/cpu/quantize_cpu.cpp), so both raise the same errors for the same input:
//   validate_quantize; the input's amax, a NaN named by its position; the RHT'd columnwise copy's amax, a NaN
//   group named; the group amaxes (copy_amaxes); then each copy from a float32 matrix in its coordinates --
//   the input (rowwise), its transpose or its RHT (columnwise) -- on torch's current stream of the device.
// Amaxes are taken with torch (max is exact in any order) and read back to the host: the scales need them,
// and a NaN must stop the call before anything is encoded, as on the CPU.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cfloat>
#include <cmath>
#include <limits>

#include "core/cuda_dispatch.h"
#include "precision/cuda/quantize_cuda.h"
#include "precision/error.h"
#include "precision/hadamard.h"
#include "precision/scheme_facts.h"

namespace nibble::core {
namespace {

// The input as a contiguous float32 (M, K) matrix on its device (bfloat16 widens exactly), described as
// precision/'s input for validation and messages.
struct DeviceInput {
  torch::Tensor matrix;
  precision::QuantizeInput in;
  bool bf16 = false;
};

DeviceInput device_input(const torch::Tensor& x, const std::string& who, const std::string& name) {
  if (x.scalar_type() != torch::kFloat32 && x.scalar_type() != torch::kBFloat16)
    throw InvalidArgument(who + "(" + name + "): input dtype " + std::string(c10::toString(x.scalar_type())) +
                          " is not supported; pass float32 or bfloat16");
  if (x.dim() < 1) throw InvalidArgument(who + "(" + name + "): input must have at least one dimension");
  DeviceInput d;
  d.bf16 = x.scalar_type() == torch::kBFloat16;
  d.in.cols = x.size(-1);
  d.in.rows = 1;
  for (int64_t k = 0; k + 1 < x.dim(); ++k) d.in.rows *= x.size(k);
  d.matrix = x.reshape({d.in.rows, d.in.cols}).to(torch::kFloat32).contiguous();
  d.in.data = d.matrix.data_ptr();
  d.in.type = d.bf16 ? precision::InputType::kBFloat16 : precision::InputType::kFloat32;
  d.in.name = name;
  return d;
}

// max|m| ignoring NaN, and whether m holds a NaN (one read back to the host).
struct DeviceAmax {
  float amax = 0.0f;
  bool nan = false;
};

DeviceAmax device_amax(const torch::Tensor& m) {
  if (m.numel() == 0) return {};
  const torch::Tensor a = m.abs();
  const double inf = std::numeric_limits<double>::infinity();
  const torch::Tensor both = torch::stack({torch::nan_to_num(a, 0.0, inf, inf).amax(), a.isnan().any().to(torch::kFloat32)});
  const torch::Tensor host = both.cpu();
  return {host[0].item<float>(), host[1].item<float>() != 0.0f};
}

[[noreturn]] void report_nan(const DeviceInput& d) {
  const torch::Tensor at = d.matrix.isnan().flatten().nonzero();
  const int64_t i = at.numel() > 0 ? at[0][0].item<int64_t>() : 0;
  throw InvalidArgument(precision::nan_input_message(d.in, i / d.in.cols, i % d.in.cols));
}

cudaStream_t current_stream(const torch::Device& device) {
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}

float* float_ptr(const torch::Tensor& t) { return t.data_ptr<float>(); }

}  // namespace

precision::TensorAmax tensor_amax_on_cuda(const torch::Tensor& x, bool rht, uint64_t rht_seed, const std::string& name) {
  const c10::cuda::CUDAGuard guard(x.device());
  const DeviceInput d = device_input(x, "tensor_amax", name);
  if (rht && d.in.rows % 16 != 0)
    throw InvalidArgument("tensor_amax(" + name +
                          "): the 16-point RHT runs along the first dimension, which must be a multiple of 16; got " +
                          std::to_string(d.in.rows));
  const DeviceAmax own = device_amax(d.matrix);
  precision::TensorAmax out{own.amax, own.amax, own.nan};
  if (rht && d.in.rows > 0 && d.in.cols > 0) {
    torch::Tensor y = torch::empty({d.in.cols, d.in.rows}, d.matrix.options());
    precision::cuda::rht16_transpose(float_ptr(d.matrix), d.in.rows, d.in.cols, precision::rht_sign_mask(rht_seed),
                                     d.bf16, float_ptr(y), current_stream(x.device()));
    const DeviceAmax transformed = device_amax(y);
    out.rht_amax = transformed.amax;
    out.nan = out.nan || transformed.nan;
  }
  return out;
}

QuantizedTensor quantize_on_cuda(const torch::Tensor& x, const precision::QuantizeOptions& o, const std::string& name) {
  const c10::cuda::CUDAGuard guard(x.device());
  const cudaStream_t stream = current_stream(x.device());
  const DeviceInput d = device_input(x, "quantize", name);
  precision::validate_quantize(d.in, o);
  const int64_t M = d.in.rows, K = d.in.cols;

  const DeviceAmax own = device_amax(d.matrix);
  if (own.nan) report_nan(d);
  const bool rht = o.rht && o.columnwise;
  torch::Tensor rht_values;  // (K, M): the RHT'd columnwise copy's values
  float own_columnwise = own.amax;
  if (rht && M > 0 && K > 0) {
    rht_values = torch::empty({K, M}, d.matrix.options());
    precision::cuda::rht16_transpose(float_ptr(d.matrix), M, K, precision::rht_sign_mask(o.rht_seed), d.bf16,
                                     float_ptr(rht_values), stream);
    const DeviceAmax transformed = device_amax(rht_values);
    if (transformed.nan) throw InvalidArgument(precision::transform_nan_message(d.in, "16-point RHT"));
    own_columnwise = transformed.amax;
  }
  const precision::CopyAmaxes factors = precision::copy_amaxes(d.in, o, own.amax, own_columnwise);

  QuantizedTensor q;
  q.options = o;
  q.shape = x.sizes().vec();
  q.input_amax = own.amax;
  const torch::Tensor transform_nan = torch::zeros({1}, torch::TensorOptions().dtype(torch::kInt32).device(x.device()));
  const bool two_d = precision::scheme_facts(o.scheme).block_rows > 1;
  auto make_copy = [&](bool columnwise) {
    const int64_t rows = columnwise ? K : M, cols = columnwise ? M : K;
    const precision::CopyLayout layout = precision::copy_layout(o, rows, cols);
    QuantizedCopyTensor t = QuantizedCopyTensor::empty(layout, o.scheme, x.device());
    const torch::Tensor src = !columnwise ? d.matrix : (rht ? rht_values : d.matrix.t().contiguous());
    precision::cuda::CopyJob job;
    job.src = src.numel() > 0 ? float_ptr(src) : nullptr;
    job.rows = rows;
    job.cols = cols;
    job.options = o;
    job.layout = layout;
    job.out = t.view();
    job.copy_amax = columnwise ? factors.columnwise : factors.rowwise;
    job.value_for_inf = d.bf16 ? precision::kBF16Max : FLT_MAX;
    if (columnwise && two_d) {  // the rowwise codes transposed: the rowwise copy's bits
      job.sr = precision::sr_copy_indexing(o.sr_index, false, M, K);
      job.sr_transposed = true;
      job.sr_offset = o.offset;
    } else {
      job.sr = precision::sr_copy_indexing(o.sr_index, columnwise, M, K);
      job.sr_offset = o.offset + (columnwise ? precision::kColumnwiseSrOffset : 0);
    }
    const torch::Tensor scratch = torch::empty({static_cast<int64_t>(precision::cuda::copy_scratch_bytes(job))},
                                               torch::TensorOptions().dtype(torch::kUInt8).device(x.device()));
    precision::cuda::quantize_copy(job, scratch.numel() > 0 ? scratch.data_ptr() : nullptr,
                                   reinterpret_cast<uint32_t*>(transform_nan.data_ptr<int32_t>()), stream);
    t.global_amax.fill_(job.copy_amax);
    return t;
  };
  if (o.rowwise) q.rowwise = make_copy(false);
  if (o.columnwise) q.columnwise = make_copy(true);
  if (o.scheme == precision::Scheme::kMXFP4Quest && transform_nan.item<int32_t>() != 0)
    throw InvalidArgument(precision::transform_nan_message(d.in, "Hadamard-32"));
  return q;
}

torch::Tensor dequantize_on_cuda(const QuantizedCopyTensor& copy, const precision::QuantizeOptions& options) {
  const c10::cuda::CUDAGuard guard(copy.data.device());
  torch::Tensor out =
      torch::empty({copy.rows, copy.cols}, torch::TensorOptions().dtype(torch::kFloat32).device(copy.data.device()));
  precision::cuda::dequantize(copy.view(), precision::copy_layout(options, copy.rows, copy.cols), options,
                              out.numel() > 0 ? float_ptr(out) : nullptr, current_stream(copy.data.device()));
  return out;
}

}  // namespace nibble::core
