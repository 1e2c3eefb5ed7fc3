#pragma once
// One given layout's prediction (`nibble-plan predict`): what a benchmark compares against nibble-train's
// measured ms/step (benchmarks/bench_plan_calibration.py). The layout must pass nibble's rules (check_layout).
#include <string>

#include "plan/cluster.h"
#include "plan/efficiency.h"
#include "plan/layout.h"
#include "plan/model_spec.h"
#include "plan/step_time.h"

namespace nibble::plan {

// The efficiencies a prediction on `cluster` uses: a calibrated CPU description (cores_per_node > 0) holds
// rates measured as nibble achieves them, so all three are 1; a GPU cluster's peaks take kFittedEfficiency.
Efficiency default_efficiency(const ClusterSpec& cluster);

// Checks the layout (throws nibble::Error naming the broken rule) and estimates its step.
StepTime predict_step(const ModelSpec& model, const TrainingSpec& training, const Layout& layout,
                      const ClusterSpec& cluster, const Efficiency& efficiency);

// One line of JSON: the layout, ms_per_step and its breakdown in ms, the memory per rank in GB and whether it
// fits, the share of a core each rank gets, and "memory": the stage's categories in bytes (MemoryBreakdown,
// with saved_per_microbatch; tests/python/test_plan_memory_account.py compares them with nibble-train's
// measured memory account), and "elementwise_bytes_per_layer": the forward and backward bytes the step charges
// one layer in training.recipe for one micro-batch for its norms, SwiGLU and residual adds (layer_elementwise_bytes;
// layers kept in BF16 by bf16_first / bf16_last are charged bf16's).
std::string prediction_json(const ModelSpec& model, const TrainingSpec& training, const Layout& layout,
                            const ClusterSpec& cluster, const StepTime& time);

}  // namespace nibble::plan
