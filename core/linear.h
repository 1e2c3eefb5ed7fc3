#pragma once
// The low-precision Linear layer: y = x Wᵀ + b with its three GEMMs fed by the recipe's quantized copies
// (fprop x_row·w_rowᵀ, dgrad dy_row·w_colᵀ, wgrad dy_col·x_colᵀ). Backward keeps only the quantized copies
// it needs (x_col, never a high-precision x unless the recipe is bf16); the quantized weight is cached
// while the weight tensor is unchanged (across micro-batches) and refreshed after the optimizer writes it.
#include <torch/torch.h>

#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/quantization_stats.h"
#include "core/quantized_tensor.h"
#include "core/recipe.h"
#include "precision/delayed_scaling.h"

namespace nibble::core {

// Per-layer state shared by the forward calls and their backward nodes.
struct LinearState {
  LinearState(Recipe recipe, std::string name, uint64_t seed);

  Recipe recipe;
  std::string name;
  uint64_t seed;
  uint64_t sr_counter = 0;  // stochastic-rounding offset, advanced per quantization of a gradient
  // Delayed scaling (fp8_delayed): one state per tensor role.
  std::unique_ptr<precision::DelayedScaling> ds_x, ds_w, ds_dy;
  // Weight cache: valid for this storage and version of the weight.
  const void* cache_ptr = nullptr;
  int64_t cache_version = -1;
  std::shared_ptr<QuantizedTensor> w_row, w_col;
  int64_t weight_quantizations = 0;  // how often the cache was (re)filled: for tests and logs
  // Tests and debugging: when `capture` is set, the quantized operands of the latest fprop/dgrad/wgrad are
  // kept here under their role names (x_row, w_row, dy_row, w_col, dy_col, x_col).
  bool capture = false;
  std::map<std::string, std::shared_ptr<QuantizedTensor>> captured;
  // Under backward_hadamard the roles dy_row, w_col, dy_col, x_col hold rowwise copies of the rotated operands,
  // and the sign vectors of the rotations are kept here ("dgrad": along N, "wgrad": along the tokens).
  std::map<std::string, torch::Tensor> captured_rotations;
  // Quantization statistics (core/quantization_stats.h): while `collect_stats` is set, every copy quantized for
  // a GEMM is measured against its source and added here under its role name (x_row, ..., dy_col). The trainer
  // sets it for the steps of train.stats_every and clears `stats` after writing them.
  bool collect_stats = false;
  std::map<std::string, QuantizationErrorSums> stats;

  // Delayed scaling: fold this step's amaxes into the scales (TE updates once per step).
  void end_step();
  // Another recipe from the next forward on (model.precision_policy = "adaptive" raising a layer's precision):
  // delayed-scaling histories start anew for it and the cached weight copies are dropped; the name, seed and
  // stochastic-rounding counter stay, so the layer keeps drawing its own stream.
  void set_recipe(Recipe r);

  // Everything a forward or a set_recipe can change (the recipe, delayed-scaling states, the weight cache, the
  // stochastic-rounding counter, the statistics), for trying other recipes and putting the layer back exactly
  // as it was: the adaptive policy's loss probe (launch/precision_policy.h) evaluates with a block raised, and
  // the training run must not notice.
  struct Snapshot {
    Recipe recipe;
    std::optional<precision::DelayedScaling> ds_x, ds_w, ds_dy;
    const void* cache_ptr;
    int64_t cache_version;
    std::shared_ptr<QuantizedTensor> w_row, w_col;
    int64_t weight_quantizations;
    uint64_t sr_counter;
    bool collect_stats;
    std::map<std::string, QuantizationErrorSums> stats;
  };
  Snapshot snapshot() const;
  void restore(const Snapshot& saved);

 private:
  void make_delayed_states();
};

// The stochastic-rounding counter values of one backward are reserved by its forward (the node keeps the
// first), so a micro-batch's backward draws the same bits whatever ran between it and its forward: a pipeline
// schedule runs other micro-batches' forwards first, one rank runs none. A backward draws at most 4.
inline constexpr uint64_t kBackwardCounters = 8;
uint64_t reserve_backward_counters(LinearState& s);

// Within a backward node's apply: the state's counter runs over the reserved values, then resumes where the
// forwards left it. check() throws if the backward drew more than it reserved.
class BackwardCounters {
 public:
  BackwardCounters(LinearState& s, uint64_t first);
  ~BackwardCounters();
  BackwardCounters(const BackwardCounters&) = delete;
  BackwardCounters& operator=(const BackwardCounters&) = delete;
  void check() const;

 private:
  LinearState& s_;
  uint64_t first_, resume_;
};

// A layer's key for its stochastic-rounding stream (and the GPT's parameter init) from its name: FNV-1a of the
// name mixed with a run seed. It depends on the name only -- not on creation order, layout, rank or process --
// so every tp rank and every run draws the same stream for a layer (Python layers use it too: Python's hash()
// is salted per process).
uint64_t layer_seed(const std::string& name, uint64_t run_seed);

torch::Tensor linear_forward(const torch::Tensor& x, const torch::Tensor& weight,
                             const std::optional<torch::Tensor>& bias, const std::shared_ptr<LinearState>& state);

// Hadamard-32 (normalised) applied along the last dim in groups of 32: the QuEST transform, its own inverse.
torch::Tensor hadamard32_last_dim(const torch::Tensor& x);

}  // namespace nibble::core
