// core::gemm's product for operands on a CUDA device (core/cuda_dispatch.h): C = A·Bᵀ with alpha (the tensor-wide
// factors) applied to the FP32 sums; core::gemm then adds the bias and the accumulation as it does on the CPU, so
// the two differ only in the order of the FP32 sums.
//   both quantized   the cuBLASLt path core/gemm_path.h names for the pair and this GPU (tensor-core FP8 /
//                    MXFP8 / NVFP4, or FP4 decoded to BF16 in core/cuda), when core/cuda's check_gemm accepts
//                    the problem; otherwise (an 8-bit pair without a tensor-core path here, research formats,
//                    shapes the tensor-core kernels refuse) both operands are dequantized on the device and
//                    multiplied in FP32 -- the CPU emulation's values, FP32 products and sums;
//   a dense operand  rounded to BF16 (the bf16 recipe's operand); BF16 x BF16 runs cuBLAS with FP32 output
//                    (at::mm out_dtype); with a quantized partner, both as FP32 values in an FP32 GEMM.
// FP32 GEMMs here need torch's TF32 switch off (its default): TF32 would round the operands.
#include <ATen/Context.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <utility>

#include "core/cuda/gemm_cublaslt.h"
#include "core/cuda_dispatch.h"
#include "precision/error.h"

namespace nibble::core {
namespace {

torch::Device device_of(const GemmOperand& op) { return op.copy ? op.copy->data.device() : op.dense.device(); }

// The operand's values as float32 (rows, K) on its device: a dense operand rounded to BF16 first.
torch::Tensor float_values(const GemmOperand& op) {
  if (op.copy) return dequantize(*op.copy, op.options);
  return op.dense.to(torch::kBFloat16).to(torch::kFloat32);
}

torch::Tensor fp32_gemm(const GemmOperand& a, const GemmOperand& b, const std::string& who) {
  if (at::globalContext().allowTF32CuBLAS())
    throw InvalidArgument(who + "torch.backends.cuda.matmul.allow_tf32 is on: this GEMM multiplies dequantized "
                          "values in FP32 and TF32 would round them; turn it off");
  return at::mm(float_values(a), float_values(b).t());
}

// The cuBLASLt path for two quantized copies, or an undefined tensor when core/cuda does not take the problem.
torch::Tensor cublaslt_gemm(const GemmOperand& a, const GemmOperand& b, const std::string& name) {
  const int64_t M = a.rows(), N = b.rows(), K = a.k();
  const torch::Device device = device_of(a);
  torch::Tensor out = torch::empty({M, N}, torch::TensorOptions().dtype(torch::kFloat32).device(device));
  cuda::GemmArgs args;
  args.a = cuda::DeviceOperand{a.copy->view(), precision::copy_layout(a.options, M, K), a.options};
  args.b = cuda::DeviceOperand{b.copy->view(), precision::copy_layout(b.options, N, K), b.options};
  args.out = out.data_ptr();
  args.out_type = cuda::OutputType::kFloat32;
  args.name = name;
  const int sm = cuda::current_device_sm();
  try {
    cuda::check_gemm(args, sm);
  } catch (const InvalidArgument&) {
    return {};  // a pair or shape this GPU's kernels do not take: the caller's FP32 fallback
  }
  const size_t bytes = cuda::gemm_workspace_bytes(args, sm);
  const torch::Tensor workspace =
      torch::empty({static_cast<int64_t>(bytes)}, torch::TensorOptions().dtype(torch::kUInt8).device(device));
  cuda::gemm(args, workspace.data_ptr(), bytes, c10::cuda::getCurrentCUDAStream(device.index()).stream());
  return out;
}

}  // namespace

torch::Tensor gemm_on_cuda(const GemmOperand& a, const GemmOperand& b, const GemmOptions& options) {
  const std::string who = options.name + ": ";
  const torch::Device device = device_of(a);
  const c10::cuda::CUDAGuard guard(device);
  if (options.fp64_accumulation)
    throw InvalidArgument(who + "fp64_accumulation (reproducible_sums) runs on CPU tensors only so far; use "
                          "reproducible_sums = false on CUDA, or CPU tensors");
  for (const auto& [t, what] : {std::pair{options.bias, "bias"}, std::pair{options.accumulate, "accumulate"}})
    if (t && t->device() != device)
      throw InvalidArgument(who + what + " is on " + t->device().str() + " but the operands are on " + device.str() +
                            "; move it to the operands' device");
  torch::Tensor raw;
  if (a.copy && b.copy) {
    raw = cublaslt_gemm(a, b, options.name);
    if (!raw.defined()) raw = fp32_gemm(a, b, who);
  } else if (!a.copy && !b.copy) {
    raw = at::mm(a.dense.to(torch::kBFloat16), b.dense.to(torch::kBFloat16).t(), torch::kFloat32);
  } else {
    raw = fp32_gemm(a, b, who);
  }
  return raw;
}

}  // namespace nibble::core
