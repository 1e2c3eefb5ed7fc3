#pragma once
// Predictions for the published runs (plan/published_runs.h) and the one fit of the efficiencies.
#include <vector>

#include "plan/cluster.h"
#include "plan/efficiency.h"
#include "plan/published_runs.h"

namespace nibble::plan {

struct ValidationRow {
  PublishedRun run;
  double predicted = 0;  // in the run's unit: per-GPU TFLOP/s (Eq. 3, 96 form) or iteration seconds
  double error = 0;      // (predicted - published) / published
};

ValidationRow predict_published(const PublishedRun& run, const ClusterSpec& cluster, const Efficiency& efficiency);
std::vector<ValidationRow> validate_published(const ClusterSpec& cluster, const Efficiency& efficiency);
double worst_abs_error(const std::vector<ValidationRow>& rows);

// Grid search for the efficiencies minimising the worst |error| over every published row (gemm 0.50..0.95,
// hbm 0.40..1.00, network 0.50..1.00, steps of 0.01/0.05/0.05). What `nibble-plan fit` prints; its result is
// written once into plan/efficiency.h.
Efficiency fit_efficiency(const ClusterSpec& cluster);

}  // namespace nibble::plan
