#pragma once
// The optimizer over torch parameters, nibble's one optimizer front-end: the trainer, the ZeRO-1 sharded
// optimizer and Python's nibble.optim.AdamW / SGD (a thin torch.optim.Optimizer wrapper) all step through it.
// One fused pass per step over optim/'s codecs (optim/fused_step.h), with compressed states, per-group
// hyperparameters (torch's param_groups), NaN/Inf step skipping that names the parameter, clipping
// (optim/clip.h's rule), a bit-exact state dict and resharding.
#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nibble::optim {

// kind, seed and max_grad_norm belong to the optimizer (every group repeats them); the rest are a parameter
// group's hyperparameters (torch's param_groups[i] keys), which may differ between groups.
struct OptimizerConfig {
  std::string kind = "adamw";   // "adamw" | "sgd"
  std::string state = "fp32";   // moment codec: fp32 | bf16 | fp8 | fp8_plain | int8
  std::string master = "fp32";  // bfloat16 params: fp32 master copy | "none" (stochastic-rounding write-back)
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.0, momentum = 0.0;
  bool stochastic_rounding = true;
  uint64_t seed = 0;
  double dampening = 0.0;    // SGD (torch.optim.SGD's meaning)
  bool nesterov = false;     // SGD: needs momentum > 0 and dampening 0
  bool dre_clamp_k = false;  // fp8: never compress a group (k >= 1), NUMERICS.md's option
  // Set: step() clips by the norm of the gradients this optimizer reads (one process, or gradients already
  // equal on every rank: Python's nibble.optim). Unset: the caller clips by a global norm over ranks and
  // passes the coefficient as step()'s grad_scale (the trainer, ZeRO-1).
  std::optional<double> max_grad_norm;
  // Throws InvalidArgument naming the key, the value and what is valid.
  void validate() const;
};

// The moment fields a parameter's state holds under `config` (AdamW: exp_avg, exp_avg_sq; SGD with momentum:
// momentum_buffer; SGD without: none); each comes with its codec's side data ("<key>_scale", ...).
std::vector<std::string> moment_keys(const OptimizerConfig& config);

// The fused step writes parameters through raw pointers, which torch does not see: bump each tensor's version
// counter as an in-place torch op would, so whatever caches a function of the parameter keyed by its version
// (the quantized-weight cache of core/linear.h) knows it changed. Every optimizer step must call it.
void mark_written_in_place(const std::vector<torch::Tensor>& tensors);

struct StepResult {
  bool applied = true;             // false: a gradient held NaN/Inf, nothing changed
  std::string nonfinite_param;     // the first offending parameter's name when !applied
  int64_t nonfinite_element = -1;  // its first bad element (flat index), when known
  double grad_norm = 0.0;          // norm of the gradients this optimizer read, before clipping; +inf if !applied
  float grad_scale = 1.0f;         // what the gradients were multiplied by (clipping); 0 if !applied
  size_t stepped = 0;              // parameters updated (those with a gradient)
  // When !applied: what happened, naming the parameter and the element (for warnings and errors).
  std::string describe() const;
};

class Optimizer {
 public:
  // Parameters: float32 or bfloat16 CPU tensors (leaf, requires_grad), named for messages and state dicts;
  // they form parameter group 0.
  Optimizer(std::vector<std::pair<std::string, torch::Tensor>> named_params, OptimizerConfig config);
  ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  // Sum of squares of this rank's gradients (FP64 accumulation): global clipping adds these over groups.
  double grad_norm_squared() const;
  // Any NaN/Inf in the gradients? Returns the first offending parameter's name, or "" when all are finite.
  std::string find_nonfinite_grad() const;
  // One step at learning rate lr_factor * lr (each group's); gradients are multiplied by grad_scale on load (the
  // clipping coefficient) and, with config.max_grad_norm set, by clip_coefficient(own norm, max_grad_norm).
  // Reads every gradient once first: norm and NaN/Inf (skips the whole step when any is not finite).
  StepResult step(double lr_factor = 1.0, float grad_scale = 1.0f);
  void zero_grad();

  // (Additive, for ZeRO-1 and tests.) step() on explicit gradients, one per parameter (undefined = no
  // gradient), instead of the parameters' .grad: the sharded optimizer steps views of a flat shard whose
  // gradients come from a reduce-scatter.
  StepResult step_with_grads(const std::vector<torch::Tensor>& grads, double lr_factor = 1.0, float grad_scale = 1.0f);
  // (Additive.) The global element index of each parameter's element 0 (stochastic-rounding keys; default:
  // cumulative over the parameters in order). A shard of a tensor passes base + offset so it draws the bits
  // the whole tensor would.
  void set_index_bases(const std::vector<uint64_t>& bases);

  // (Additive, torch's param_groups.) Appends a group of new parameters with its own hyperparameters (kind,
  // seed and max_grad_norm must equal the optimizer's); returns its index. Index bases continue cumulatively.
  size_t add_param_group(std::vector<std::pair<std::string, torch::Tensor>> named_params, OptimizerConfig config);
  size_t num_groups() const;
  const OptimizerConfig& group_config(size_t group) const;
  // New hyperparameters for a group (torch lets users and LR schedulers edit param_groups between steps). The
  // state layout (codec, master, SGD momentum on/off) may change only while none of the group's parameters
  // holds state: existing states are never reinterpreted.
  void set_group_config(size_t group, OptimizerConfig config);
  // Parameter i's live state tensors by field (empty before its first step): the step updates them in place,
  // so a front-end can expose them (Python's opt.state[p]) without copies.
  const std::map<std::string, torch::Tensor>& param_state(size_t i) const;

  // Every state tensor (moments, codec side data, master copies, step counters) by "<param>.<field>", exactly
  // (load(state_dict()) reproduces the next steps bit for bit).
  std::map<std::string, torch::Tensor> state_dict() const;
  void load_state_dict(const std::map<std::string, torch::Tensor>& state);
  // torch's load_state_dict restores the groups' hyperparameters with the states: the state is checked against
  // the layouts `group_configs` (one per group) imply, then both replace the current ones (nothing changes
  // when a check fails).
  void load_state_dict(const std::map<std::string, torch::Tensor>& state,
                       const std::vector<OptimizerConfig>& group_configs);
  // Bytes of optimizer state (moments + side data, per each group's codec; FP32 masters with include_master),
  // whether allocated yet or not.
  int64_t state_bytes(bool include_master = true) const;

  const OptimizerConfig& config() const;  // group 0's
  const std::vector<std::pair<std::string, torch::Tensor>>& params() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nibble::optim
