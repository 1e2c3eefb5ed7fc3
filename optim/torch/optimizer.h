#pragma once
// The optimizer over torch parameters, for C++ programs (the trainer) and the ZeRO-1 sharded optimizer: one
// fused pass per step over optim/'s codecs (optim/fused_step.h), with compressed states, NaN/Inf step
// skipping that names the parameter, clipping by a coefficient, a bit-exact state dict and resharding.
// (The interface is fixed here so the trainer and the ZeRO optimizer can be written against it; the
// Python nibble.optim classes describe the same behaviour.)
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace nibble::optim {

struct OptimizerConfig {
  std::string kind = "adamw";   // "adamw" | "sgd"
  std::string state = "fp32";   // moment codec: fp32 | bf16 | fp8 | fp8_plain | int8
  std::string master = "fp32";  // bfloat16 params: fp32 master copy | "none" (stochastic-rounding write-back)
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, momentum = 0.0;
  bool stochastic_rounding = true;
  uint64_t seed = 0;
  // Throws InvalidArgument naming the key, the value and what is valid.
  void validate() const;
};

// The fused step writes parameters through raw pointers, which torch does not see: bump each tensor's version
// counter as an in-place torch op would, so whatever caches a function of the parameter keyed by its version
// (the quantized-weight cache of core/linear.h) knows it changed. Every optimizer step must call it.
void mark_written_in_place(const std::vector<torch::Tensor>& tensors);

struct StepResult {
  bool applied = true;           // false: a gradient held NaN/Inf, nothing changed
  std::string nonfinite_param;   // the first offending parameter's name when !applied
};

class Optimizer {
 public:
  // Parameters: float32 or bfloat16 CPU tensors (leaf, requires_grad), named for messages and state dicts.
  Optimizer(std::vector<std::pair<std::string, torch::Tensor>> named_params, OptimizerConfig config);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Sum of squares of this rank's gradients (FP64 accumulation): global clipping adds these over groups.
  double grad_norm_squared() const;
  // Any NaN/Inf in the gradients? Returns the first offending parameter's name, or "" when all are finite.
  std::string find_nonfinite_grad() const;
  // One step at learning rate lr_factor * config.lr; gradients are multiplied by grad_scale on load (the
  // clipping coefficient). Checks finiteness first (skips the whole step when any gradient is not finite).
  StepResult step(double lr_factor = 1.0, float grad_scale = 1.0f);
  void zero_grad();

  // (Additive, for ZeRO-1 and tests.) step() on explicit gradients, one per parameter (undefined = no
  // gradient), instead of the parameters' .grad: the sharded optimizer steps views of a flat shard whose
  // gradients come from a reduce-scatter.
  StepResult step_with_grads(const std::vector<torch::Tensor>& grads, double lr_factor = 1.0,
                             float grad_scale = 1.0f);
  // (Additive.) The global element index of each parameter's element 0 (stochastic-rounding keys; default:
  // cumulative over the parameters in order). A shard of a tensor passes base + offset so it draws the bits
  // the whole tensor would.
  void set_index_bases(const std::vector<uint64_t>& bases);

  // Every state tensor (moments, codec side data, master copies, step counters) by "<param>.<field>", exactly
  // (load(state_dict()) reproduces the next steps bit for bit).
  std::map<std::string, torch::Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, torch::Tensor>& state);
  int64_t state_bytes() const;  // bytes held by the optimizer states (moments + side data + masters)

  const OptimizerConfig& config() const;
  const std::vector<std::pair<std::string, torch::Tensor>>& params() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nibble::optim
