#include "optim/torch/cuda_update.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "optim/cuda/fused_step_cuda.h"
#include "precision/cuda/convert_cuda.h"

namespace nibble::optim {

void update_on_cuda(const std::vector<TensorSlot>& slots, UpdateKind kind, const AdamWHyper& adamw,
                    const SgdHyper& sgd, const UpdateOptions& options, const torch::Device& device) {
  if (slots.empty()) return;
  const c10::cuda::CUDAGuard guard(device);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device.index()).stream();
  cuda::StepConfig config;
  config.algorithm = kind == UpdateKind::kAdamW ? cuda::Algorithm::kAdamW : cuda::Algorithm::kSGD;
  config.adamw = adamw;
  config.sgd = sgd;
  config.seed = options.seed;
  config.stochastic_rounding = options.stochastic_rounding;
  config.dre_clamp_k = options.dre_clamp_k;
  // The plan uploads the slot table (gradients are new tensors every step, so it is built per step).
  const cuda::MultiTensorPlan plan(slots.data(), slots.size(), stream);
  const torch::Tensor scalars = torch::empty({static_cast<int64_t>(sizeof(cuda::DeviceStepState))},
                                             torch::TensorOptions().dtype(torch::kUInt8).device(device));
  cuda::update(plan, config, options.grad_scale, options.lr_factor,
               reinterpret_cast<cuda::DeviceStepState*>(scalars.data_ptr()), stream);
  // The plan's device buffers are freed when it goes out of scope: the kernels must be done with them.
  precision::cuda::check_cuda(cudaStreamSynchronize(stream), "optimizer update");
}

}  // namespace nibble::optim
