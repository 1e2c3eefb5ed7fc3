#pragma once
// The CUDA optimizer step: one launch updates every tensor of a parameter group (a device array of
// TensorSlot descriptors, one 256-thread block per 256-element tile), with the same scalar rules as the
// CPU step (optim/dre.h, dynamic_map.h, update_rules.h, lr_schedule.h). The step counters live on the
// device: the gradient check, the skip decision on NaN/Inf, the clip coefficient, the LR schedule and the
// bias corrections are all computed there, so a step never waits for the host (and can be graph-captured).
// C++17 (included by .cu files).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "optim/lr_schedule.h"
#include "optim/tensor_slot.h"
#include "optim/update_rules.h"

namespace nibble::optim::cuda {

enum class Algorithm : uint8_t { kAdamW, kSGD };

// Lives in device memory; init_step_state() zeroes it. Read it back (at a sync the caller already has, e.g.
// logging) to learn whether steps were skipped and which tensor had NaN/Inf.
struct DeviceStepState {
  int64_t step = 0;                       // optimizer steps taken (the LR schedule's index)
  int64_t skipped_steps = 0;              // steps skipped for NaN/Inf gradients
  double sum_squares = 0.0;               // squared global gradient norm of the last step
  double lr_factor = 1.0;                 // schedule factor used by the last step
  float clip = 1.0f;                      // clip coefficient used by the last step
  uint32_t nonfinite = 0;                 // last step: nonzero if a gradient had NaN/Inf
  uint32_t first_bad_slot = 0xFFFFFFFFu;  // last step: lowest slot index with NaN/Inf
};

struct StepConfig {
  Algorithm algorithm = Algorithm::kAdamW;
  AdamWHyper adamw;
  SgdHyper sgd;
  LrSchedule schedule;
  double max_grad_norm = 0.0;  // <= 0: no clipping
  uint64_t seed = 0;
  bool stochastic_rounding = true;
  bool dre_clamp_k = false;
};

// The device-side description of a fixed set of tensors (their buffers must not move between steps):
// the slot array, a tile table and scratch for the norm's partial sums, plus the int8 code tables.
class MultiTensorPlan {
 public:
  // `slots` is a host array whose pointers are device pointers.
  MultiTensorPlan(const TensorSlot* slots, size_t count, cudaStream_t stream);
  ~MultiTensorPlan();
  MultiTensorPlan(const MultiTensorPlan&) = delete;
  MultiTensorPlan& operator=(const MultiTensorPlan&) = delete;

  size_t slot_count() const { return count_; }
  int64_t tile_count() const { return tiles_; }

 private:
  friend void step(const MultiTensorPlan&, const StepConfig&, DeviceStepState*, cudaStream_t);
  friend void update(const MultiTensorPlan&, const StepConfig&, float, double, DeviceStepState*, cudaStream_t);
  size_t count_ = 0;
  int64_t tiles_ = 0;
  TensorSlot* slots_ = nullptr;     // device
  int64_t* tile_starts_ = nullptr;  // device, count + 1 prefix sums of tiles per slot
  double* partials_ = nullptr;      // device, one per tile
  float* maps_ = nullptr;           // device: signed values, signed thresholds, unsigned values, thresholds
};

// Sets *state (device) to a fresh optimizer: step 0, nothing skipped.
void init_step_state(DeviceStepState* state, cudaStream_t stream);

// One optimizer step over all tensors of the plan: three kernels (check, decide, update), no host sync.
void step(const MultiTensorPlan& plan, const StepConfig& config, DeviceStepState* state, cudaStream_t stream);

// The update alone, with scalars the host decided: the torch Optimizer (optim/torch/optimizer.h) checks the
// gradients of all its groups and computes one clip coefficient before stepping each group with its own
// hyperparameters, as its CPU path does. Gradients are multiplied by grad_scale on load, the learning rate by
// lr_factor (config.schedule and config.max_grad_norm are not used); every slot's step counter advances by one.
// `state` is device scratch for the scalars (its counters are not the step's).
void update(const MultiTensorPlan& plan, const StepConfig& config, float grad_scale, double lr_factor,
            DeviceStepState* state, cudaStream_t stream);

}  // namespace nibble::optim::cuda
