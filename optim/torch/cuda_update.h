#pragma once
// The torch Optimizer's update of tensors on a CUDA device (optim/torch/optimizer.cpp): the slots' pointers are
// device memory, and optim/cuda's fused kernel runs the same scalar rules as optim/'s CPU pass (bit for bit, per
// tests/optim/test_optim_cuda_vs_cpu.cpp) with the clip coefficient and LR factor the optimizer decided.
// Only built with NIBBLE_WITH_CUDA.
#include <torch/torch.h>

#include <vector>

#include "optim/fused_step.h"
#include "optim/tensor_slot.h"

namespace nibble::optim {

enum class UpdateKind { kAdamW, kSGD };

// Updates `slots` (all on `device`, each numel > 0) on torch's current stream of that device and waits for it.
void update_on_cuda(const std::vector<TensorSlot>& slots, UpdateKind kind, const AdamWHyper& adamw,
                    const SgdHyper& sgd, const UpdateOptions& options, const torch::Device& device);

}  // namespace nibble::optim
